"""The ET-Turb frame pipeline written plainly with NumPy/SciPy: the benchmark's baseline.

Same physics and algorithm as ``turbjax.physics.synthesize_frame`` (a curl-free tilt field by
circulant embedding of the tapered path-averaged Chanan trace covariance, bilinear warp, low-pass blur-width
field, a bank of FWHM-matched ET PSFs applied by FFT and blended per pixel in width), one frame
at a time, float64, with ``scipy.fft`` on all cores. Only the precomputed correlation table is
shared with turbjax.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage, optimize

from turbjax.physics.tilt import path_table

FRIED, ZTILT = 0.423, 0.1822


def _r0(lam, cn2, dist):
    return (FRIED * (2 * np.pi / lam) ** 2 * cn2 * dist * 3 / 8) ** (-0.6)


def _theta0(lam, cn2, dist):
    from math import gamma

    beta = gamma(8 / 3) ** 2 / gamma(16 / 3)
    return (2.914 * (2 * np.pi / lam) ** 2 * cn2 * dist ** (8 / 3) * beta) ** (-0.6)


def _correlations(u, log_u, par, perp):
    lu = np.log(np.clip(u, np.exp(log_u[0]), np.exp(log_u[-1])))
    return np.interp(lu, log_u, par), np.interp(lu, log_u, perp)


def tilt_field(rng, n, lam, focal, fnum, pitch, cn2, dist, factor=3.0):
    """Curl-free tilt field [n, n, 2] (px) from the embedded trace covariance."""
    d = focal / fnum
    var = ZTILT * lam**2 * d ** (-1 / 3) * _r0(lam, cn2, dist) ** (-5 / 3) * (focal / pitch) ** 2
    u_px = pitch / focal * dist / d
    m = int(np.ceil(factor * n))
    m += m % 2
    log_u, par_t, perp_t = path_table("spherical")
    lag = np.fft.fftfreq(m) * m
    r = np.hypot(lag[:, None], lag[None, :])
    r1, r2 = float(n), m / 2
    x = np.clip((r - r1) / (r2 - r1), 0, 1)
    w = 0.5 * (1 + np.cos(np.pi * x))
    r_eff = np.where(r <= r1, r, r1 + (r2 - r1) * (x / 2 + np.sin(np.pi * x) / (2 * np.pi)))
    par, perp = _correlations(r_eff * u_px, log_u, par_t, perp_t)
    par = np.where(r > 0, perp + r * w / np.where(r > 0, r_eff, 1) * (par - perp), 1.0)
    trace = var * (par + perp)
    plateau = trace[m // 2, m // 2]
    spectrum = fft.rfft2(trace - plateau, workers=-1).real
    spectrum[0, 0] += plateau * m * m
    root = np.sqrt(np.maximum(spectrum, 0.0))
    ky, kx = np.fft.fftfreq(m)[:, None], np.fft.rfftfreq(m)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0
    amp_x, amp_y = root * kx / k, root * ky / k
    amp_x[0, 0] = amp_y[0, 0] = 0.0
    weights = np.full(m // 2 + 1, 2.0)
    weights[[0, -1]] = 1
    dc_var = 0.5 * max(spectrum[0, 0], 0.0) / m**2
    amp_x *= np.sqrt(var / (np.sum(weights * amp_x**2) / m**2 + dc_var))
    amp_y *= np.sqrt(var / (np.sum(weights * amp_y**2) / m**2 + dc_var))
    noise = (rng.standard_normal((m, m // 2 + 1)) + 1j * rng.standard_normal((m, m // 2 + 1))) / np.sqrt(2)
    noise *= m * np.sqrt(2 / weights)[None, :]
    offset = np.sqrt(dc_var) * rng.standard_normal(2)
    fx = fft.irfft2(amp_x * noise, s=(m, m), workers=-1)[:n, :n] + offset[0]
    fy = fft.irfft2(amp_y * noise, s=(m, m), workers=-1)[:n, :n] + offset[1]
    return np.stack([fx, fy], -1)


def blur_stats(lam, focal, fnum, pitch, cn2, dist, wind, tau):
    d = focal / fnum
    r0 = _r0(lam, cn2, dist)
    sweep = wind * tau / d
    x = (d / r0) ** (5 / 3)
    mean = 2.44 * lam / d * np.sqrt(1 + 0.268 * x + 1.792 * x * sweep**0.607 / (sweep**0.607 + 6.97**0.607))
    std = 1.70 * r0 ** (1 / 3) / lam * np.sqrt(d * cn2 * dist) * np.sqrt(4.45) / (np.sqrt(sweep) + np.sqrt(4.45))
    scale = 1.03 / 2.44 * focal / pitch
    return mean * scale, std * lam / d * scale


def width_field(rng, n, mean, std, corr, eps=0.1):
    white = rng.standard_normal((n + 64, n + 64))
    kernel_1d = np.exp(-0.5 * (np.arange(-32, 33) / corr) ** 2)
    kernel_1d /= kernel_1d.sum()
    field = ndimage.gaussian_filter(white, corr, mode="wrap", truncate=32 / corr)[:n, :n]
    return np.maximum(eps, mean + std * field / np.sqrt(np.sum(kernel_1d**2) ** 2))


def _mtf(freq, lam, focal, fnum, pitch, r0, d_eff):
    d = focal / fnum
    lam_nu = lam * freq * focal / pitch
    bracket = np.clip(1 - (lam_nu / d_eff) ** (1 / 3), 0, 1)
    x = np.clip(lam_nu / d, 0, 1)
    diffraction = (2 / np.pi) * (np.arccos(x) - x * np.sqrt(1 - x**2))
    return np.exp(-3.44 * (lam_nu / r0) ** (5 / 3) * bracket) * diffraction


def _fwhm(width, mtf):
    f = min(0.5, 5 / width) * np.linspace(0, 1, 64)
    trap = np.ones(64)
    trap[[0, -1]] = 0.5
    profile_weights = (mtf(np.hypot(f[:, None], f[None, :])) @ trap) * trap
    x = np.linspace(0, width, 257)
    profile = profile_weights @ np.cos(2 * np.pi * f[:, None] * x[None, :])
    return 2 * np.interp(0.5, (profile / profile[0])[::-1], x[::-1])


def varying_blur(image, widths, lam, focal, fnum, pitch, wind, tau, k=6, pad=32):
    d_eff = focal / fnum + wind * tau
    bank_widths = np.geomspace(widths.min(), widths.max(), k)
    h, w, _ = image.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    freq = np.hypot(np.fft.fftfreq(hp)[:, None], np.fft.rfftfreq(wp)[None, :])
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    spectrum = fft.rfft2(padded, axes=(0, 1), workers=-1)
    bank = []
    for width in bank_widths:

        def gap(log_r0, width=width):
            return _fwhm(width, lambda f: _mtf(f, lam, focal, fnum, pitch, np.exp(log_r0), d_eff)) - width

        try:
            log_r0 = optimize.brentq(gap, np.log(1e-5), np.log(1e2), xtol=1e-4)
        except ValueError:  # below the sharpest PSF available
            log_r0 = np.log(1e2)
        otf = _mtf(freq, lam, focal, fnum, pitch, np.exp(log_r0), d_eff)
        bank.append(fft.irfft2(spectrum * otf[..., None], s=(hp, wp), axes=(0, 1), workers=-1)[pad:-pad, pad:-pad])
    bank = np.stack(bank)
    log_span = max(np.log(bank_widths[-1] / bank_widths[0]), 1e-12)
    position = np.clip(np.log(widths / bank_widths[0]) / log_span * (k - 1), 0, k - 1)
    lower = np.clip(np.floor(position).astype(int), 0, k - 2)
    frac = (position - lower)[..., None]
    below = np.take_along_axis(bank, lower[None, ..., None], 0)[0]
    above = np.take_along_axis(bank, lower[None, ..., None] + 1, 0)[0]
    return (1 - frac) * below + frac * above


def synthesize_frame(rng, image, lam, focal, fnum, pitch, cn2, dist, wind, tau, num_psfs=6, pad=32):
    """Degraded and blur-only frames of ``image`` [N, N, 3] for one parameter set (SI units)."""
    n = image.shape[0]
    field = tilt_field(rng, n, lam, focal, fnum, pitch, cn2, dist)
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    coords = [np.clip(yy + field[..., 1], 0, n - 1), np.clip(xx + field[..., 0], 0, n - 1)]
    tilted = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1) for c in range(3)], -1)
    mean, std = blur_stats(lam, focal, fnum, pitch, cn2, dist, wind, tau)
    corr = float(np.clip(_theta0(lam, cn2, dist) * focal / pitch, 1.0, 16.0))
    widths = width_field(rng, n, mean, std, corr)
    both = varying_blur(np.concatenate([tilted, image], -1), widths, lam, focal, fnum, pitch, wind, tau, num_psfs, pad)
    return np.clip(both[..., :3], 0, 1), np.clip(both[..., 3:], 0, 1), field, widths
