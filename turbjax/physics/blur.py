"""Blur-width statistics, the spatially varying blur-width field, and spatially varying blur.

Blur width is the FWHM of the local tilt-free PSF, in pixels.

Statistics (ET-Turb eq. 14-15). The mean width eq. 14 is an angle: 2.44 lambda / D (the Airy
diameter, first null to first null) times a turbulence factor; it is converted to pixels by
focal_length / pixel_pitch. Read as a FWHM it would be 2.4x too wide: in the diffraction
limit the FWHM is 1.03 lambda / D, and in long exposure eq. 14 is 2.4-2.6x Fried's seeing FWHM
0.98 lambda / r0 for D/r0 = 2-10, which would also break the physical ratio of blur to tilt.
So ``definition="fwhm"`` (default) scales eq. 14-15 by 1.03 / 2.44 (exact at the diffraction
limit, within 15% of the seeing FWHM in long exposure); ``definition="paper"`` returns eq.
14-15 as printed (Airy-diameter units) for reproduction.

Eq. 15 as printed, 1.70 r0^(1/3) / lambda (D Cn2 L)^(1/2) x (...), is dimensionless
(m^(1/3) m^(-1) m^(2/3)); we read it in units of lambda / D, the natural unit of eq. 14 (it
then scales as (D/r0)^(1/2) lambda / D, a relative spread that falls like
(D/r0)^(-1/3) as turbulence grows), and convert lambda / D to pixels the same way. The
exposure factors are written with v tau / D so that v = 0 (no wind: a frozen, short exposure)
is finite.

PSF of a given width. Each width w is given the ET-MTF (``turbjax.physics.mtf``) of the
physical aperture, exposure and wind with a *local* Fried parameter r0(w), found by bisection
in log r0 so that the FWHM of the sampled (band-limited) PSF equals w. Widths below
what optics and sampling can resolve (the diffraction limit when included, ~1.2 px for a
flat spectrum) saturate at the sharpest PSF available.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from turbjax.physics.mtf import (
    DEFAULT_ALPHA,
    diffraction_mtf_rad,
    effective_aperture,
    exposure_mtf_rad,
    frequency_grid,
    psf_from_mtf,
    rfft_weights,
    rfrequency_grid,
)
from turbjax.physics.optics import Atmosphere, Optics, Wave, fried_parameter, isoplanatic_angle

AIRY_DIAMETER = 2.44  # lambda / D
AIRY_FWHM = 1.03  # lambda / D

_N_F, _N_X = 64, 65  # frequency and position nodes of the FWHM quadrature
_BISECTION_STEPS = 26  # log r0 bracket of ln(1e7) = 16 halved to 2.4e-7
_R0_BOUNDS = (1e-5, 1e2)  # m


def blur_width_stats(
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    wave: Wave = "spherical",
    definition: Literal["fwhm", "paper"] = "fwhm",
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(mean, std) of the blur width in pixels for an exposure of ``exposure_time`` s.

    ``definition`` selects FWHM units (default) or eq. 14-15 as printed; see the module doc.
    """
    if definition not in ("fwhm", "paper"):
        raise ValueError(f"definition must be 'fwhm' or 'paper'; got {definition!r}.")
    scale = AIRY_FWHM / AIRY_DIAMETER if definition == "fwhm" else 1.0
    d = optics.aperture
    lam = jnp.asarray(optics.wavelength)
    r0 = fried_parameter(optics, atmosphere, wave)
    sweep = jnp.asarray(atmosphere.wind_speed) * jnp.asarray(exposure_time) / d  # v tau / D
    x = (d / r0) ** (5.0 / 3.0)
    # 1 / (1 + (6.97 D / (v tau))^0.607) written without dividing by v tau.
    long_share = sweep**0.607 / (sweep**0.607 + 6.97**0.607)
    mean_rad = AIRY_DIAMETER * lam / d * jnp.sqrt(1.0 + 0.268 * x + 1.792 * x * long_share)
    # 1 - 1 / (1 + (4.45 D / (v tau))^0.5) = sqrt(4.45) / (sqrt(v tau / D) + sqrt(4.45)).
    short_share = np.sqrt(4.45) / (jnp.sqrt(sweep) + np.sqrt(4.45))
    cn2_l = jnp.asarray(atmosphere.cn2) * jnp.asarray(atmosphere.distance)
    std_lambda_over_d = 1.70 * r0 ** (1.0 / 3.0) / lam * jnp.sqrt(d * cn2_l) * short_share
    std_rad = std_lambda_over_d * lam / d
    return scale * mean_rad / optics.ifov, scale * std_rad / optics.ifov


