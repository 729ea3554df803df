"""`python -m experiments.distill --config=experiments/configs/jdatt.py:tiny`, smoke-test size (:micro)."""

import json

from experiments.configs.jdatt import get_config
from turbjax.train.jdatt import run_jdatt


def test_jdatt_tiny_runs_end_to_end_and_resumes(tmp_path):
    config = get_config("micro")  # tiny's code path at smoke-test size
    results = run_jdatt(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    for model in ("teacher", "separate", "joint"):
        entry = saved[model]
        assert {"params_restorer", "params_detector", "psnr", "ssim", "map", "ms_per_frame"} <= set(entry)
        assert entry["ms_per_frame"] > 0 and 0 <= entry["ssim"] <= 1 and -1 <= entry["map"] <= 1
    assert saved["teacher"]["params_restorer"] > saved["joint"]["params_restorer"]
    assert (tmp_path / "table3.png").exists() and (tmp_path / "map_vs_time.png").exists()
    # Every stage checkpointed its last step: a re-run trains nothing and reproduces the students.
    again = run_jdatt(config, tmp_path)
    assert again["joint"]["psnr"] == results["joint"]["psnr"]
