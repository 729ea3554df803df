"""Anisoplanatic satellite video simulator (TMTS, section 2.3.2).

Model. Thin turbulent layers (default: 1 / 4 / 20 km weighted 0.6 / 0.3 / 0.1, as printed in the
seed) each carry an autoregressive frozen-flow phase screen (``turbjax.physics.screens``) blown by
its own wind (<= 5 m/s); a frame is one step of dt = ``frame_interval``. An image point at field
angle theta (rad, from the image centre) looks through layer i at the footprint of the aperture
shifted by h_i theta, so its pupil phase is the sum over layers of the screens sampled there.
Points whose footprints overlap share phase: low layers are nearly isoplanatic, the high layer
decorrelates the image over the isoplanatic angle theta0 = 0.314 r0 / h_bar.

Geometry (a modelling choice, stated because the seed's numbers force it). The seed combines a
400-600 km orbit with r0 of 3-10 cm and "spherical waves from ground targets". Taken literally
(point source on the ground, turbulence within 20 km of it, sensor 500 km away) the spherical-wave
weight (z/L)^(5/3) makes the r0 at the aperture metres, i.e. hardly any turbulence, and the
footprints shrink to millimetres. The seed's r0 range is that of an observer looking through the
layers, so, like the seed, we use the layer model in its plane-wave form: r0 is the Fried parameter
of the pupil phase (at the imaging wavelength), footprints are the full aperture and shift by
h_i theta, and theta0 is that of :func:`turbjax.physics.screens.layer_isoplanatic_angle`. The orbit
then enters through the pixel's angle: a scene of ground sample distance GSD (m/px) seen from
altitude H has ifov = GSD / H (``satellite_params`` builds the optics that way), so a higher orbit
packs the same scene into smaller angles and makes it more isoplanatic.

Per frame:
- pupil sampling: dx = lambda / (K ifov) with K = ``settings.psf_size``, so that an FFT of
  M = q K pupil samples (q = ``settings.oversample``) gives PSF samples of ifov / q; summing q x q
  of them gives a PSF sampled (and pixel-integrated) exactly on the image pixel grid. The pupil
  (D / dx samples across) must fit in M / 2 samples (q >= 2 D ifov / lambda: checked) and dx must
  resolve r0 (K >= 2 lambda / (r0 ifov), twice the seeing width in pixels: checked).
- tilt: the Z-tilt (least-squares plane over the aperture) of every layer is a correlation of its
  screen with fixed kernels, computed for the whole screen by FFT; each pixel's tilt is the sum over
  layers of these tilt maps read at its own footprint (bilinear in the smooth tilt map), converted
  to pixels by K / (2 pi) (phase slope in rad per pupil sample). So the tilt field is exact at every
  pixel, with no interpolation between field points.
- blur: on a ``settings.grid`` x ``settings.grid`` grid of field points spanning the frame
  (corners included) the pupil phase minus its piston and Z-tilt gives a Fourier-optics PSF
  (|FFT|^2, pixel-integrated); the frame is convolved with each (FFT, reflect padding of K / 2)
  and the results blended with raised-cosine weights cos^2(pi d / 2 spacing), a smooth partition
  of unity. Each convolution is evaluated only on the tile where its weight is non-zero (about
  (2 spacing)^2 pixels, :func:`blend_tiles`), which gives the same blend as full-frame
  convolutions at a fraction of the FFT work. ``blur_width`` is the sharpness-equivalent FWHM
  (px, :func:`equivalent_width`) of each field point's tilt-removed PSF, blended with the same
  weights.
- degraded = blend of PSF_j * tilt_only; blur_only = the same blur of the clean frame;
  tilt_only = clean warped by the tilt field; Gaussian sensor noise sigma in [0.015, 0.025] is
  added to ``degraded`` (then clipped to [0, 1]).

Sign conventions: a phase slope along +x moves the PSF, hence the image content, along +x; the
``tilt_field`` is the warp field of ``turbjax.physics.warp`` (backward sampling), i.e. minus that
content displacement. Wind (vx, vy) moves each layer's pattern along +x (columns) / +y (rows).

Screens and frozen flow. Layer screens are periodic FFT screens plus subharmonics (6 levels by
default: Kolmogorov tilt converges slowly at low frequency, ~ (f_min D)^(1/3), and tilt is the
dominant visible effect), advected by their winds and renewed with the AR(1) coefficient
``settings.alpha`` each frame (Srinath et al. 2015), which also hides the screens' periodicity.
Footprints are read at integer pupil samples (the nearest to h theta, < 0.5 dx off), so the
screens are sampled exactly; the advection itself is exact (Fourier phase).

Differentiability: r0 scales every screen by r0^(-5/6) and the winds enter the advection phases, so
all images are smooth functions of r0 and of the winds for a fixed key (``blur_width`` is not).
Everything is jit-able; value checks run only on concrete inputs (``turbjax.physics.checks``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from turbjax.physics.checks import as_clip, check_positive, check_range, is_concrete
from turbjax.physics.optics import Optics
from turbjax.physics.screens import (
    TMTS_ALTITUDES,
    TMTS_WEIGHTS,
    LayerAtmosphere,
    ar_screen_phase,
    ar_screen_step,
    check_layer_atmosphere,
    circular_pupil,
    hufnagel_valley_weights,
    layer_screens_init,
    layers_from_weights,
    remove_piston_tilt,
    ztilt_kernels,
)
from turbjax.physics.synth import Degradation
from turbjax.physics.warp import warp

# Ranges of the seed (TMTS section 2.3.2).
R0_RANGE = (0.03, 0.10)  # m
MAX_WIND = 5.0  # m/s
ORBIT_RANGE = (400e3, 600e3)  # m
NOISE_RANGE = (0.015, 0.025)  # image units, images in [0, 1]
MAX_ALTITUDE = 30e3  # m; turbulence layers (the seed: within 20 km)


@struct.dataclass
class SatelliteParams:
    """Physical parameters of a satellite video (a pytree: vmap, sample and differentiate them).

    Attributes:
      optics: the camera; ``optics.ifov`` (rad/px) sets the angular scale, ``optics.aperture`` D.
      atmosphere: the turbulent layers, their winds and the total r0 (m, imaging wavelength).
      orbit_altitude: m (400-600 km); with ifov gives the ground sample distance.
      frame_interval: time between frames, s (one AR step of the screens).
      noise_sigma: standard deviation of the Gaussian sensor noise (0.015-0.025 for [0, 1] images).
    """

    optics: Optics
    atmosphere: LayerAtmosphere
    orbit_altitude: jnp.ndarray
    frame_interval: jnp.ndarray
    noise_sigma: jnp.ndarray

    @property
    def ground_sample_distance(self) -> jnp.ndarray:
        """Ground sample distance at nadir, m/px: orbit altitude x ifov."""
        return jnp.asarray(self.orbit_altitude) * self.optics.ifov


@dataclasses.dataclass(frozen=True)
class SatelliteSettings:
    """Static numerical settings of :func:`synthesize_satellite_video` (hashable).

    Attributes:
      grid: field points per axis for the blur (PSFs per frame = grid^2; tilt is per pixel anyway).
      psf_size: K, PSF window in image pixels (even); also sets the pupil sampling lambda / (K ifov).
      oversample: q, PSF samples per pixel before pixel integration; FFT size M = q K.
      screen_size: layer screen side in pupil samples; None = the smallest that holds every
        footprint (needs concrete parameters: pass it explicitly under jit, see
        :func:`required_screen_size`).
      subharmonic_levels: subharmonic levels of the layer screens (0 = plain FFT screens).
      alpha: AR(1) renewal coefficient per frame (1 = pure frozen flow).
      noise: add the Gaussian sensor noise of ``params.noise_sigma``.
    """

    grid: int = 4
    psf_size: int = 32
    oversample: int = 4
    screen_size: int | None = None
    subharmonic_levels: int = 6
    alpha: float = 0.99
    noise: bool = True

    def __post_init__(self):
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1 field point per axis; got {self.grid}.")
        if self.psf_size < 4 or self.psf_size % 2:
            raise ValueError(f"psf_size must be an even number of pixels >= 4; got {self.psf_size}.")
        if self.oversample < 1:
            raise ValueError(f"oversample must be >= 1; got {self.oversample}.")
        if self.screen_size is not None and self.screen_size < self.pupil_window:
            raise ValueError(f"screen_size must be >= the pupil window ({self.pupil_window}); got {self.screen_size}.")
        if self.subharmonic_levels < 0:
            raise ValueError(f"subharmonic_levels must be >= 0; got {self.subharmonic_levels}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {self.alpha}.")

    @property
    def fft_size(self) -> int:
        """M = oversample x psf_size pupil samples."""
        return self.oversample * self.psf_size

    @property
    def pupil_window(self) -> int:
        """Side (samples) of the window holding the pupil: M / 2, so the PSF does not alias."""
        return self.fft_size // 2


def _layer_weights(weights: str | Sequence[float], altitudes: Sequence[float]) -> np.ndarray:
    if isinstance(weights, str):
        if weights == "tmts":
            if len(altitudes) != len(TMTS_WEIGHTS):
                raise ValueError("weights='tmts' needs the three TMTS altitudes; pass weights explicitly.")
            return np.asarray(TMTS_WEIGHTS)
        if weights == "hufnagel-valley":
            return hufnagel_valley_weights(altitudes)
        raise ValueError(f"weights must be 'tmts', 'hufnagel-valley' or a sequence; got {weights!r}.")
    return np.asarray(weights, np.float64)


def satellite_params(
    r0: jnp.ndarray | float = 0.05,
    *,
    orbit_altitude: jnp.ndarray | float = 500e3,
    ground_sample_distance: float = 1.0,
    aperture: float = 0.5,
    wavelength: float = 550e-9,
    pixel_pitch: float = 5.5e-6,
    wind_speed: jnp.ndarray | float | Sequence[float] = 3.0,
    wind_direction: jnp.ndarray | float | Sequence[float] = 0.0,
    altitudes: Sequence[float] = TMTS_ALTITUDES,
    weights: str | Sequence[float] = "tmts",
    outer_scale: float = math.inf,
    frame_rate: float = 25.0,
    noise_sigma: jnp.ndarray | float = 0.02,
) -> SatelliteParams:
    """Build :class:`SatelliteParams` from quantities people quote for video satellites.

    The focal length is chosen so that one pixel covers ``ground_sample_distance`` (m) from
    ``orbit_altitude`` (m): f = pixel_pitch x H / GSD, f-number = f / ``aperture`` (m). Winds:
    per-layer (or shared) speeds (m/s) and directions (rad from +x). ``weights``: 'tmts' (0.6 / 0.3 /
    0.1 as printed), 'hufnagel-valley' (Int Cn2 of HV5/7 over the slabs nearest each altitude,
    about 0.91 / 0.07 / 0.02 at 1 / 4 / 20 km) or explicit fractions.

    The printed TMTS weights are not Hufnagel-Valley-consistent although the seed says it
    calibrates with HV: HV5/7 holds 89% of Int Cn2 below 2 km, and at r0 = 5 cm the printed layers
    give theta0 = 2.74 microrad against 6.89 microrad for HV5/7 (r0 = 4.96 cm at 500 nm); the
    HV-integrated weights at the same altitudes give 6.3 microrad (the ground layer then sits
    at 1 km rather than near the ground). Both are offered; the default reproduces the seed.
    """
    heights = np.asarray(altitudes, np.float64)
    num = heights.size
    speed = jnp.broadcast_to(jnp.asarray(wind_speed, jnp.result_type(float)), (num,))
    direction = jnp.broadcast_to(jnp.asarray(wind_direction, jnp.result_type(float)), (num,))
    wind = jnp.stack([speed * jnp.cos(direction), speed * jnp.sin(direction)], axis=-1)
    atmosphere = layers_from_weights(r0, heights, _layer_weights(weights, altitudes), wind, outer_scale)
    focal = pixel_pitch * jnp.asarray(orbit_altitude, jnp.result_type(float)) / ground_sample_distance
    optics = Optics(wavelength=wavelength, focal_length=focal, f_number=focal / aperture, pixel_pitch=pixel_pitch)
    return SatelliteParams(
        optics=optics,
        atmosphere=atmosphere,
        orbit_altitude=jnp.asarray(orbit_altitude, jnp.result_type(float)),
        frame_interval=jnp.asarray(1.0 / frame_rate, jnp.result_type(float)),
        noise_sigma=jnp.asarray(noise_sigma, jnp.result_type(float)),
    )


def sample_satellite_params(key: jax.Array, **kwargs) -> SatelliteParams:
    """Draw parameters uniformly over the seed's ranges: r0 in [3, 10] cm, orbit in [400, 600] km,
    per-layer wind speed in [0, 5] m/s with a uniform direction, noise sigma in [0.015, 0.025].

    Other arguments of :func:`satellite_params` pass through ``kwargs``. Traceable: ``jax.vmap``
    over keys gives a batch. With varying orbits the footprints vary: size screens for the lowest
    orbit (:func:`required_screen_size` of the batch).
    """
    k_r0, k_orbit, k_speed, k_dir, k_noise = jax.random.split(key, 5)
    num = len(kwargs.get("altitudes", TMTS_ALTITUDES))
    return satellite_params(
        r0=jax.random.uniform(k_r0, (), minval=R0_RANGE[0], maxval=R0_RANGE[1]),
        orbit_altitude=jax.random.uniform(k_orbit, (), minval=ORBIT_RANGE[0], maxval=ORBIT_RANGE[1]),
        wind_speed=jax.random.uniform(k_speed, (num,), minval=0.0, maxval=MAX_WIND),
        wind_direction=jax.random.uniform(k_dir, (num,), minval=0.0, maxval=2.0 * jnp.pi),
        noise_sigma=jax.random.uniform(k_noise, (), minval=NOISE_RANGE[0], maxval=NOISE_RANGE[1]),
        **kwargs,
    )


def _widen(bounds: tuple[float, float]) -> tuple[float, float]:
    """Bounds relaxed by 1e-6 (relative): float32 draws at an end, e.g. 0.03 -> 0.029999999, pass."""
    return bounds[0] * (1.0 - 1e-6), bounds[1] * (1.0 + 1e-6)


def check_satellite_params(params: SatelliteParams) -> None:
    """Raise ``ValueError`` naming the first parameter outside the seed's ranges (concrete values)."""
    check_layer_atmosphere(params.atmosphere)
    if not is_concrete(params):
        return
    atmosphere = params.atmosphere
    check_range("atmosphere.r0", atmosphere.r0, *_widen(R0_RANGE), unit="m")
    speed = np.linalg.norm(np.asarray(atmosphere.wind, np.float64), axis=-1)
    check_range("atmosphere.wind speed", speed, 0.0, _widen((0.0, MAX_WIND))[1], unit="m/s")
    check_range("atmosphere.altitude", atmosphere.altitude, 0.0, MAX_ALTITUDE, unit="m")
    check_range("orbit_altitude", params.orbit_altitude, *_widen(ORBIT_RANGE), unit="m")
    check_range("noise_sigma", params.noise_sigma, *_widen(NOISE_RANGE))
    check_positive("frame_interval", params.frame_interval, "s")
    check_positive("optics.wavelength", params.optics.wavelength, "m")
    check_positive("optics.focal_length", params.optics.focal_length, "m")
    check_positive("optics.f_number", params.optics.f_number)
    check_positive("optics.pixel_pitch", params.optics.pixel_pitch, "m")


def pupil_sample_spacing(params: SatelliteParams, settings: SatelliteSettings) -> jnp.ndarray:
    """Pupil (and screen) sample spacing lambda / (K ifov), m: makes the PSF pixel the image pixel."""
    return jnp.asarray(params.optics.wavelength) / (settings.psf_size * params.optics.ifov)


def required_screen_size(
    params: SatelliteParams, image_shape: tuple[int, int], settings: SatelliteSettings = SatelliteSettings()
) -> int:
    """Smallest screen side (pupil samples, a multiple of 32) holding every footprint of an image
    [H, W]: the pupil window plus twice the largest shift h theta (concrete ``params``, any batch)."""
    if not is_concrete(params):
        raise ValueError(
            "settings.screen_size=None needs concrete parameters; under jit pass "
            "SatelliteSettings(screen_size=required_screen_size(params, (H, W), settings))."
        )
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing (closed-over params)
        dx = np.asarray(pupil_sample_spacing(params, settings), np.float64)
        ifov = np.asarray(params.optics.ifov, np.float64)
    h_max = np.max(np.asarray(params.atmosphere.altitude, np.float64), axis=-1)
    reach = np.max(h_max * ifov * (max(image_shape) - 1) / 2.0 / dx)
    size = settings.pupil_window + 2 * int(math.ceil(reach)) + 4
    return int(32 * math.ceil(size / 32))


