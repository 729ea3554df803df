"""`python -m experiments.distill --config=experiments/configs/jdatt.py:tiny` end to end, at smoke-test
size (:micro), as a user runs it: the CLI in its own one-device process (tests/one_device.py)."""

import json

import pytest

from tests.one_device import run_cli

CONFIG = "experiments/configs/jdatt.py:micro"  # tiny's code path at smoke-test size


@pytest.mark.xdist_group("jdatt_micro")  # with colab/04: one compilation of the micro programs
def test_jdatt_tiny_runs_end_to_end_and_resumes(tmp_path):
    run_cli("experiments.distill", CONFIG, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    for model in ("teacher", "separate", "joint"):
        entry = saved[model]
        assert {"params_restorer", "params_detector", "psnr", "ssim", "map", "ms_per_frame"} <= set(entry)
        assert entry["ms_per_frame"] > 0 and 0 <= entry["ssim"] <= 1 and -1 <= entry["map"] <= 1
    assert saved["teacher"]["params_restorer"] > saved["joint"]["params_restorer"]
    assert (tmp_path / "table3.png").exists() and (tmp_path / "map_vs_time.png").exists()
    # Every stage checkpointed its last step: a re-run trains nothing and reproduces the students.
    histories = {path: path.read_text() for path in tmp_path.glob("*/history.json")}
    assert len(histories) == 5, sorted(histories)
    run_cli("experiments.distill", CONFIG, tmp_path)
    assert {path: path.read_text() for path in histories} == histories
    assert json.loads((tmp_path / "results.json").read_text())["joint"]["psnr"] == saved["joint"]["psnr"]
