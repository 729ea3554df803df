"""The satellite demo (``experiments.simulate`` with configs/satellite.py) runs end to end on its tiny variant."""

import json
import math

import pytest

from experiments.configs import satellite
from turbjax.satellite_demo import satellite_figures


def test_satellite_demo_writes_figures_and_json(tmp_path):
    config = satellite.get_config("tiny")
    report = satellite_figures(config, tmp_path)
    n = config.num_clips
    names = ["satellite_grid.png"] + [f"{kind}_{i}.png" for i in range(n) for kind in ("signature", "yt_profile")]
    assert sorted(report["figures"]) == sorted(names)
    for name in names:
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind

    saved = json.loads((tmp_path / "satellite.json").read_text())
    assert saved["config"]["mode"] == "satellite" and saved["config"]["num_frames"] == config.num_frames
    assert saved["settings"]["grid"] == config.simulator.grid and saved["settings"]["screen_size"] >= 32
    assert len(saved["clips"]) == n
    low, high = config.physics.r0_range
    for clip in saved["clips"]:
        assert clip["scene"] in config.scenes
        p = clip["parameters"]
        assert low <= p["r0_m"] <= high and 400e3 <= p["orbit_altitude_m"] <= 600e3
        assert 0.015 <= p["noise_sigma"] <= 0.025 and p["layer_weights"] == pytest.approx([0.6, 0.3, 0.1])
        assert p["isoplanatic_angle_px"] > 0 and p["theory_tilt_variance_px2"] > 0
        s = clip["signature"]
        assert s["true_tilt_variance_mean_px2"] > 0 and s["tilt_rms_px"] > 0 and s["blur_width_mean_px"] > 0
        for kind in ("tilt_only", "degraded"):
            stats = s[kind]
            assert 0.05 < stats["textured_fraction"] <= 1.0
            for key in ("median_signature_px2", "true_tilt_variance_median_px2", "ratio_signature_to_truth"):
                assert math.isfinite(stats[key]) and stats[key] > 0, (kind, key)
        # Tilt-only S estimates the temporal tilt variance (seed eq. 3); noise and blur only add to S.
        assert 0.3 < s["tilt_only"]["ratio_signature_to_truth"] < 3.0


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="variant"):
        satellite.get_config("huge")