def _check_sampling(params: SatelliteParams, settings: SatelliteSettings) -> None:
    if not is_concrete(params):
        return
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing (closed-over params)
        dx = np.asarray(pupil_sample_spacing(params, settings), np.float64)
        across = np.asarray(params.optics.aperture, np.float64) / dx
    if np.any(across > settings.pupil_window - 1):
        need = math.ceil(float(np.max(settings.oversample * across / (settings.pupil_window - 1))))
        raise ValueError(
            f"settings.oversample={settings.oversample} is too small: the pupil spans {float(np.max(across)):.1f} "
            f"samples and must fit in {settings.pupil_window - 1} (no PSF aliasing); use oversample >= {need}."
        )
    r0 = np.asarray(params.atmosphere.r0, np.float64)
    if np.any(dx > r0 / 2.0):
        need = 2 * math.ceil(float(np.max(settings.psf_size * dx / (r0 / 2.0))) / 2)
        raise ValueError(
            f"settings.psf_size={settings.psf_size} is too small: pupil samples of "
            f"{float(np.max(dx)) * 100:.2f} cm do not resolve r0/2 = {float(np.min(r0)) * 50:.2f} cm; "
            f"use psf_size >= {need}."
        )


# --------------------------------------------------------------------------------------------
# Building blocks (public for tests and for users composing their own pipelines)


