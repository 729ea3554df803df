"""A tiny ET-Turb video dataset built once per test session (and worker)."""

import pytest

from experiments.configs.et_turb import dataset_config
from turbjax.data import build_dataset


def tiny_dataset_config():
    config = dataset_config("dataset")
    config.name = "unit"
    config.num_train, config.num_test = 6, 2
    config.video.num_frames = 4
    config.video.image_size = 48
    config.video.max_drift_px = 32
    config.synthesis.blur_pad = 16
    config.source.scenes = ("astronaut", "rocket", "camera")
    return config


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory):
    """(config, data_dir, path) of the tiny dataset, generated on all 8 local devices."""
    config = tiny_dataset_config()
    data_dir = tmp_path_factory.mktemp("tfds")
    path = build_dataset(config, data_dir, num_devices=8, progress=False)
    return config, data_dir, path
