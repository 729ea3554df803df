"""Benchmarks: ``python -m experiments.benchmark --config=experiments/configs/benchmark.py:simulator``.

Variants: ``simulator`` (ET-Turb frames through synthesize_frame vs a NumPy/SciPy baseline),
``video`` (frozen-flow clips through synthesize_video vs per-frame synthesis of the same frames).
"""

import ml_collections

from experiments.configs.et_turb import synthesis_settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "simulator"
    if name not in ("simulator", "video"):
        raise ValueError(f"benchmark.py variant must be 'simulator' or 'video'; got {name!r}.")
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
        config.repeats = 3
    return config
