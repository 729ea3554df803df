"""Dataset builder: records equal the generator, determinism across device counts, resumption."""

import jax
import numpy as np
import pytest

from tests.data.conftest import tiny_dataset_config
from turbjax.data import DataSourceError, build_dataset, open_split
from turbjax.data.builder import clean_clips, video_spec
from turbjax.data.generate import IMAGE_KEYS, PARAM_KEYS, batch_synthesizer, example_keys, local_mesh


def _records(path, split):
    source = open_split(path, split)
    return [source[i] for i in range(len(source))]


def _assert_same_records(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for name in x:
            np.testing.assert_array_equal(np.asarray(x[name]), np.asarray(y[name]), err_msg=name)


def test_records_read_back_equal_what_was_generated(built_dataset):
    config, _, path = built_dataset
    records = _records(path, "train")
    assert [int(r["example_id"]) for r in records] == list(range(config.num_train))
    # Regenerate examples 2 and 5 directly, one per device program as in the build.
    indices = np.array([2, 5])
    fn = batch_synthesizer(video_spec(config), local_mesh(2))
    direct = jax.device_get(
        fn(example_keys(config.seed, "train", indices), clean_clips(config, "train").batch(indices))
    )
    for row, index in enumerate(indices):
        record = records[index]
        for name in (*IMAGE_KEYS, "tilt_field", "blur_width", *PARAM_KEYS):
            np.testing.assert_array_equal(np.asarray(record[name]), direct[name][row], err_msg=name)
    first = records[0]
    assert first["degraded"].shape == (4, 48, 48, 3) and first["degraded"].dtype == np.uint8
    assert first["tilt_field"].shape == (4, 48, 48, 2) and first["blur_width"].shape == (4, 48, 48)
    assert len(open_split(path, "test")) == config.num_test


def test_one_device_rebuild_is_identical(built_dataset, tmp_path):
    """Same seed on 1 device instead of 8: byte-identical records (the build is deterministic)."""
    config, data_dir, path = built_dataset
    again = build_dataset(config, tmp_path, num_devices=1, progress=False)
    for split in ("train", "test"):
        _assert_same_records(_records(path, split), _records(again, split))


def test_interrupted_build_resumes_to_the_same_records(built_dataset, tmp_path):
    config, _, path = built_dataset
    cache = build_dataset(config, tmp_path, num_devices=2, progress=False, max_chunks=1)  # "killed"
    assert len(list((cache / "train").glob("chunk_*.npz"))) == 1
    # What a kill mid-write leaves: a temporary chunk and a TFDS temporary directory.
    (cache / "train" / ".chunk_00000002_00000004.npz.x.tmp").write_bytes(b"half a chunk")
    stale = path.parent.name  # 'unit'
    (tmp_path / "et_turb_video" / stale / "incomplete.ABC123_1.0.0").mkdir(parents=True)
    done = build_dataset(config, tmp_path, num_devices=2, progress=False)
    assert not list(done.parent.glob("incomplete.*")) and not cache.exists()
    for split in ("train", "test"):
        _assert_same_records(_records(path, split), _records(done, split))
    assert sorted(p.name for p in done.glob("*.array_record*")) == sorted(p.name for p in path.glob("*.array_record*"))


def test_changed_config_is_refused_and_missing_dataset_explained(built_dataset, tmp_path):
    config, data_dir, _ = built_dataset
    changed = tiny_dataset_config()
    changed.seed = 1
    with pytest.raises(ValueError, match="built from a different config"):
        build_dataset(changed, data_dir, progress=False)
    with pytest.raises(DataSourceError, match="experiments.simulate --config=experiments/configs/et_turb.py:dataset"):
        open_split(tmp_path / "nothing", "train")
    bad = tiny_dataset_config()
    bad.per_device = 0
    with pytest.raises(ValueError, match="per_device"):
        build_dataset(bad, tmp_path, progress=False)


def test_simulate_dataset_main_reports_build(tmp_path):
    """What `experiments.simulate --config=...:dataset` runs: build + dataset.json with size and time."""
    import json

    from turbjax.data.builder import build_and_report

    config = tiny_dataset_config()
    config.num_train, config.num_test = 2, 0
    report = build_and_report(config, tmp_path)
    saved = json.loads((tmp_path / "dataset.json").read_text())
    assert saved["splits"] == {"train": 2, "test": 0} and saved["size_bytes"] > 2 * 4 * 48 * 48 * 3 * 4
    assert report["path"].startswith(str(tmp_path / "tfds")) and len(open_split(report["path"], "train")) == 2
