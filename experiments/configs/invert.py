"""Inverse problems through the simulators: ``python -m experiments.invert --config=experiments/configs/invert.py``.

Recovers ET-Turb ``cn2`` and ``exposure_time`` and satellite ``r0`` from clips simulated on an embedded
scene, from a start a factor ``init_factor`` away (cn2 too high, exposure time too short, r0 too
small), with the simulator's key known (pixel fit) and unknown (statistics fit, over several clip
lengths), and reports the Cn2 the turbulence signature alone would start from.

Variants: ``default`` (256 px, clips of 4-32 frames: ~15 min on 2 CPU cores) and ``tiny`` (64 px,
short clips: the notebook's CPU setting and the tests).
"""

import ml_collections

VARIANTS = ("default", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"invert.py variant must be one of {VARIANTS}; got {variant!r}.")
    tiny = variant == "tiny"
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.seed = 1  # the observation's key is key(seed); the statistics fit's simulations fold_in(key(seed), 0x51)
    config.scene = "astronaut"  # turbjax.data.samples.EMBEDDED_SCENES
    config.init_factor = 3.0  # the start is this factor away from the truth
    # ET-Turb: an ET-Turb Table-1-like path where the blur is ~2 px wide and the tilt ~1 px.
    config.et_turb = ml_collections.ConfigDict(
        dict(
            wavelength=550e-9,  # m
            focal_length=0.8,  # m
            f_number=8.0,
            pixel_pitch=5e-6,  # m
            distance=2000.0,  # m
            height=10.0,  # m
            fps=30.0,  # frames/s
            wind_direction=0.3,  # rad from +x, fixed (the key draws only the turbulence)
            max_drift_px=64,
            blur_pad=16,  # px, SynthesisSettings.blur_pad
            truth=ml_collections.ConfigDict(dict(cn2=1e-14, exposure_time=10e-3, wind_speed=5.0)),
            bounds=ml_collections.ConfigDict(
                dict(cn2=(1e-16, 1e-12), exposure_time=(1e-4, 0.1), wind_speed=(0.1, 30.0))
            ),  # m^(-2/3), s, m/s
            fit_wind=False,  # also fit the wind speed in the key-known case
            # The wind moves every frame's pattern, so the pixel fit's basin in it is narrow: a start 1.3x
            # away is recovered exactly, 3x away is not (measured at 64 px, 4 frames).
            wind_init_factor=1.3,
        )
    )
    # Satellite: the TMTS layers; r0 is the unknown.
    config.satellite = ml_collections.ConfigDict(
        dict(
            r0=0.09,  # m, true value (seed range 3-10 cm); the start is r0 / init_factor = 3 cm
            bounds=(0.03, 0.10),  # m: the seed's range
            orbit_altitude=500e3,  # m
            wind_speed=3.0,  # m/s, every layer
            noise_sigma=0.02,
            grid=2,  # SatelliteSettings
            psf_size=24,  # resolves r0 >= 2.8 cm
            oversample=4,
            size=64,  # px
        )
    )
    # Cases: (model, key known, frames); ET-Turb frames also at ``size``.
    config.size = 64 if tiny else 256  # px, ET-Turb clips
    config.known_key_frames = 4 if tiny else 8
    config.unknown_key_frames = (8,) if tiny else (4, 8, 16, 32)  # clip lengths of the statistics fit
    config.satellite_unknown_frames = 8 if tiny else 16
    config.fit = ml_collections.ConfigDict(
        dict(
            steps=30,  # optimiser steps at most
            method="lm",  # Levenberg-Marquardt; or "lbfgs" / "adam" (optax)
            num_keys=4,  # simulated clips per statistics evaluation
            sim_frames=8,  # frames per simulated clip
            num_bands=8,  # radial frequency bands of the statistics
            band_range=(0.01, 0.45),  # cycles/px
            # Key unknown: objective on a grid of grid_points^P points over start /x grid_span, then a fit from
            # each of the num_starts best (the statistics objective has shallow side minima).
            grid_points=3,
            grid_span=4.0,
            num_starts=2,
        )
    )
    config.progress = True
    return config
