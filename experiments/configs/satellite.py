"""TMTS satellite demo: anisoplanatic satellite-like clips, their turbulence signatures and y-t profiles.

``python -m experiments.simulate --config=experiments/configs/satellite.py --workdir=DIR`` writes
satellite_grid.png, signature_<i>.png and yt_profile_<i>.png per clip, and satellite.json.

Variants: ``default`` (256 px, 16 frames, 8 x 8 PSF grid: about a minute on 2 CPU cores) and
``tiny`` (48 px, 6 frames, 2 x 2 grid: seconds, for the smoke test).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"satellite.py variant must be 'default' or 'tiny'; got {variant!r}.")
    tiny = variant == "tiny"
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.mode = "satellite"  # experiments.simulate dispatches on this
    config.seed = 0
    config.image_size = 48 if tiny else 256  # px, square stills (static scenes: the signature needs them)
    config.num_frames = 6 if tiny else 16  # frames per clip (the signature's temporal window)
    config.num_clips = 2 if tiny else 4
    config.scenes = ("astronaut", "camera") if tiny else ("astronaut", "rocket", "camera", "coffee")  # cycled
    config.frame_index = 0  # frame shown in the grid and the signature figures
    config.yt_column = None  # pixel column of the y-t profiles; None = the middle one

    # Physical ranges, drawn uniformly per clip (the seed's section 2.3.2 unless noted).
    config.physics = ml_collections.ConfigDict(
        dict(
            # r0 at the imaging wavelength, m (seed: 3-10 cm). The tiny 16 px PSF window resolves
            # r0 >= 4.1 cm at a 600 km orbit (pupil samples must be <= r0 / 2).
            r0_range=(0.05, 0.10) if tiny else (0.03, 0.10),
            r0_draws=None,  # explicit r0 per clip (m), overriding r0_range; None = uniform draws
            orbit_range=(400e3, 600e3),  # m
            max_wind_speed=5.0,  # m/s per layer, uniform direction
            noise_range=(0.015, 0.025),  # Gaussian sensor noise sigma, images in [0, 1]
            weights="tmts",  # 'tmts' (0.6 / 0.3 / 0.1 as printed) or 'hufnagel-valley' (HV5/7 slabs)
            altitudes=(1e3, 4e3, 20e3),  # m
            outer_scale=None,  # von Karman L0, m; None = Kolmogorov
            ground_sample_distance=1.0,  # m/px (not printed in the seed)
            aperture=0.5,  # m (not printed in the seed)
            wavelength=550e-9,  # m (not printed in the seed)
            pixel_pitch=5.5e-6,  # m (not printed in the seed)
            frame_rate=25.0,  # frames/s
        )
    )
    # turbjax.physics.SatelliteSettings (screen_size: the smallest holding every clip's footprints).
    config.simulator = ml_collections.ConfigDict(
        dict(
            grid=2 if tiny else 8,  # field points per axis for the blur
            psf_size=16 if tiny else 32,  # K, px
            oversample=5,  # q: the pupil (72.7 samples across at 400 km, K = 32) must fit in q K / 2 - 1
            subharmonic_levels=6,
            alpha=0.99,  # AR(1) renewal per frame
            noise=True,
        )
    )
    # turbjax.physics.turbulence_signature / signature_terms.
    config.signature = ml_collections.ConfigDict(
        dict(
            eps=1e-4,  # intensity^2 / px^2
            min_gradient_sq=1e-3,  # intensity^2 / px^2: textured pixels for the medians
        )
    )
    return config
