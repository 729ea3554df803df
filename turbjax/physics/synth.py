"""ET-Turb frame synthesis (tilt, then exposure-time blur, then optional noise) and the
Table-1 parameter sampler.

Turbulence-strength map. ``strength_map`` (optional, [H, W], >= 0) multiplies the path Cn2 seen
through each pixel, e.g. to give the turbulence signature (``turbjax.physics.signature``) a known
spatial pattern to recover. It is applied locally, to first order:

- tilt: the tilt variance is linear in Cn2, so the field drawn for the mean Cn2 is scaled by
  sqrt(m) per pixel (per-pixel variance m x the uniform one, exactly);
- blur: the blur-width statistics (mean, std, via r0 ~ Cn2^(-3/5)) are those of Cn2 x m at each
  pixel, around the same unit random field; the PSF of each width then follows as usual.

What stays that of the mean Cn2: the tilt correlation structure (Chanan curves and the
curl-free property hold only where m is constant; across a change of m the field is the
uniform one rescaled), the blur-width correlation length (isoplanatic angle of the mean Cn2)
and ``Degradation.atmosphere``. The map is attached to the image (field angles) and is not
carried by the frozen flow of a video. ``None`` (default) is the uniform path, computed exactly
as without the option; a map of ones gives the same result to float round-off.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from turbjax.physics.blur import blur_correlation_px, blur_width_field, spatially_varying_blur
from turbjax.physics.checks import check_image, check_range, is_concrete
from turbjax.physics.mtf import DEFAULT_ALPHA
from turbjax.physics.optics import Atmosphere, Optics, Wave, check_parameters
from turbjax.physics.tilt import tilt_field
from turbjax.physics.warp import warp

ExposureModel = Literal["continuous", "fixed", "binary"]

NOISE_K = 0.001  # ET-Turb B.5: sigma = K / sqrt(tau in ms), image in [0, 1]


@struct.dataclass
class Degradation:
    """Everything a simulator produced, as a pytree (leading axes: batch, time, ...).

    Attributes:
      clean, tilt_only, blur_only, degraded: images [..., H, W, C] in [0, 1].
      tilt_field: [..., H, W, 2] (dx, dy) pixels, the displacement that made ``tilt_only``
        (see ``turbjax.physics.warp``).
      blur_width: [..., H, W] FWHM of the local PSF, pixels.
      optics, atmosphere, exposure_time (s): the physical parameters used.
    """

    clean: jnp.ndarray
    tilt_only: jnp.ndarray
    blur_only: jnp.ndarray
    degraded: jnp.ndarray
    tilt_field: jnp.ndarray
    blur_width: jnp.ndarray
    optics: Optics
    atmosphere: Atmosphere
    exposure_time: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class SynthesisSettings:
    """Static (hashable) numerical settings of the ET-Turb synthesis.

    Attributes:
      wave: 'spherical' (scene points, default) or 'plane' path weighting.
      alpha: Fried's short-exposure constant (1 near field, 0.5 far field).
      num_psfs: PSFs in the spatially varying blur bank (>= 2).
      blur_pad: reflect padding (pixels) around the frame for FFT blur; the ET PSFs have
        heavy (Kolmogorov) tails, ~1% of the mass of a 4.5 px PSF lies beyond 16 px.
      include_diffraction: multiply the blur MTFs by the aperture's diffraction MTF.
      tilt_embed_factor: circulant-embedding canvas / frame size for the tilt field (>= 2.5).
      blur_correlation_px: correlation length of the blur-width field; None = isoplanatic
        angle in pixels.
      max_blur_correlation_px: upper clip of that length (sets the canvas padding).
      blur_eps: lower bound of the blur width, pixels.
      noise: add exposure-dependent Gaussian noise sigma = noise_k / sqrt(tau in ms).
      noise_k: the K of that law for images in [0, 1].
      exposure_model: exposure time seen by the blur, for the seed's Table 3 ablation (see
        :func:`blur_exposure_time`); noise always uses the true exposure time.
      fixed_exposure_s: the exposure of the 'fixed' model (1 ms in the seed).
    """

    wave: Wave = "spherical"
    alpha: float = DEFAULT_ALPHA
    num_psfs: int = 6
    blur_pad: int = 16
    include_diffraction: bool = True
    tilt_embed_factor: float = 3.0
    blur_correlation_px: float | None = None
    max_blur_correlation_px: float = 16.0
    blur_eps: float = 0.1
    noise: bool = False
    noise_k: float = NOISE_K
    exposure_model: ExposureModel = "continuous"
    fixed_exposure_s: float = 1e-3

    def __post_init__(self):
        if self.exposure_model not in ("continuous", "fixed", "binary"):
            raise ValueError(f"exposure_model must be 'continuous', 'fixed' or 'binary'; got {self.exposure_model!r}.")
        if not self.fixed_exposure_s > 0:
            raise ValueError(f"fixed_exposure_s must be > 0 s; got {self.fixed_exposure_s}.")
        if self.num_psfs < 2:
            raise ValueError(f"num_psfs must be >= 2; got {self.num_psfs}.")
        if self.tilt_embed_factor < 2.5:
            raise ValueError(f"tilt_embed_factor must be >= 2.5; got {self.tilt_embed_factor}.")
        if self.blur_pad < 1:
            raise ValueError(f"blur_pad must be >= 1 pixel; got {self.blur_pad}.")


# Exposure times standing for the two limits of the 'binary' model: tau = 0 gives MTF_SE exactly;
# 1e6 s makes D + v tau ~1e6 m, where the ET-MTF equals MTF_LE to < 1e-3 in its exponent.
SHORT_EXPOSURE_S, LONG_EXPOSURE_S = 0.0, 1e6


def blur_exposure_time(
    exposure_time, optics: Optics, atmosphere: Atmosphere, settings: SynthesisSettings
) -> jnp.ndarray:
    """The exposure time (s) the blur is computed with, under ``settings.exposure_model``.

    'continuous': the true exposure time (the ET-MTF). 'fixed': ``settings.fixed_exposure_s``
    for every sample. 'binary': the short-exposure limit when the wind moves the turbulence by
    less than one aperture during the exposure (v tau < D, frozen over the pupil), else the
    long-exposure limit; the seed does not say how it chose between SE and LE, this is the
    physical criterion of Azoulay's effective aperture.
    """
    tau = jnp.asarray(exposure_time)
    if settings.exposure_model == "continuous":
        return tau
    if settings.exposure_model == "fixed":
        return jnp.full_like(tau, settings.fixed_exposure_s, dtype=jnp.float32)
    frozen = jnp.asarray(atmosphere.wind_speed) * tau < optics.aperture
    return jnp.where(frozen, SHORT_EXPOSURE_S, LONG_EXPOSURE_S)


# Smallest Cn2 multiplier seen by the blur statistics: at m = 0 they would be 0 x inf (r0 -> inf);
# 1e-6 x Cn2 is diffraction-limited for every Table-1 path. The tilt uses m itself (sqrt(0) = 0).
_MIN_BLUR_STRENGTH = 1e-6


def check_strength_map(strength_map: jnp.ndarray | np.ndarray, shape: tuple[int, int]) -> jnp.ndarray:
    """The turbulence-strength map as float32 [H, W], after checking its shape (always) and its
    values (finite, >= 0; on concrete arrays)."""
    if np.shape(strength_map) != tuple(shape):
        raise ValueError(f"strength_map must have the frame shape {tuple(shape)} [H, W]; got {np.shape(strength_map)}.")
    check_range("strength_map", strength_map, 0.0, None, unit="(Cn2 multiplier)")
    return jnp.asarray(strength_map, jnp.float32)


def strength_atmosphere(atmosphere: Atmosphere, strength_map: jnp.ndarray) -> Atmosphere:
    """The atmosphere with a per-pixel Cn2 [H, W] = Cn2 x max(m, 1e-6), for the blur-width statistics."""
    return atmosphere.replace(cn2=jnp.asarray(atmosphere.cn2) * jnp.maximum(strength_map, _MIN_BLUR_STRENGTH))


def exposure_noise_sigma(exposure_time, k: float = NOISE_K) -> jnp.ndarray:
    """Noise standard deviation K / sqrt(tau / 1 ms) for ``exposure_time`` in s."""
    return k / jnp.sqrt(jnp.asarray(exposure_time) * 1e3)


def synthesize_frame(
    key: jax.Array,
    image: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    settings: SynthesisSettings = SynthesisSettings(),
    *,
    strength_map: jnp.ndarray | None = None,
) -> Degradation:
    """Degrade one clean frame [H, W, C] (float in [0, 1]) with ET-Turb turbulence.

    Tilt (a correlated displacement field, ``turbjax.physics.tilt``), then spatially varying
    exposure-time blur (``turbjax.physics.blur``), then optional noise. Physical parameters
    are scalars here; ``jax.vmap`` over keys, images and parameter pytrees makes batches.
    ``strength_map`` [H, W] (>= 0, None = uniform) multiplies Cn2 per pixel (module doc).

    Raises ValueError for a wrong rank/dtype (always) and for out-of-range values (eagerly;
    under jit/vmap values are tracers and only shapes are checked, so validate user input
    with ``turbjax.physics.check_parameters`` first).
    """
    check_image("image", image, min_rank=3, max_rank=3)
    h, w = image.shape[:2]
    if min(h, w) <= settings.blur_pad:
        raise ValueError(f"image height and width must exceed settings.blur_pad={settings.blur_pad}; got {h}x{w}.")
    if is_concrete((optics, atmosphere, exposure_time)):
        check_parameters(optics, atmosphere, exposure_time)
    if strength_map is not None:
        strength_map = check_strength_map(strength_map, (h, w))
    image = jnp.asarray(image, jnp.float32)
    k_tilt, k_blur, k_noise = jax.random.split(key, 3)
    field = tilt_field(k_tilt, (h, w), optics, atmosphere, wave=settings.wave, embed_factor=settings.tilt_embed_factor)
    blur_atmosphere, blur_correlation = atmosphere, settings.blur_correlation_px
    if strength_map is not None:
        field = field * jnp.sqrt(strength_map)[..., None]
        blur_atmosphere = strength_atmosphere(atmosphere, strength_map)
        if blur_correlation is None:  # one correlation length: that of the mean Cn2
            blur_correlation = blur_correlation_px(optics, atmosphere, settings.wave)
    tilt_only = warp(image, field)
    widths = blur_width_field(
        k_blur,
        (h, w),
        optics,
        blur_atmosphere,
        blur_exposure_time(exposure_time, optics, atmosphere, settings),
        correlation_px=blur_correlation,
        max_correlation_px=settings.max_blur_correlation_px,
        eps=settings.blur_eps,
        wave=settings.wave,
    )
    return blur_and_assemble(k_noise, image, tilt_only, field, widths, optics, atmosphere, exposure_time, settings)


def blur_and_assemble(
    key: jax.Array,
    clean: jnp.ndarray,
    tilt_only: jnp.ndarray,
    tilt: jnp.ndarray,
    widths: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    settings: SynthesisSettings,
) -> Degradation:
    """Blur the tilted and the clean frames [..., H, W, C] with the width field [..., H, W], add
    optional exposure noise (``key``), and assemble the ``Degradation`` (shared by frames and
    videos)."""
    c = clean.shape[-1]
    both = spatially_varying_blur(
        jnp.concatenate([tilt_only, clean], axis=-1),
        widths,
        optics,
        atmosphere,
        blur_exposure_time(exposure_time, optics, atmosphere, settings),
        num_psfs=settings.num_psfs,
        pad=settings.blur_pad,
        alpha=settings.alpha,
        include_diffraction=settings.include_diffraction,
    )
    degraded, blur_only = both[..., :c], both[..., c:]
    if settings.noise:
        sigma = exposure_noise_sigma(exposure_time, settings.noise_k)
        degraded = degraded + sigma * jax.random.normal(key, degraded.shape)
    return Degradation(
        clean=clean,
        tilt_only=tilt_only,
        blur_only=jnp.clip(blur_only, 0.0, 1.0),
        degraded=jnp.clip(degraded, 0.0, 1.0),
        tilt_field=tilt,
        blur_width=widths,
        optics=optics,
        atmosphere=atmosphere,
        exposure_time=jnp.asarray(exposure_time),
    )


# ET-Turb Table 1: 12 configurations drawn with equal probability. Continuous ranges are
# [low, high] (uniform); discrete sets are drawn uniformly. Columns and units as printed:
# distance (m), focal length (m), F-number, Cn2 (1e-14 m^(-2/3)), height (m), wind (m/s),
# exposure time (ms).
_TABLE1_COLUMNS = ("distance", "focal", "fnum", "cn2", "height", "wind", "exposure")
_TABLE1_ROWS = (
    ((30, 100), (0.1, 0.3), (2.8, 4), (50, 300), (4, 50), (1, 3), (0.5, 8)),
    ((30, 100), (0.1, 0.3), (2.8, 4, 5.6), (200, 500), (100, 200), (3, 5), (0.5, 8)),
    ((100, 200), (0.2, 0.5), (2.8, 4, 5.6), (5, 50), (200, 400), (1, 4), (1, 20)),
    ((100, 200), (0.2, 0.5), (2.8, 4, 5.6, 8), (20, 100), (4, 50), (2, 6), (0.5, 10)),
    ((200, 400), (0.3, 0.5), (2.8, 4, 5.6, 8), (2, 30), (50, 100), (2, 5), (1, 20)),
    ((200, 400), (0.3, 0.5), (4, 5.6, 8, 11), (10, 40), (10, 50), (3, 6), (1, 20)),
    ((400, 600), (0.4, 0.75), (4, 5.6, 8, 11), (1, 20), (50, 150), (3, 5), (2, 40)),
    ((400, 600), (0.4, 0.75), (5.6, 8, 11, 16), (10, 30), (10, 100), (4, 7), (1, 20)),
    ((600, 800), (0.6, 0.8), (5.6, 8, 11, 16), (1, 15), (100, 300), (3, 7), (2, 40)),
    ((600, 800), (0.6, 0.8), (8, 11, 16, 18), (2, 20), (50, 200), (4, 8), (2, 40)),
    ((800, 1000), (0.8, 1.0), (8, 11, 16, 18), (0.5, 10), (10, 100), (5, 9), (2, 40)),
    ((800, 1000), (0.8, 1.0), (11, 16, 18, 24), (1, 20), (4, 50), (6, 10), (1, 20)),
)
ET_TURB_TABLE1: tuple[dict, ...] = tuple(dict(zip(_TABLE1_COLUMNS, row, strict=True)) for row in _TABLE1_ROWS)
# Which Table-1 columns are discrete sets (the rest are continuous [low, high]).
_DISCRETE = ("fnum", "height")


def _table_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Values padded to 4 per configuration, and each configuration's count."""
    rows = [row[name] for row in ET_TURB_TABLE1]
    values = np.array([list(r) + [r[-1]] * (4 - len(r)) for r in rows], np.float32)
    return values, np.array([len(r) for r in rows], np.int32)


