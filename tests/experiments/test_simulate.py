"""The simulator demo (README's first command) runs end to end on its tiny variant."""

import json

from experiments.configs import et_turb
from turbjax.demos import et_turb_figures


def test_et_turb_demo_writes_figures_and_json(tmp_path):
    config = et_turb.get_config("tiny")
    report = et_turb_figures(config, tmp_path)
    assert (tmp_path / "synthesis_grid.png").stat().st_size > 10_000
    assert (tmp_path / "et_mtf.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "et_turb.json").read_text())
    assert len(saved["draws"]) == config.num_draws == len(report["draws"])
    for draw in saved["draws"]:
        assert 30 <= draw["distance_m"] <= 1000 and 0.5e-3 <= draw["exposure_time_s"] <= 40e-3
        assert draw["tilt_std_px"] > 0 and draw["blur_width_mean_px"] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind
