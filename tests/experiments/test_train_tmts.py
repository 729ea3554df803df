"""`python -m experiments.train --config=experiments/configs/tmts.py:tiny` end to end at smoke-test size
(:micro), as a user runs it: the CLI in its own one-device process (tests/one_device.py)."""

import json
import math

import pytest

from tests.one_device import run_cli

CONFIG = "experiments/configs/tmts.py:micro"


@pytest.mark.xdist_group("tmts_micro")  # with colab/03: one compilation of the micro programs
def test_tmts_micro_trains_evaluates_and_resumes(tmp_path):
    run_cli("experiments.train", CONFIG, tmp_path, "--config.train.progress=False")
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("psnr", "ssim", "psnr_input", "ssim_input"):
        assert math.isfinite(saved[name]), name
    assert saved["steps"] == 2 and saved["params"] > 0 and saved["use_ts"]["tsga"]
    for figure in ("restored.png", "signature.png", "yt_profile.png"):
        assert (tmp_path / figure).stat().st_size > 0, figure
    # The last step is checkpointed: asking for one more step resumes instead of starting again.
    run_cli("experiments.train", CONFIG, tmp_path, "--config.train.progress=False", "--config.train.steps=3")
    more = json.loads((tmp_path / "results.json").read_text())
    history = json.loads((tmp_path / "history.json").read_text())
    assert more["steps"] == 3 and [row["step"] for row in history["train"]] == [1, 2, 3]
    assert more["psnr_input"] == saved["psnr_input"]  # the same held-out clips