def sample_et_turb_params(
    key: jax.Array, wavelength: float = 550e-9, pixel_pitch: float = 5e-6
) -> tuple[Optics, Atmosphere, jnp.ndarray]:
    """Draw (optics, atmosphere, exposure_time) from ET-Turb Table 1.

    One of the 12 configurations is chosen with equal probability, then every continuous
    quantity uniformly in its range and every discrete one uniformly from its set. Returned
    in SI units (Cn2 in m^(-2/3), exposure time in s) as scalar arrays; ``jax.vmap`` over keys
    gives a batch. The paper prints neither wavelength nor pixel pitch: they are arguments
    (defaults: 550 nm, 5 um), both fixed across draws.
    """
    keys = jax.random.split(key, 8)
    config = jax.random.randint(keys[0], (), 0, len(ET_TURB_TABLE1))
    draws = {}
    for i, name in enumerate(("distance", "focal", "fnum", "cn2", "height", "wind", "exposure")):
        values, counts = _table_arrays(name)
        row = jnp.asarray(values)[config]
        if name in _DISCRETE:
            index = jax.random.randint(keys[i + 1], (), 0, jnp.asarray(counts)[config])
            draws[name] = row[index]
        else:
            draws[name] = jax.random.uniform(keys[i + 1], (), minval=row[0], maxval=row[1])
    optics = Optics(
        wavelength=jnp.float32(wavelength),
        focal_length=draws["focal"],
        f_number=draws["fnum"],
        pixel_pitch=jnp.float32(pixel_pitch),
    )
    atmosphere = Atmosphere(
        cn2=draws["cn2"] * 1e-14, distance=draws["distance"], height=draws["height"], wind_speed=draws["wind"]
    )
    return optics, atmosphere, draws["exposure"] * 1e-3