def blend_weights(size: int, grid: int) -> jnp.ndarray:
    """Raised-cosine weights [grid, size]: field point j at pixel j (size-1)/(grid-1) weighs pixel y by
    cos^2(pi/2 min(|y - p_j| / spacing, 1)); neighbours sum to 1 (a smooth partition of unity)."""
    if grid == 1:
        return jnp.ones((1, size))
    spacing = (size - 1) / (grid - 1)
    d = jnp.abs(jnp.arange(size)[None, :] - (jnp.arange(grid) * spacing)[:, None]) / spacing
    return jnp.cos(0.5 * jnp.pi * jnp.minimum(d, 1.0)) ** 2


def field_point_positions(size: int, grid: int) -> np.ndarray:
    """Pixel coordinates [grid] of the field points along an axis of ``size`` pixels."""
    if grid == 1:
        return np.array([(size - 1) / 2.0])
    return np.arange(grid) * (size - 1) / (grid - 1)


def pupil_psf(phase: jnp.ndarray, mask: jnp.ndarray, settings: SatelliteSettings) -> jnp.ndarray:
    """Pixel-integrated PSF [K, K] (sums to 1) of a pupil phase [n_w, n_w] (rad) on ``mask``.

    |FFT|^2 of the pupil field zero-padded to M = q K samples, then summed over q x q blocks. A
    half-sample ramp puts the zero angle at the centre of pixel (K/2, K/2), the origin of the
    convolutions in this module.
    """
    q, k, m = settings.oversample, settings.psf_size, settings.fft_size
    n_w = mask.shape[-1]
    idx = jnp.arange(n_w)
    ramp = jnp.exp(2j * jnp.pi * 0.5 * (q - 1) * (idx[:, None] + idx[None, :]) / m)
    field = mask * jnp.exp(1j * phase) * ramp
    field = jnp.pad(field, ((0, m - n_w), (0, m - n_w)))
    intensity = jnp.fft.fftshift(jnp.abs(jnp.fft.fft2(field)) ** 2)
    psf = intensity.reshape(k, q, k, q).sum(axis=(1, 3))
    return psf / jnp.sum(psf)


