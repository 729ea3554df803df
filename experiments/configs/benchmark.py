"""Benchmarks: ``python -m experiments.benchmark --config=experiments/configs/benchmark.py:simulator``.

Variants: ``simulator`` (ET-Turb frames through synthesize_frame vs a NumPy/SciPy baseline),
``video`` (frozen-flow clips through synthesize_video vs per-frame synthesis of the same frames),
``pipeline`` (build the tiny dataset into DIR/tfds, its size on disk, records/s and samples/s),
``detector`` (parameters and forward ms/image of the detector variants),
``satellite`` (anisoplanatic satellite frames vs NumPy Fourier-optics PSFs + blend; AR screen steps/s
vs aotools' infinite phase screen when installed),
``tmts`` (TMTS parameters and FLOPs at the paper configuration beside the seed's Table 6, ms per restored frame
for the ``paper`` and ``tiny`` networks).
"""

import ml_collections

from experiments.configs.et_turb import pipeline_config, synthesis_settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name = arg or "simulator"
    names = ("simulator", "video", "pipeline", "detector", "satellite", "tmts")
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
    if name == "satellite":
        config.image_size = 256  # px
        config.num_frames = 4  # frames per timed clip (ms/frame = clip time / num_frames)
        config.repeats = 3
        config.baseline_frames = 2  # timed NumPy frames (median reported)
        config.satellite = ml_collections.ConfigDict(
            dict(
                r0=0.05,  # m
                orbit_altitude=500e3,  # m
                ground_sample_distance=1.0,  # m/px
                wind_speed=(2.0, 3.0, 4.0),  # m/s per layer (1 / 4 / 20 km)
                wind_direction=(0.0, 1.0, 2.0),  # rad
                weights="tmts",
                noise_sigma=0.02,
            )
        )
        config.simulator = ml_collections.ConfigDict(
            dict(grid=8, psf_size=32, oversample=4, subharmonic_levels=6, alpha=0.99, noise=True)
        )
        config.ar = ml_collections.ConfigDict(
            dict(
                screen_size=256,  # samples per side
                dx=0.01,  # m per sample
                r0=0.1,  # m
                outer_scale=20.0,  # m (aotools' screen is von Karman)
                wind_speed=5.0,  # m/s
                dt=0.002,  # s: dx / wind_speed, one sample per step like one aotools row
                alpha=0.99,
                scan_steps=64,  # steps per timed ar_screen_run
                aotools_rows=50,  # timed add_row calls (median reported)
            )
        )
    if name == "tmts":
        config.num_frames = 5  # 2N + 1 frames per clip, the centre one restored (the seed's window)
        config.flops_size = 240  # px, the seed's training patch (Table 6 does not state its input size)
        config.seed_params = 6.24e6  # Table 6, every signature path on
        config.seed_gflops = 377.6  # Table 6, every signature path on
        config.batch_size = 1  # clips per timed call (one restored frame each)
        config.paper_size = 240  # px, timed paper-network input
        config.paper_repeats = 2  # slow on CPU: a couple of calls
        config.tiny_size = 48  # px, as experiments/configs/tmts.py:tiny
        config.repeats = 5
    return config
