"""Modulation transfer functions of optics + turbulence, PSFs from MTFs, FWHM.

Frequencies given to the public MTF functions are in cycles/pixel and are converted to
angular frequency nu (cycles/rad) with the pixel's field of view: nu = freq / ifov. Then
lambda * nu is a length in the pupil, which is what every turbulence MTF compares with r0
and D.

Exposure-time MTF (ET-MTF). The ET-Turb paper adopts Azoulay's finite-exposure idea: during
an exposure tau the frozen turbulence sweeps the aperture, which then acts like an
effective aperture D_eff = D + v_w tau for the tilt removal of Fried's short-exposure MTF:

    MTF_ET(nu, tau) = exp(-3.44 (lambda nu / r0)^(5/3) [1 - alpha (lambda nu / D_eff)^(1/3)])

This is dimensionally consistent, equals MTF_SE at tau = 0, tends to MTF_LE as tau -> inf and
is non-increasing in tau at every frequency (the bracket grows with D_eff). It is the
default (``form="consistent"``). The paper's printed eq. 8-9,
``exp(-(lambda nu / rho_p)^(5/3))`` with ``rho_p = 1 + 0.35 (r0 / (D + v tau))^(1/3)``,
divides a length (lambda nu, m) by a dimensionless rho_p and reaches neither limit; it is
kept as ``form="paper"`` (SI units, nu in cycles/rad) only to reproduce the printed
formula. With Table-1 parameters it is ~1 at all sampled frequencies, i.e. almost no blur.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np

from turbjax.physics.optics import Atmosphere, Optics, Wave, fried_parameter

MtfForm = Literal["consistent", "paper"]

FRIED_MTF_CONSTANT = 3.44  # MTF_LE = exp(-3.44 (lambda nu / r0)^(5/3))
DEFAULT_ALPHA = 1.0  # near field (D > sqrt(lambda L) for every Table-1 path); 0.5 far field


def safe_power(x: jnp.ndarray, p: float) -> jnp.ndarray:
    """x^p for x >= 0 with a finite gradient at x = 0 (zero there for p > 0)."""
    positive = x > 0
    return jnp.where(positive, jnp.where(positive, x, 1.0) ** p, 0.0)


def safe_sqrt(x: jnp.ndarray) -> jnp.ndarray:
    """sqrt(max(x, 0)) with a zero (not infinite) gradient at 0."""
    return safe_power(jnp.maximum(x, 0.0), 0.5)


def frequency_grid(n: int, m: int | None = None) -> jnp.ndarray:
    """Radial frequency |f| (cycles/pixel) on the ``fft2`` grid of an n x m array."""
    fy = jnp.fft.fftfreq(n)[:, None]
    fx = jnp.fft.fftfreq(n if m is None else m)[None, :]
    return jnp.sqrt(fy**2 + fx**2)


def rfrequency_grid(n: int, m: int) -> jnp.ndarray:
    """Radial frequency |f| (cycles/pixel) on the ``rfft2`` grid of an n x m array."""
    fy = jnp.fft.fftfreq(n)[:, None]
    fx = jnp.fft.rfftfreq(m)[None, :]
    return jnp.sqrt(fy**2 + fx**2)


def rfft_weights(n: int) -> np.ndarray:
    """Multiplicity in the full spectrum of each ``rfft`` column of an n-point axis: 1 for DC
    (and Nyquist when n is even), 2 for the others, whose conjugates the half plane omits."""
    weights = np.full(n // 2 + 1, 2.0, np.float32)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return weights


def angular_frequency(freq: jnp.ndarray, optics: Optics) -> jnp.ndarray:
    """Convert cycles/pixel to cycles/rad."""
    return jnp.asarray(freq) / optics.ifov


def diffraction_mtf_rad(nu: jnp.ndarray, wavelength, aperture) -> jnp.ndarray:
    """Diffraction MTF of a clear circular aperture at angular frequency nu (cycles/rad)."""
    x = jnp.asarray(wavelength) * nu / jnp.asarray(aperture)
    inside = x < 1.0
    xs = jnp.where(inside, x, 0.0)  # keeps arccos' infinite slope at x = 1 out of gradients
    return jnp.where(inside, (2.0 / jnp.pi) * (jnp.arccos(xs) - xs * safe_sqrt(1.0 - xs**2)), 0.0)


def diffraction_mtf(freq: jnp.ndarray, optics: Optics) -> jnp.ndarray:
    """Diffraction MTF of the camera's circular aperture; ``freq`` in cycles/pixel."""
    return diffraction_mtf_rad(angular_frequency(freq, optics), optics.wavelength, optics.aperture)