def blur_correlation_px(optics: Optics, atmosphere: Atmosphere, wave: Wave = "spherical") -> jnp.ndarray:
    """Default correlation length of the width field: the isoplanatic angle in pixels."""
    return isoplanatic_angle(optics, atmosphere, wave) / optics.ifov


def lowpass_unit_canvas(key: jax.Array, canvas: tuple[int, int], correlation_px) -> jnp.ndarray:
    """Periodic zero-mean Gaussian field on ``canvas`` with unit variance and Gaussian correlation.

    White noise is filtered with a Gaussian kernel of standard deviation ``correlation_px``
    (so the field's correlation is exp(-r^2 / (4 l^2))) and scaled so that the ensemble
    variance on the periodic canvas is exactly 1.
    """
    freq2 = jnp.square(rfrequency_grid(*canvas))
    gain = jnp.exp(-2.0 * jnp.pi**2 * jnp.square(jnp.asarray(correlation_px)) * freq2)
    # Mean of |G|^2 over the full (two-sided) grid from the one-sided rfft grid.
    power = jnp.sum(jnp.asarray(rfft_weights(canvas[1])) * gain**2) / (canvas[0] * canvas[1])
    noise = jax.random.normal(key, canvas)
    return jnp.fft.irfft2(jnp.fft.rfft2(noise) * gain, s=canvas) / jnp.sqrt(power)


def lowpass_unit_field(key: jax.Array, shape: tuple[int, int], correlation_px, pad: int = 64) -> jnp.ndarray:
    """[H, W] window of :func:`lowpass_unit_canvas` drawn ``pad`` pixels larger than ``shape``
    (choose pad >= 4 l so that the periodic canvas does not wrap inside the window)."""
    h, w = shape
    return lowpass_unit_canvas(key, (h + pad, w + pad), correlation_px)[:h, :w]


def blur_width_field(
    key: jax.Array,
    shape: tuple[int, int],
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    correlation_px=None,
    max_correlation_px: float = 16.0,
    eps: float = 0.1,
    wave: Wave = "spherical",
) -> jnp.ndarray:
    """Blur-width field W(x) = max(eps, mean + std R(x)) in pixels, [H, W] (ET-Turb eq. 16).

    R is a low-pass Gaussian field of unit variance; its correlation length defaults to the
    isoplanatic angle in pixels (blur decorrelates over an isoplanatic patch), clipped to
    [1, ``max_correlation_px``]. ``eps`` (pixels) keeps widths physical.
    """
    mean, std = blur_width_stats(optics, atmosphere, exposure_time, wave)
    if correlation_px is None:
        correlation_px = blur_correlation_px(optics, atmosphere, wave)
    corr = jnp.clip(correlation_px, 1.0, max_correlation_px)
    r = lowpass_unit_field(key, shape, corr, pad=int(4 * max_correlation_px))
    return jnp.maximum(eps, mean + std * r)


