"""grain and online pipelines: shapes, window centring, epochs without repeats, process shards."""

import jax
import numpy as np
import pytest

from experiments.configs.et_turb import pipeline_config
from turbjax.data import make_pipeline, open_split
from turbjax.data.pipeline import check_pipeline_config


def _config(built, **overrides):
    dataset, data_dir, _ = built
    config = pipeline_config(batch_size=4, crop_size=32)
    config.dataset = dataset
    config.data_dir = str(data_dir)
    config.half_window = 1  # 3-frame windows over 4-frame clips: 2 centres per clip, 12 samples
    config.read_threads = 2
    config.update(overrides)
    return config


def _epoch(config, **kwargs):
    return list(make_pipeline(config, **kwargs))


def test_batch_shapes_and_dtypes(built_dataset):
    batch = next(make_pipeline(_config(built_dataset)))
    assert batch["degraded"].shape == (4, 3, 32, 32, 3) and batch["degraded"].dtype == np.float32
    assert batch["clean"].shape == batch["tilt_only"].shape == batch["blur_only"].shape == (4, 3, 32, 32, 3)
    assert batch["tilt_field"].shape == (4, 3, 32, 32, 2) and batch["blur_width"].shape == (4, 3, 32, 32)
    assert batch["cn2"].shape == (4,) and batch["cn2"].dtype == np.float32
    assert 0.0 <= batch["degraded"].min() and batch["degraded"].max() <= 1.0


def test_windows_are_centred_on_their_frame(built_dataset):
    config = _config(built_dataset, crop_size=None, num_epochs=1)
    source = open_split(built_dataset[2], "train")
    for batch in _epoch(config):
        for j in range(4):
            record = source[int(batch["example_id"][j])]
            c = int(batch["centre"][j])
            assert 1 <= c <= 2
            np.testing.assert_array_equal(batch["degraded"][j], record["degraded"][c - 1 : c + 2] / np.float32(255))
            np.testing.assert_array_equal(batch["tilt_field"][j], record["tilt_field"][c - 1 : c + 2])


def test_random_crop_is_one_window_of_the_frames(built_dataset):
    source = open_split(built_dataset[2], "train")
    batch = next(make_pipeline(_config(built_dataset, fields=("clean", "example_id", "centre"))))
    assert sorted(batch) == ["centre", "clean", "example_id"]
    crop = batch["clean"][0]
    c = int(batch["centre"][0])
    full = source[int(batch["example_id"][0])]["clean"][c - 1 : c + 2] / np.float32(255)
    hits = [(y, x) for y in range(17) for x in range(17) if np.array_equal(full[:, y : y + 32, x : x + 32], crop)]
    assert hits  # the same crop window on every frame of the window


def test_an_epoch_visits_every_sample_once_and_processes_partition_it(built_dataset):
    pairs = [
        (int(e), int(c))
        for b in _epoch(_config(built_dataset, batch_size=1, num_epochs=1))
        for e, c in zip(b["example_id"], b["centre"], strict=True)
    ]
    assert len(pairs) == 12 and len(set(pairs)) == 12
    shards = [
        {
            (int(e), int(c))
            for b in _epoch(_config(built_dataset, batch_size=3, num_epochs=1), process_index=p, process_count=3)
            for e, c in zip(b["example_id"], b["centre"], strict=True)
        }
        for p in range(3)
    ]
    assert sum(len(s) for s in shards) == 12 and set().union(*shards) == set(pairs)
    # Two epochs: each is a permutation, in different orders.
    two = [
        int(b["example_id"][0]) * 10 + int(b["centre"][0])
        for b in _epoch(_config(built_dataset, batch_size=1, num_epochs=2))
    ]
    assert sorted(two[:12]) == sorted(two[12:]) and two[:12] != two[12:]


def test_online_mode_synthesizes_fresh_batches_on_device(built_dataset):
    config = _config(built_dataset, mode="online", batch_size=8, num_steps=2)
    batches = list(make_pipeline(config))
    assert len(batches) == 2
    first = batches[0]
    assert isinstance(first["degraded"], jax.Array) and first["degraded"].shape == (8, 3, 32, 32, 3)
    assert first["tilt_field"].shape == (8, 3, 32, 32, 2)
    assert bool(np.all(np.isfinite(np.asarray(first["degraded"]))))
    ids = np.concatenate([np.asarray(b["example_id"]) for b in batches])
    assert len(set(ids.tolist())) == 16 and np.all(np.asarray(first["centre"]) == 1)


def test_bad_pipeline_config_names_the_field(built_dataset):
    with pytest.raises(ValueError, match="half_window must be in \\[0, 1\\]"):
        check_pipeline_config(_config(built_dataset, half_window=2), 4, 48)
    with pytest.raises(ValueError, match="crop_size must be in \\[1, 48\\]"):
        check_pipeline_config(_config(built_dataset, crop_size=64), 4, 48)
    with pytest.raises(ValueError, match="mode must be one of"):
        check_pipeline_config(_config(built_dataset, mode="stream"), 4, 48)
