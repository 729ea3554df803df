"""`python -m experiments.train --config=experiments/configs/tmts.py:tiny` end to end at microscopic size."""

import json
import math

from experiments.configs.tmts import get_config
from turbjax.train.tmts import train_tmts


def test_tmts_micro_trains_evaluates_and_resumes(tmp_path):
    """The tiny experiment's code path at smoke-test size (``tmts.py:micro``); the resume recompiles
    nothing thanks to the persistent compilation cache (tests/conftest.py)."""
    config = get_config("micro")
    config.train.progress = False
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