def bandlimited_fwhm(mtf_of_freq, width: jnp.ndarray) -> jnp.ndarray:
    """FWHM (pixels) of the sampled PSF of a radial MTF given as a function of cycles/pixel.

    The PSF that blurs a sampled image is band-limited to the square [-1/2, 1/2]^2
    cycles/pixel, so its profile along x is p(x) = 4 Int_0^s Int_0^s MTF(|f|) cos(2 pi f_x x)
    df_y df_x with s = min(1/2, 5 / width) (beyond 5 / width every ET-MTF of FWHM ~ width is
    below 1e-6). This is exactly what :func:`turbjax.physics.fwhm` measures on the kernel of
    :func:`turbjax.physics.psf_from_mtf`. ``width`` sets the grids (x up to ``width``): FWHMs
    beyond 2 x width are reported as 4 x width.
    """
    span = jnp.minimum(0.5, 5.0 / width)
    unit = np.linspace(0.0, 1.0, _N_F, dtype=np.float32)
    f = span * unit
    trap = jnp.full(_N_F, 1.0).at[jnp.array([0, _N_F - 1])].set(0.5)
    radius = np.sqrt(unit[:, None] ** 2 + unit[None, :] ** 2)  # constant: no sqrt'(0) in grads
    mtf = mtf_of_freq(span * radius)
    profile_weights = (mtf @ trap) * trap  # integrate over f_y; trapezoid weights of f_x
    t = jnp.linspace(0.0, 1.0, _N_X)
    x = width * t
    profile = profile_weights @ jnp.cos(2.0 * jnp.pi * f[:, None] * x[None, :])
    profile = profile / profile[0]
    i = jnp.clip(jnp.argmax(profile < 0.5), 1, _N_X - 1)
    p0, p1 = profile[i - 1], profile[i]
    frac = (p0 - 0.5) / jnp.where(p0 == p1, 1.0, p0 - p1)
    estimate = 2.0 * (t[i - 1] + frac * (t[1] - t[0])) * width
    # A profile still above half maximum at x = width has FWHM > 2 width: say "wider" (the
    # inversion only needs the side of the root there), never an interpolation artefact.
    return jnp.where(jnp.any(profile < 0.5), estimate, 4.0 * width)


def width_mtf_fn(
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = True,
):
    """Returns ``mtf(freq_cycles_per_pixel, r0)``: the ET-MTF family of the widths."""
    d_eff = effective_aperture(optics, atmosphere, exposure_time)

    def mtf(freq, r0):
        nu = freq / optics.ifov
        out = exposure_mtf_rad(nu, optics.wavelength, r0, d_eff, alpha)
        if include_diffraction:
            out = out * diffraction_mtf_rad(nu, optics.wavelength, optics.aperture)
        return out

    return mtf


def local_fried_parameter(
    width_px: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = True,
) -> jnp.ndarray:
    """Local r0 (m) whose ET PSF has FWHM ``width_px`` (scalar).

    The FWHM falls monotonically with r0, so bisection in log r0 over ``_R0_BOUNDS`` brackets the
    root whatever the optics (an unsafeguarded Newton iteration oscillated where the band-limited
    FWHM estimate leaves its grid, FWHM > 2 x width). The value is the bisection midpoint
    (log r0 to ~1e-6); its gradient is that of the implicit function, -(dF/dtheta) / (dF/dlog r0)
    at the root, attached with a zero-valued Newton step. Widths below the diffraction floor give
    the upper bound.
    """
    mtf = width_mtf_fn(optics, atmosphere, exposure_time, alpha=alpha, include_diffraction=include_diffraction)
    width = jnp.asarray(width_px, jnp.float32)
    log_w = jnp.log(width)

    def log_fwhm(log_r):
        return jnp.log(bandlimited_fwhm(lambda f: mtf(f, jnp.exp(log_r)), width))

    def bisect(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        too_wide = log_fwhm(mid) > log_w  # r0 too small
        return jnp.where(too_wide, mid, lo), jnp.where(too_wide, hi, mid)

    bounds = (jnp.full_like(log_w, np.log(_R0_BOUNDS[0])), jnp.full_like(log_w, np.log(_R0_BOUNDS[1])))
    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, jax.lax.stop_gradient(bounds))
    log_r0 = jax.lax.stop_gradient(0.5 * (lo + hi))
    value, slope = jax.jvp(log_fwhm, (log_r0,), (jnp.ones_like(log_r0),))
    # No root below the diffraction floor (r0 pinned at the bound): no gradient there. Just above
    # it the FWHM hardly moves with r0 (slope -> 0) and r0(w) is steep: keep that, bar a 0 divide.
    at_root = jnp.abs(value - log_w) < 1e-3
    step = jnp.where(at_root, -(value - log_w) / jnp.minimum(slope, -1e-4), 0.0)
    return jnp.exp(log_r0 + step - jax.lax.stop_gradient(step))


