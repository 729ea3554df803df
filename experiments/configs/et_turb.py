"""ET-Turb simulator demo: Fig. 11-style synthesis grid, Fig. 3-style ET-MTF curves, parameters JSON.

Variants: ``et_turb.py`` (default, 256 px) and ``et_turb.py:tiny`` (64 px, for smoke tests).
"""

import ml_collections


def synthesis_settings() -> ml_collections.ConfigDict:
    """Numerical settings of turbjax.physics.SynthesisSettings."""
    return ml_collections.ConfigDict(
        dict(
            wave="spherical",
            alpha=1.0,
            num_psfs=6,
            blur_pad=32,
            include_diffraction=True,
            tilt_embed_factor=3.0,
            blur_correlation_px=None,
            max_blur_correlation_px=16.0,
            blur_eps=0.1,
            noise=False,
            noise_k=0.001,
            exposure_model="continuous",  # or "fixed" / "binary" (the seed's Table 3 ablation)
            fixed_exposure_s=1e-3,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"et_turb.py variant must be 'default' or 'tiny'; got {variant!r}.")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.seed = 0
    config.image_size = 256 if variant == "default" else 64
    config.scenes = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick")
    config.num_draws = 6 if variant == "default" else 2  # Table-1 draws in the synthesis grid
    config.batch_size = 3 if variant == "default" else 2
    config.wavelength = 550e-9  # m; not printed in the seed
    config.pixel_pitch = 5e-6  # m; not printed in the seed
    config.synthesis = synthesis_settings()
    if variant == "tiny":
        config.synthesis.blur_pad = 16
    # Fig. 3: the seed's appendix A.2 imaging setup (500 m, f = 300 mm, F/8, 50 m, 5 m/s).
    config.mtf = ml_collections.ConfigDict(
        dict(
            exposure_times_ms=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0),
            focal_length=0.3,
            f_number=8.0,
            distance=500.0,
            height=50.0,
            wind_speed=5.0,
            cn2=1e-13,
            num_freqs=128,
        )
    )
    return config
