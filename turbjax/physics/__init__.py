"""Pure-JAX turbulence physics: SI units in, pixels out. No Flax modules, no I/O."""

from turbjax.physics.blur import (
    blur_width_field,
    blur_width_stats,
    local_fried_parameter,
    psf_for_width,
    spatially_varying_blur,
)
from turbjax.physics.checks import check_image, check_range
from turbjax.physics.mtf import (
    diffraction_mtf,
    frequency_grid,
    fwhm,
    mtf_exposure,
    mtf_long_exposure,
    mtf_short_exposure,
    psf_from_mtf,
)
from turbjax.physics.optics import (
    Atmosphere,
    Optics,
    check_parameters,
    fried_parameter,
    fried_parameter_from_profile,
    hufnagel_valley,
    isoplanatic_angle,
    isoplanatic_angle_from_profile,
    surface_layer_cn2,
)
from turbjax.physics.synth import (
    ET_TURB_TABLE1,
    Degradation,
    SynthesisSettings,
    blur_exposure_time,
    exposure_noise_sigma,
    sample_et_turb_params,
    synthesize_frame,
)
from turbjax.physics.tilt import (
    chanan_correlation,
    path_tilt_correlation,
    tilt_covariance,
    tilt_field,
    tilt_std_px,
    tilt_variance,
)
from turbjax.physics.video import frame_drift_px, synthesize_video
from turbjax.physics.warp import warp

__all__ = [
    "Atmosphere",
    "Degradation",
    "ET_TURB_TABLE1",
    "Optics",
    "SynthesisSettings",
    "blur_exposure_time",
    "blur_width_field",
    "blur_width_stats",
    "chanan_correlation",
    "check_image",
    "check_parameters",
    "check_range",
    "diffraction_mtf",
    "exposure_noise_sigma",
    "frame_drift_px",
    "frequency_grid",
    "fried_parameter",
    "fried_parameter_from_profile",
    "fwhm",
    "hufnagel_valley",
    "isoplanatic_angle",
    "isoplanatic_angle_from_profile",
    "local_fried_parameter",
    "mtf_exposure",
    "mtf_long_exposure",
    "mtf_short_exposure",
    "path_tilt_correlation",
    "psf_for_width",
    "psf_from_mtf",
    "sample_et_turb_params",
    "spatially_varying_blur",
    "surface_layer_cn2",
    "synthesize_frame",
    "synthesize_video",
    "tilt_covariance",
    "tilt_field",
    "tilt_std_px",
    "tilt_variance",
    "warp",
]