def equivalent_width(psf: jnp.ndarray) -> jnp.ndarray:
    """Sharpness-equivalent FWHM (px) of PSFs [..., K, K]: the FWHM of the Gaussian with the same
    sum of squares, 2 sqrt(2 ln 2) / sqrt(4 pi sum p^2) (a Gaussian of std s has sum p^2 = 1 / (4 pi s^2)).

    Why not the FWHM of the peak: a short-exposure PSF with D / r0 ~ 5-17 is a cloud of speckles,
    and its half-maximum contour outlines the brightest speckle (~lambda / D), which barely changes
    with r0 (measured here: ~2 px at r0 = 3 and 5 cm alike). The sharpness counts how many pixels the
    energy spreads over, falls smoothly and monotonically with r0 (7.3 / 4.4 / 2.2 px at r0 = 3 / 5 /
    10 cm with the default optics), equals the FWHM for a well-sampled Gaussian and is differentiable.
    """
    return 2.0 * math.sqrt(2.0 * math.log(2.0)) / jnp.sqrt(4.0 * jnp.pi * jnp.sum(psf**2, axis=(-2, -1)))


def _shift_px(tilt_per_sample: jnp.ndarray, settings: SatelliteSettings) -> jnp.ndarray:
    """Phase slope (rad per pupil sample) -> image displacement (px): slope x K / (2 pi)."""
    return tilt_per_sample * settings.psf_size / (2.0 * jnp.pi)


