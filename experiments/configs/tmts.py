"""TMTS training: ``python -m experiments.train --config=experiments/configs/tmts.py:tiny --workdir=DIR``.

Variants: ``tiny`` (2 CPU cores, ~7 minutes: 48 px, 5-frame windows, the tiny network), ``tiny_no_ts`` (the same
with every signature path off: the seed's Table 6 ablation at small scale), ``small`` (96 px, 16 channels, CPU-hours)
``paper`` (the seed's setting for accelerators: 240 px patches, batch 2, 16 channels, 8 deformable groups,
Adam (0.9, 0.99), cosine decay 2e-4 -> 1e-6) and ``micro`` (a smoke-test size: 32 px, 3 frames, a network of a
few thousand weights, 2 steps; the tests and the notebooks' CI setting, not an experiment).
"""

import ml_collections

VARIANTS = ("tiny", "tiny_no_ts", "small", "paper", "micro")

# Held-out scenes are never cropped for training (turbjax.data.samples.EMBEDDED_SCENES).
TRAIN_SCENES = ("chelsea", "rocket", "camera", "brick", "grass", "gravel", "coins", "hubble_deep_field")
TEST_SCENES = ("astronaut", "coffee")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "tiny"
    if variant not in VARIANTS:
        raise ValueError(f"tmts.py variant must be one of {VARIANTS}; got {variant!r}.")
    tiny = variant.startswith("tiny") or variant == "micro"
    config = ml_collections.ConfigDict()
    config.task = "tmts"
    config.variant = variant
    config.seed = 0
    config.data = ml_collections.ConfigDict(
        dict(
            patch_size={"small": 96, "paper": 240}.get(variant, 48),  # px, square training crops (multiple of 4)
            scene_size={"small": 192, "paper": 480}.get(variant, 96),  # px, scenes resized to this before cropping
            num_frames=5,  # 2N + 1 frames per clip; the centre one is restored (the seed's window)
            augment=True,  # random flip and quarter turn of each crop
            train_scenes=TRAIN_SCENES,
            test_scenes=TEST_SCENES,
        )
    )
    # Satellite physics, drawn uniformly per clip (the seed's sec. 2.3.2 ranges, as experiments/configs/satellite.py).
    config.physics = ml_collections.ConfigDict(
        dict(
            # r0 at the imaging wavelength, m (seed: 3-10 cm); the 16 px PSF window of tiny resolves r0 >= 4.1 cm.
            r0_range=(0.05, 0.10) if tiny else (0.03, 0.10),
            orbit_range=(400e3, 600e3),  # m
            max_wind_speed=5.0,  # m/s per layer, uniform direction
            noise_range=(0.015, 0.025),  # Gaussian sensor noise sigma, images in [0, 1]
            weights="tmts",  # layer fractions 0.6 / 0.3 / 0.1 as printed
            altitudes=(1e3, 4e3, 20e3),  # m
            ground_sample_distance=1.0,  # m/px (not printed in the seed)
            aperture=0.5,  # m (not printed in the seed)
            wavelength=550e-9,  # m (not printed in the seed)
            pixel_pitch=5.5e-6,  # m (not printed in the seed)
            frame_rate=25.0,  # frames/s
        )
    )
    # turbjax.physics.SatelliteSettings (the screen side is derived from the ranges).
    config.simulator = ml_collections.ConfigDict(
        dict(
            grid=2 if tiny else 8,  # field points per axis for the blur
            psf_size=16 if tiny else 32,  # K, px
            oversample=5,  # q: the pupil must fit in q K / 2 - 1 samples
            subharmonic_levels=6,
            alpha=0.99,  # AR(1) renewal per frame
            noise=True,
        )
    )
    # turbjax.models.tmts: a named size, overrides of TMTSConfig fields, and the signature switches.
    use_ts = dict(tsga=True, cgrfu=True, tstsa=True, encoder=False)
    if variant == "tiny_no_ts":
        use_ts = {name: False for name in use_ts}
    config.model = ml_collections.ConfigDict(
        dict(
            name="tiny" if tiny else "paper",
            overrides=ml_collections.ConfigDict(dict(base_channels=8, fusion_blocks=4) if variant == "small" else {}),
            use_ts=ml_collections.ConfigDict(use_ts),
        )
    )
    config.loss = ml_collections.ConfigDict(dict(pixel_weight=0.8, tilt_weight=0.2, eps=1e-3))  # the seed's w1, w2
    # The seed: Adam (0.9, 0.99), cosine decay 2e-4 -> 1e-6. tiny uses 1e-3: with only a few hundred steps
    # the seed's rate does not move the residual decoder far enough from the warped input to beat it in time.
    config.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=1e-3 if tiny else 2e-4,
            end_learning_rate=1e-6,
            warmup_steps=20 if tiny else 0,
            b1=0.9,
            b2=0.99,
            clip_norm=1.0 if tiny else 0.0,  # 0 = no clipping (the seed prints none)
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size={"small": 4, "paper": 2}.get(variant, 4),
            steps={"small": 20_000, "paper": 300_000}.get(variant, 150),  # tiny: 6.3 min on 2 CPU cores
            log_every=25 if tiny else 100,
            eval_every=0 if tiny else 2000,  # 0 = only at the end
            checkpoint_every=50 if tiny else 2000,
            num_devices=None,  # None = every local device (batch_size must divide by it)
            progress=True,
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(
            num_clips=16 if tiny else 128,  # held-out clips (test scenes, fixed key)
            batch_size=8 if tiny else 4,  # clips per evaluation call
            figure_clips=3,  # rows of restored.png and signature.png
            yt_frames=15 if tiny else 25,  # frames of the y-t profile clip (restored with a sliding window)
        )
    )
    if variant == "micro":
        shrink_to_micro(config)
    return config


def shrink_to_micro(config: ml_collections.ConfigDict) -> None:
    """32 px crops, 3 frames, a 2-clip batch on one device, a network of a few thousand weights, 2 steps."""
    config.data.update(dict(patch_size=32, scene_size=40, num_frames=3))
    config.simulator.grid = 1
    config.model.name = "tiny"
    config.model.overrides = ml_collections.ConfigDict(
        dict(
            base_channels=4,
            fusion_blocks=1,
            rdb_layers=1,
            spynet_levels=2,
            spynet_widths=(4, 4),
            deform_groups=2,
            tstsa_heads=2,
        )
    )
    config.train.update(dict(batch_size=2, num_devices=1, steps=2, log_every=1, eval_every=0, checkpoint_every=1))
    config.optim.warmup_steps = 1
    config.eval.update(dict(num_clips=2, batch_size=2, figure_clips=2, yt_frames=4))