def exposure_mtf_rad(nu: jnp.ndarray, wavelength, r0, effective_aperture, alpha: float = DEFAULT_ALPHA) -> jnp.ndarray:
    """Atmospheric MTF with Fried's tilt-removal term over an effective aperture.

    ``effective_aperture`` = D gives MTF_SE, D + v tau the ET-MTF, infinity MTF_LE.
    ``nu`` in cycles/rad, lengths in m. The bracket is clipped at 0 (it would turn negative
    only beyond the diffraction cut-off of the effective aperture).
    """
    lam_nu = jnp.asarray(wavelength) * nu
    structure = FRIED_MTF_CONSTANT * safe_power(lam_nu / jnp.asarray(r0), 5.0 / 3.0)
    bracket = 1.0 - alpha * safe_power(lam_nu / jnp.asarray(effective_aperture), 1.0 / 3.0)
    return jnp.exp(-structure * jnp.clip(bracket, 0.0, 1.0))


def _with_diffraction(mtf: jnp.ndarray, freq, optics: Optics, include: bool) -> jnp.ndarray:
    return mtf * diffraction_mtf(freq, optics) if include else mtf


def mtf_long_exposure(
    freq: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    *,
    wave: Wave = "spherical",
    include_diffraction: bool = False,
) -> jnp.ndarray:
    """Fried's long-exposure MTF exp(-3.44 (lambda nu / r0)^(5/3)); ``freq`` in cycles/pixel.

    The seed's eq. 6 is the same law written with Cn2: 57.4 a Cn2 L lambda^(-1/3) nu^(5/3),
    57.4 = 3.44 * 0.423 * 4 pi^2 and a = 1 (plane) or 3/8 (spherical).
    """
    nu = angular_frequency(freq, optics)
    r0 = fried_parameter(optics, atmosphere, wave)
    lam_nu = jnp.asarray(optics.wavelength) * nu
    mtf = jnp.exp(-FRIED_MTF_CONSTANT * safe_power(lam_nu / r0, 5.0 / 3.0))
    return _with_diffraction(mtf, freq, optics, include_diffraction)


def mtf_short_exposure(
    freq: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    *,
    wave: Wave = "spherical",
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = False,
) -> jnp.ndarray:
    """Fried's short-exposure (tilt-removed) MTF; ``freq`` in cycles/pixel.

    alpha = 1 in the near field (D^2 >> lambda L), 0.5 in the far field.
    """
    nu = angular_frequency(freq, optics)
    r0 = fried_parameter(optics, atmosphere, wave)
    mtf = exposure_mtf_rad(nu, optics.wavelength, r0, optics.aperture, alpha)
    return _with_diffraction(mtf, freq, optics, include_diffraction)


def effective_aperture(optics: Optics, atmosphere: Atmosphere, exposure_time) -> jnp.ndarray:
    """Azoulay's effective aperture D + v_w tau (m); ``exposure_time`` in s."""
    return optics.aperture + jnp.asarray(atmosphere.wind_speed) * jnp.asarray(exposure_time)


