"""`python -m experiments.train --config=experiments/configs/tmts.py:tiny` end to end at microscopic size."""

import json
import math

import pytest

from experiments.configs.tmts import get_config
from turbjax.train.tmts import train_tmts


def _micro_config():
    """32 px crops, 3 frames, a 2-clip batch on 2 of the 8 test devices, a network of a few thousand weights."""
    config = get_config("tiny")
    config.data.patch_size, config.data.scene_size, config.data.num_frames = 32, 40, 3
    config.simulator.grid = 1
    config.model.overrides = dict(base_channels=4, fusion_blocks=1, rdb_layers=1, spynet_levels=2,
                                  spynet_widths=(4, 4), deform_groups=2, tstsa_heads=2)  # fmt: skip
    config.train.update(dict(batch_size=2, num_devices=2, steps=2, log_every=1, eval_every=0, checkpoint_every=1,
                             progress=False))  # fmt: skip
    config.optim.warmup_steps = 1
    config.eval.update(dict(num_clips=2, batch_size=2, figure_clips=2, yt_frames=4))
    return config


@pytest.mark.slow  # ~7 CPU-minutes of compilation (simulator, model, resume); run with -m slow
def test_tmts_tiny_trains_evaluates_and_resumes(tmp_path):
    config = _micro_config()
    results = train_tmts(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("psnr", "ssim", "psnr_input", "ssim_input"):
        assert math.isfinite(saved[name]), name
    assert saved["steps"] == 2 and saved["params"] > 0 and saved["use_ts"]["tsga"]
    assert saved["psnr_input"] == results["psnr_input"]
    for figure in ("restored.png", "signature.png", "yt_profile.png"):
        assert (tmp_path / figure).stat().st_size > 0, figure
    # The last step is checkpointed: asking for one more step resumes instead of starting again.
    config.train.steps = 3
    more = train_tmts(config, tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert more["steps"] == 3 and [row["step"] for row in history["train"]] == [1, 2, 3]
    assert more["psnr_input"] == saved["psnr_input"]  # the same held-out clips