def _bilinear_rows_cols(table: jnp.ndarray, rows: jnp.ndarray, cols: jnp.ndarray) -> jnp.ndarray:
    """table [N, N] read bilinearly at every (rows[i], cols[j]) -> [len(rows), len(cols)] (separable)."""
    n = table.shape[-1]

    def split(pos):
        pos = jnp.clip(pos, 0.0, n - 1.0)
        lo = jnp.clip(jnp.floor(pos), 0, n - 2).astype(jnp.int32)
        return lo, pos - lo

    r0, fr = split(rows)
    c0, fc = split(cols)
    top = jnp.take(table, r0, axis=0)
    bottom = jnp.take(table, r0 + 1, axis=0)
    by_rows = (1.0 - fr)[:, None] * top + fr[:, None] * bottom  # [H, N]
    return (1.0 - fc) * jnp.take(by_rows, c0, axis=1) + fc * jnp.take(by_rows, c0 + 1, axis=1)


def _fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: an FFT length without large prime factors."""
    m = max(int(n), 1)
    while True:
        rest = m
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return m
        m += 1


def blend_tiles(size: int, grid: int, pad: int) -> tuple[np.ndarray, int, int]:
    """Static tiling of one image axis for the blended blur (all lengths in pixels).

    Field point j's raised-cosine weight (:func:`blend_weights`) is non-zero only where
    |y - p_j| < spacing, i.e. on at most 2 spacing + 1 pixels. Returns (starts [grid], n, f): the
    tile [starts[j], starts[j] + n) holds that support (tiles at the border are shifted inwards, so
    every tile has the same length n), and f >= n + 2 ``pad`` is the FFT length of the tile plus
    the ``pad`` pixels of image on each side that a PSF of half-width <= ``pad`` reads.
    """
    if grid == 1:
        return np.zeros(1, np.int64), size, _fft_length(size + 2 * pad)
    spacing = (size - 1) / (grid - 1)
    support = np.abs(np.arange(size)[None, :] - field_point_positions(size, grid)[:, None]) < spacing
    first = np.argmax(support, axis=1)
    last = size - 1 - np.argmax(support[:, ::-1], axis=1)
    n = int(np.max(last - first + 1))
    return np.minimum(first, size - n), n, _fft_length(n + 2 * pad)


def _blur_blend(images: jnp.ndarray, psfs: jnp.ndarray, wy: jnp.ndarray, wx: jnp.ndarray, pad: int) -> jnp.ndarray:
    """sum_j w_j (images * psfs[j]) with separable weights w_(a, b)[y, x] = wy[a, y] wx[b, x].

    images [C, H, W]; psfs [gy gx, K, K] (row-major over the field points (a, b), centred on pixel
    (K/2, K/2)); wy [gy, H], wx [gx, W]; ``pad`` >= K / 2 pixels of reflect padding. Each field
    point's convolution is computed only on the tile where its weight is non-zero
    (:func:`blend_tiles`), by an FFT of that tile plus ``pad`` pixels of image around it, which is
    exact: the PSF never reads beyond the padding, nor wraps around. With the 8 x 8 grid on
    256^2 frames the FFTs are 108^2 instead of 288^2 for the whole padded frame.
    """
    _, h, w = images.shape
    gy, gx, k = wy.shape[0], wx.shape[0], psfs.shape[-1]
    row_starts, n_y, f_y = blend_tiles(h, gy, pad)
    col_starts, n_x, f_x = blend_tiles(w, gx, pad)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    # Room for tiles of length f at the last start (never read by the kept outputs).
    padded = jnp.pad(padded, ((0, 0), (0, max(f_y - n_y - 2 * pad, 0)), (0, max(f_x - n_x - 2 * pad, 0))))
    rows = jnp.stack([padded[:, s : s + f_y] for s in row_starts], axis=1)  # [C, gy, f_y, Wp]
    tiles = jnp.stack([rows[..., s : s + f_x] for s in col_starts], axis=2)  # [C, gy, gx, f_y, f_x]
    kernels = jnp.zeros((psfs.shape[0], f_y, f_x), psfs.dtype).at[:, :k, :k].set(psfs)
    kernels = jnp.roll(kernels, (-(k // 2), -(k // 2)), axis=(-2, -1))
    otfs = jnp.fft.rfft2(kernels).reshape(gy, gx, f_y, f_x // 2 + 1)
    blurred = jnp.fft.irfft2(jnp.fft.rfft2(tiles) * otfs[None], s=(f_y, f_x))[..., pad : pad + n_y, pad : pad + n_x]
    wy_tiles = jnp.stack([wy[a, s : s + n_y] for a, s in enumerate(row_starts)])  # [gy, n_y]
    wx_tiles = jnp.stack([wx[b, s : s + n_x] for b, s in enumerate(col_starts)])  # [gx, n_x]
    blurred = blurred * wy_tiles[:, None, :, None] * wx_tiles[None, :, None, :]  # [C, gy, gx, n_y, n_x]
    bands = jnp.zeros((*blurred.shape[:2], n_y, w), blurred.dtype)  # [C, gy, n_y, W]
    for b, s in enumerate(col_starts):
        bands = bands.at[..., s : s + n_x].add(blurred[:, :, b])
    out = jnp.zeros((images.shape[0], h, w), blurred.dtype)
    for a, s in enumerate(row_starts):
        out = out.at[:, s : s + n_y].add(bands[:, a])
    return out


# --------------------------------------------------------------------------------------------
# The simulator


def synthesize_satellite_video(
    key: jax.Array,
    frames: jnp.ndarray,
    params: SatelliteParams,
    settings: SatelliteSettings = SatelliteSettings(),
    *,
    num_frames: int | None = None,
) -> Degradation:
    """Degrade a clip [T, H, W, C] (or a still [H, W, C] repeated ``num_frames`` times) as a satellite
    video through the layered atmosphere of ``params`` (module doc).

    Returns a ``Degradation`` leading with T: clean, tilt_only, blur_only, degraded [T, H, W, C];
    tilt_field [T, H, W, 2] (px, warp convention); blur_width [T, H, W] (sharpness-equivalent FWHM
    of the local tilt-removed, pixel-integrated PSF, px: :func:`equivalent_width`); ``optics``;
    ``atmosphere`` (the ``LayerAtmosphere``, not an ``Atmosphere``: the layers are the model);
    ``exposure_time`` = 0 (each frame is an instantaneous short exposure: the screens are frozen
    during it, valid while wind x exposure << r0, i.e. exposures below a few ms).

    Raises ValueError for a wrong image rank/dtype, parameters outside the seed's ranges (r0, wind,
    orbit, noise; on concrete values) or a sampling that cannot hold the pupil or resolve r0.
    """
    frames = as_clip(frames, num_frames)
    h, w = frames.shape[1:3]
    if min(h, w) <= settings.psf_size // 2:
        raise ValueError(f"frame height and width must exceed psf_size / 2 = {settings.psf_size // 2}; got {h}x{w}.")
    check_satellite_params(params)
    _check_sampling(params, settings)
    if settings.screen_size is None:
        settings = dataclasses.replace(settings, screen_size=required_screen_size(params, (h, w), settings))
    elif is_concrete(params):
        need = required_screen_size(params, (h, w), settings)
        if settings.screen_size < need:
            raise ValueError(
                f"settings.screen_size={settings.screen_size} does not hold every footprint; need >= {need}."
            )
    return _simulate(key, frames, params, settings)


@functools.partial(jax.jit, static_argnames=("settings",))
def _simulate(key: jax.Array, frames: jnp.ndarray, params: SatelliteParams, settings: SatelliteSettings) -> Degradation:
    t_count, h, w, c = frames.shape
    n_s, n_w, k = settings.screen_size, settings.pupil_window, settings.psf_size
    dtype = frames.dtype
    atmosphere = params.atmosphere
    ifov = params.optics.ifov
    dx = pupil_sample_spacing(params, settings)
    mask = circular_pupil(n_w, params.optics.aperture / dx).astype(dtype)
    kernels = ztilt_kernels(mask)[1:]  # [2, n_w, n_w]: x and y slope, rad/sample per rad
    kernel_otf = jnp.conj(jnp.fft.rfft2(jnp.pad(kernels, ((0, 0), (0, n_s - n_w), (0, n_s - n_w)))))

    # Footprint origins (pupil samples): the window of field angle theta starts at base + h theta / dx.
    base = n_s / 2.0 - n_w / 2.0
    per_px = atmosphere.altitude * ifov / dx  # [L] samples of footprint shift per pixel of field
    rows = jnp.arange(h, dtype=dtype) - (h - 1) / 2.0
    cols = jnp.arange(w, dtype=dtype) - (w - 1) / 2.0
    grid = settings.grid
    py = jnp.asarray(field_point_positions(h, grid) - (h - 1) / 2.0, dtype)
    px = jnp.asarray(field_point_positions(w, grid) - (w - 1) / 2.0, dtype)
    fy, fx = jnp.meshgrid(py, px, indexing="ij")
    field_yx = jnp.stack([fy.ravel(), fx.ravel()], axis=-1)  # [J, 2] px from the centre
    starts = jnp.round(base + field_yx[:, None, :] * per_px[None, :, None]).astype(jnp.int32)  # [J, L, 2]
    wy, wx = blend_weights(h, grid).astype(dtype), blend_weights(w, grid).astype(dtype)  # [grid, H], [grid, W]

    k_init, k_steps, k_noise = jax.random.split(key, 3)
    state = layer_screens_init(
        k_init,
        atmosphere,
        n_s,
        dx,
        dt=params.frame_interval,
        alpha=settings.alpha,
        subharmonics=settings.subharmonic_levels > 0,
        levels=settings.subharmonic_levels,
    )
    pad = k // 2

    def frame(state, inputs):
        k_step, k_frame_noise, clean = inputs
        screens = jax.vmap(ar_screen_phase)(state).astype(dtype)  # [L, n_s, n_s]
        # Per-pixel Z-tilt: tilt maps of every layer, read at each pixel's footprint.
        maps = jnp.fft.irfft2(jnp.fft.rfft2(screens)[:, None] * kernel_otf[None], s=(n_s, n_s))  # [L, 2, n_s, n_s]

        def layer_tilt(layer_maps, shift):
            r, cc = base + rows * shift, base + cols * shift
            return jax.vmap(lambda m: _bilinear_rows_cols(m, r, cc))(layer_maps)  # [2, H, W]

        slope = jnp.sum(jax.vmap(layer_tilt)(maps, per_px), axis=0)  # [2 (x, y), H, W]
        shift = _shift_px(jnp.moveaxis(slope, 0, -1), settings)  # [H, W, 2] (dx, dy) content displacement
        tilt_field = -shift

        # Field-point PSFs from the tilt-removed pupil phase.
        def pupil_phase(starts_j):
            windows = jax.vmap(lambda s, o: jax.lax.dynamic_slice(s, (o[0], o[1]), (n_w, n_w)))(screens, starts_j)
            return jnp.sum(windows, axis=0)

        phases = jax.vmap(pupil_phase)(starts)  # [J, n_w, n_w]
        residual = remove_piston_tilt(phases, mask)
        psfs = jax.vmap(lambda p: pupil_psf(p, mask, settings))(residual)  # [J, K, K]
        widths = equivalent_width(psfs)  # [J]
        blur_width = jnp.einsum("ah,ab,bw->hw", wy, widths.reshape(grid, grid), wx)

        tilt_only = warp(clean, tilt_field)
        both = jnp.concatenate([tilt_only, clean], axis=-1)
        blurred = jnp.moveaxis(_blur_blend(jnp.moveaxis(both, -1, 0), psfs, wy, wx, pad), 0, -1)
        degraded, blur_only = blurred[..., :c], blurred[..., c:]
        if settings.noise:
            degraded = degraded + params.noise_sigma * jax.random.normal(k_frame_noise, degraded.shape, dtype)
        out = (
            tilt_only,
            jnp.clip(blur_only, 0.0, 1.0),
            jnp.clip(degraded, 0.0, 1.0),
            tilt_field,
            blur_width,
        )
        return jax.vmap(ar_screen_step)(jax.random.split(k_step, atmosphere.num_layers), state), out

    inputs = (jax.random.split(k_steps, t_count), jax.random.split(k_noise, t_count), frames)
    _, (tilt_only, blur_only, degraded, tilt_field, blur_width) = jax.lax.scan(frame, state, inputs)
    return Degradation(
        clean=frames,
        tilt_only=tilt_only,
        blur_only=blur_only,
        degraded=degraded,
        tilt_field=tilt_field,
        blur_width=blur_width,
        optics=params.optics,
        atmosphere=atmosphere,
        exposure_time=jnp.zeros((), dtype),
    )
