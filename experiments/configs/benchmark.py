"""Benchmarks: ``python -m experiments.benchmark --config=experiments/configs/benchmark.py:simulator``.

Variants: ``simulator`` (ET-Turb frames through synthesize_frame vs a NumPy/SciPy baseline),
``video`` (frozen-flow clips through synthesize_video vs per-frame synthesis of the same frames),
``pipeline`` (build the tiny dataset into DIR/tfds, its size on disk, records/s and samples/s),
``detector`` (parameters and forward ms/image of the detector variants).
"""

import ml_collections

from experiments.configs.et_turb import pipeline_config, synthesis_settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "simulator"
    names = ("simulator", "video", "pipeline", "detector")
    if name not in names:
        raise ValueError(f"benchmark.py variant must be one of {names}; got {name!r}.")
    config = ml_collections.ConfigDict()
    config.name = name
    config.seed = 0
    config.image_size = 256
    config.batch_size = 16
    config.warmup = 1
    config.repeats = 5  # timed batches (median reported)
    config.baseline_frames = 5  # timed NumPy frames (median reported)
    config.wavelength = 550e-9
    config.pixel_pitch = 5e-6
    config.synthesis = synthesis_settings()
    if name == "video":
        config.num_frames = 16
        config.fps = 30.0
        config.batch_size = 1  # clips per call
        config.slow_wind_speed = 0.5  # m/s: a second clip whose total drift is small
        config.repeats = 3
    if name == "pipeline":
        config.pipeline = pipeline_config("records", "dataset", batch_size=8, crop_size=64)
        config.repeats = 5
    if name == "detector":
        config.variants = ("tiny", "small", "medium", "large")
        config.num_classes = 80
        config.image_size = 256
        config.batch_size = 8
        config.repeats = 5
    return config