def psf_for_width(
    width_px,
    size: int,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = True,
) -> jnp.ndarray:
    """Tilt-free ET PSF [size, size] (odd size recommended) whose FWHM is ``width_px``."""
    kwargs = dict(alpha=alpha, include_diffraction=include_diffraction)
    r0 = local_fried_parameter(width_px, optics, atmosphere, exposure_time, **kwargs)
    mtf = width_mtf_fn(optics, atmosphere, exposure_time, **kwargs)
    return psf_from_mtf(mtf(frequency_grid(size), r0))


def spatially_varying_blur(
    image: jnp.ndarray,
    width_field: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    num_psfs: int = 6,
    pad: int = 32,
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = True,
) -> jnp.ndarray:
    """Blur every pixel of ``image`` [..., H, W, C] by the ET PSF of its own width [..., H, W] (px).

    A bank of ``num_psfs`` PSFs with FWHMs spanning [min W, max W] evenly in log W is applied by
    FFT (the image is reflect-padded by ``pad`` pixels, and the zero-phase OTF is the ET-MTF
    sampled on the padded grid, so the kernels are not truncated), and each output pixel
    interpolates, linearly in log W, between the two bank images that bracket its W(x). The
    effective kernel at x is therefore the width-interpolated PSF of W(x) (a gather-form,
    output-indexed spatially varying convolution).
    """
    if image.ndim > 3:  # leading axes: one bank per frame
        if width_field.shape != image.shape[:-1]:
            raise ValueError(f"width_field must have shape {image.shape[:-1]}; got {width_field.shape}.")
        return jax.vmap(
            lambda im, wf: spatially_varying_blur(
                im,
                wf,
                optics,
                atmosphere,
                exposure_time,
                num_psfs=num_psfs,
                pad=pad,
                alpha=alpha,
                include_diffraction=include_diffraction,
            )
        )(image, width_field)
    if num_psfs < 2:
        raise ValueError(f"num_psfs must be >= 2; got {num_psfs}.")
    h, w = image.shape[-3:-1]
    if width_field.shape != (h, w):
        raise ValueError(f"width_field must have shape {(h, w)}; got {width_field.shape}.")
    if min(h, w) <= pad:
        raise ValueError(f"image height and width must exceed pad={pad} (reflect padding); got {h}x{w}.")
    kwargs = dict(alpha=alpha, include_diffraction=include_diffraction)
    # Bank spaced evenly in log width: a PSF changes by a similar amount per step at every width.
    log_w = jnp.log(width_field)
    log_min, log_max = jnp.min(log_w), jnp.max(log_w)
    bank_widths = jnp.exp(jnp.linspace(log_min, log_max, num_psfs))
    r0s = jax.vmap(lambda wd: local_fried_parameter(wd, optics, atmosphere, exposure_time, **kwargs))(bank_widths)
    mtf = width_mtf_fn(optics, atmosphere, exposure_time, **kwargs)
    canvas = (h + 2 * pad, w + 2 * pad)
    freq = rfrequency_grid(*canvas)
    otfs = jax.vmap(lambda r0: mtf(freq, r0))(r0s)  # [K, Hp, Wp//2+1]
    # Channels first: FFTs over the two trailing, contiguous axes are far faster on CPU.
    padded = jnp.pad(jnp.moveaxis(image, -1, 0), ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    spectrum = jnp.fft.rfft2(padded)  # [C, Hp, Wp//2+1]
    bank = jnp.fft.irfft2(otfs[:, None] * spectrum[None], s=canvas)  # [K, C, Hp, Wp]
    bank = bank[:, :, pad : pad + h, pad : pad + w]
    span = jnp.where(log_max > log_min, log_max - log_min, 1.0)
    position = jnp.clip((log_w - log_min) / span * (num_psfs - 1), 0.0, num_psfs - 1.0)
    lower = jnp.clip(jnp.floor(position), 0, num_psfs - 2).astype(jnp.int32)
    frac = position - lower
    below = jnp.take_along_axis(bank, lower[None, None], axis=0)[0]
    above = jnp.take_along_axis(bank, lower[None, None] + 1, axis=0)[0]
    return jnp.moveaxis((1.0 - frac) * below + frac * above, 0, -1)
