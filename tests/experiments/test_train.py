"""`python -m experiments.train --config=experiments/configs/detector.py:tiny` end to end, with very few steps."""

import json

import pytest

from experiments.configs.detector import get_config
from turbjax.train.detector import train_detector


@pytest.mark.parametrize("stream", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_detector_tiny_trains_evaluates_and_resumes(tmp_path, stream):
    config = get_config("tiny")
    data = config.data
    data.stream, data.num_sprites, data.num_train, data.num_test, data.image_size, data.num_frames = (
        stream,
        16,
        16,
        4,
        32,
        3,
    )
    config.train.batch_size, config.train.num_steps, config.train.log_every = 8, 4, 1
    config.train.eval_every, config.train.checkpoint_every = 2, 2
    results = train_detector(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == 4 and 0.0 <= saved["map"] <= 1.0 and saved["parameters"] > 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [row["step"] for row in history["eval"]] == [2, 4]
    assert (tmp_path / "detections.png").exists()
    # The last step is checkpointed: a re-run with more steps resumes from it instead of starting again.
    config.train.num_steps = 6
    more = train_detector(config, tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert more["steps"] == 6 and [row["step"] for row in history["eval"]] == [2, 4, 6]
    assert min(row["step"] for row in history["train"]) == 1 and results["map"] == saved["map"]
