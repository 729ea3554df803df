"""Clean-image sources: embedded clips, folders, TFDS; clear errors for missing or bad data."""

import numpy as np
import pytest
from skimage import io

from turbjax.data import DataSourceError, embedded_clips, folder_images, folder_sequences, tfds_images


def test_embedded_clips_are_deterministic_moving_scenes():
    clips = embedded_clips(num_clips=2, num_frames=4, size=48, seed=3)
    assert clips.shape == (2, 4, 48, 48, 3) and clips.dtype == np.float32
    assert clips.min() >= 0.0 and clips.max() <= 1.0
    np.testing.assert_array_equal(clips, embedded_clips(num_clips=2, num_frames=4, size=48, seed=3))
    step = np.abs(np.diff(clips, axis=1)).mean()
    assert 1e-3 < step < 0.2  # frames move, but a clip stays one scene
    assert not np.array_equal(clips[0], clips[1])


def _write_pngs(folder, count, rng, size=(30, 40)):
    folder.mkdir(parents=True)
    for i in range(count):
        io.imsave(folder / f"{i:03d}.png", (rng.uniform(size=(*size, 3)) * 255).astype(np.uint8), check_contrast=False)


def test_folder_images_and_sequences(tmp_path):
    rng = np.random.default_rng(0)
    _write_pngs(tmp_path / "imgs", 3, rng)
    images = folder_images(tmp_path / "imgs", size=24)
    assert images.shape == (3, 24, 24, 3) and 0.0 <= images.min() and images.max() <= 1.0
    _write_pngs(tmp_path / "seqs" / "a", 4, rng)
    _write_pngs(tmp_path / "seqs" / "b", 2, rng)
    clips = folder_sequences(tmp_path / "seqs", size=16)
    assert [c.shape for c in clips] == [(4, 16, 16, 3), (2, 16, 16, 3)]
    with pytest.raises(DataSourceError, match="at least 3 frames"):
        folder_sequences(tmp_path / "seqs", size=16, min_frames=3)


def test_missing_or_malformed_folders_say_what_was_expected(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist: expected a directory"):
        folder_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="holds no images"):
        folder_images(tmp_path / "empty")
    with pytest.raises(DataSourceError, match="has no sub-folders"):
        folder_sequences(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match="could not read image"):
        folder_images(tmp_path / "bad")


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(DataSourceError, match="tfds build coco/2017"):
        tfds_images("coco/2017", data_dir=tmp_path)