def mtf_exposure(
    freq: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    exposure_time,
    *,
    form: MtfForm = "consistent",
    wave: Wave = "spherical",
    alpha: float = DEFAULT_ALPHA,
    include_diffraction: bool = False,
) -> jnp.ndarray:
    """Exposure-time MTF (ET-MTF) for an exposure of ``exposure_time`` seconds.

    ``freq`` in cycles/pixel. See the module docstring for the two forms.
    """
    nu = angular_frequency(freq, optics)
    r0 = fried_parameter(optics, atmosphere, wave)
    d_eff = effective_aperture(optics, atmosphere, exposure_time)
    if form == "consistent":
        mtf = exposure_mtf_rad(nu, optics.wavelength, r0, d_eff, alpha)
    elif form == "paper":
        rho_p = 1.0 + 0.35 * (r0 / d_eff) ** (1.0 / 3.0)
        mtf = jnp.exp(-safe_power(jnp.asarray(optics.wavelength) * nu / rho_p, 5.0 / 3.0))
    else:
        raise ValueError(f"form must be 'consistent' or 'paper'; got {form!r}.")
    return _with_diffraction(mtf, freq, optics, include_diffraction)


def psf_from_mtf(mtf: jnp.ndarray) -> jnp.ndarray:
    """Real, non-negative, unit-sum, centred (tilt-free) PSF from an MTF.

    ``mtf`` [..., n, m] is sampled on the ``fft2`` frequency grid (see :func:`frequency_grid`)
    and taken as a zero-phase OTF, so the kernel is symmetric about index (n // 2, m // 2)
    (use odd n, m for an exactly symmetric kernel). The small negative ringing of a truncated
    spectrum is clipped before normalising.
    """
    kernel = jnp.real(jnp.fft.ifft2(mtf))
    kernel = jnp.fft.fftshift(kernel, axes=(-2, -1))
    kernel = jnp.maximum(kernel, 0.0)
    return kernel / jnp.sum(kernel, axis=(-2, -1), keepdims=True)


def _fourier_upsample(profile: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Band-limited (periodic sinc) interpolation of a 1-D profile by an integer factor."""
    n = profile.shape[-1]
    total = n * factor
    spectrum = jnp.fft.fftshift(jnp.fft.fft(profile))  # zero frequency at index n // 2
    if n % 2 == 0:  # split the unpaired Nyquist bin between -/+ Nyquist
        spectrum = spectrum.at[0].multiply(0.5)
        spectrum = jnp.concatenate([spectrum, spectrum[:1]])
    left = total // 2 - n // 2
    padded = jnp.pad(spectrum, (left, total - left - spectrum.shape[0]))
    return jnp.real(jnp.fft.ifft(jnp.fft.ifftshift(padded))) * factor


def _half_width(profile: jnp.ndarray, centre: int, step: float) -> jnp.ndarray:
    """Distance from ``centre`` to the first half-maximum crossing on the right (linear)."""
    half = 0.5 * profile[centre]
    right = profile[centre:]
    below = right < half
    i = jnp.argmax(below)
    i = jnp.maximum(i, 1)
    p0, p1 = right[i - 1], right[i]
    frac = (p0 - half) / jnp.where(p0 - p1 == 0, 1.0, p0 - p1)
    return (i - 1 + frac) * step


def fwhm(psf: jnp.ndarray, upsample: int = 16) -> jnp.ndarray:
    """Full width at half maximum (pixels) of a centred 2-D PSF [n, m].

    The row and column through the peak are interpolated band-limitedly (zero-padded FFT,
    ``upsample`` times finer), the half-maximum crossings found by linear interpolation on
    both sides, and the four half-widths averaged.
    """
    psf = jnp.asarray(psf)
    n, m = psf.shape[-2:]
    flat_peak = jnp.argmax(psf)
    cy, cx = flat_peak // m, flat_peak % m
    row = jnp.roll(psf[cy], m // 2 - cx)
    col = jnp.roll(psf[:, cx], n // 2 - cy)
    widths = []
    for profile, size in ((row, m), (col, n)):
        fine = _fourier_upsample(profile, upsample)
        c = (size // 2) * upsample
        step = 1.0 / upsample
        widths.append(_half_width(fine, c, step))
        widths.append(_half_width(fine[::-1], fine.shape[0] - 1 - c, step))
    return sum(widths) / 2.0
