"""Spatially correlated tilt (angle-of-arrival) fields for anisoplanatic imaging.

Per-axis variance. The Zernike (Z-) tilt of a Kolmogorov wavefront over an aperture D has,
per axis, 0.1822 lambda^2 D^(-1/3) r0^(-5/3) rad^2 (Noll's <a2^2> = 0.4496 (D/r0)^(5/3)).
With the spherical-wave r0 this is the path integral 3.04 D^(-1/3) Int Cn2 (z/L)^(5/3) dz.

Correlation between two image points. For one thin layer, Chanan (1992) gives the Z-tilt
correlation of two apertures of diameter D' whose centres are s D' apart; with x = kappa D'/2:

    rho_par(s)  ∝ Int x^(-8/3) (J2(x)/x)^2 [J0(2 s x) - J2(2 s x)] dx   (along the separation)
    rho_perp(s) ∝ Int x^(-8/3) (J2(x)/x)^2 [J0(2 s x) + J2(2 s x)] dx   (across it)

normalised to 1 at s = 0, decaying like s^(-1/3). Integrated to x = 0 (infinite outer scale)
they are 0.558 / 0.780 at s = 1 and 0.336 / 0.502 at s = 4; the figures often quoted (0.54 /
0.77, 0.31 / 0.48) are 0.01-0.03 lower, as the same integrals cut off at x = 1e-4 give (a
finite outer scale of ~1e4 D lowers them likewise). Two image points at
angular separation theta see, in a layer at distance z from the aperture, beams separated by
theta z. The path correlation is the average of the layer curves weighted by each layer's
share of the tilt variance, Cn2(z) w(z) dz:

- ``wave="spherical"`` (a point in the scene, the default): w = (1 - z/L)^(5/3) and the beam
  footprint shrinks towards the source, D' = D (1 - z/L), so s = theta z / (D (1 - z/L)).
  (The weight is exactly the footprint's D'^(-1/3) times the (1 - z/L)^2 that maps layer
  tilt to aperture tilt.)
- ``wave="plane"``: w = 1 and D' = D, so s = theta z / D.

For a uniform Cn2 both are functions of u = theta L / D only; they are tabulated once.

The field is drawn by circulant embedding: the 2 x 2 (x, y) covariance is evaluated on a
square canvas ``embed_factor`` times the frame, exact up to the frame size and tapered
beyond it so that it flattens before the canvas wraps (see ``_tapered_correlations``),
transformed, made positive semi-definite per frequency by clipping the (tiny) negative
eigenvalues, and the per-axis variance is renormalised to the law above.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from turbjax.physics.mtf import safe_sqrt
from turbjax.physics.optics import Atmosphere, Optics, Wave, fried_parameter

Z_TILT_CONSTANT = 0.1822  # per-axis Z-tilt variance / (lambda^2 D^(-1/3) r0^(-5/3))

_S_MIN, _S_MAX = 1e-4, 1e3  # Chanan table range in s = separation / footprint
_U_MIN, _U_MAX = 1e-4, 1e4  # path table range in u = theta L / D


@functools.cache
def chanan_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log s, rho_par, rho_perp) of the single-layer Z-tilt correlation, by quadrature."""
    log_s = np.linspace(np.log(_S_MIN), np.log(_S_MAX), 281)
    x0 = 1e-7
    x = np.logspace(np.log10(x0), 3.5, 30000)
    dx = np.gradient(x)
    weight = x ** (-8.0 / 3.0) * (special.jv(2, x) / x) ** 2 * dx
    # Below x0 the integrand is x^(-2/3) / 64 (J2(x) ~ x^2 / 8) and the Bessel bracket is 1
    # (2 s x0 <= 2e-4): that piece, 3 x0^(1/3) / 64, is ~1% of the total and is what keeps the
    # slow s^(-1/3) decay of the infinite-outer-scale curves.
    tail = 3.0 * x0 ** (1.0 / 3.0) / 64.0
    norm = weight.sum() + tail
    par = np.empty_like(log_s)
    perp = np.empty_like(log_s)
    for i, s in enumerate(np.exp(log_s)):
        j0 = special.j0(2.0 * s * x)
        j2 = special.jv(2, 2.0 * s * x)
        par[i] = (np.dot(weight, j0 - j2) + tail) / norm
        perp[i] = (np.dot(weight, j0 + j2) + tail) / norm
    return log_s, par, perp


def _chanan_numpy(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chanan curves at s >= 0, with the s^(-1/3) power law beyond the table."""
    log_s, par, perp = chanan_table()
    ls = np.log(np.clip(s, _S_MIN, None))
    out = []
    for curve in (par, perp):
        inside = np.interp(np.minimum(ls, log_s[-1]), log_s, curve)
        tail = curve[-1] * np.exp(-(ls - log_s[-1]) / 3.0)
        out.append(np.where(ls > log_s[-1], tail, inside))
    return out[0], out[1]


@functools.cache
def path_table(wave: Wave = "spherical") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log u, rho_par, rho_perp) of the path-averaged tilt correlation, u = theta L / D."""
    if wave not in ("spherical", "plane"):
        raise ValueError(f"wave must be 'spherical' or 'plane'; got {wave!r}.")
    log_u = np.linspace(np.log(_U_MIN), np.log(_U_MAX), 2001)
    t, w = np.polynomial.legendre.leggauss(400)
    t = 0.5 * (t + 1.0)
    w = 0.5 * w
    if wave == "spherical":
        weight = w * (1.0 - t) ** (5.0 / 3.0)
        scale = t / (1.0 - t)
    else:
        weight = w * np.ones_like(t)
        scale = t
    weight = weight / weight.sum()
    s = np.exp(log_u)[:, None] * scale[None, :]
    par, perp = _chanan_numpy(s)
    return log_u, par @ weight, perp @ weight


def _uniform_interp(x: jnp.ndarray, x0: float, dx: float, table: np.ndarray) -> jnp.ndarray:
    """Cubic (Catmull-Rom) interpolation in a table sampled at x0 + i dx, clamped at the ends.

    Index arithmetic and four gathers (much cheaper than ``jnp.interp``'s search on large
    grids). C1-smooth, so derivatives of the correlation do not jump at table nodes: the
    curl-free cancellation in the tilt spectrum relies on smooth second differences.
    """
    values = jnp.asarray(np.concatenate([table[:1], table, table[-1:]]), jnp.float32)
    n = len(table)
    position = jnp.clip((x - x0) / dx, 0.0, n - 1.0)
    i = jnp.clip(jnp.floor(position), 0, n - 2).astype(jnp.int32)
    t = position - i
    p0, p1, p2, p3 = (values[i + k] for k in range(4))  # table[i-1 .. i+2], padded ends
    return p1 + 0.5 * t * (p2 - p0 + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0)))


def chanan_correlation(s: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Single-layer (longitudinal, transverse) Z-tilt correlation at s = separation / D."""
    log_s, par, perp = chanan_table()
    ls = jnp.log(jnp.clip(jnp.asarray(s), _S_MIN, _S_MAX))
    step = float(log_s[1] - log_s[0])
    return (
        _uniform_interp(ls, float(log_s[0]), step, par),
        _uniform_interp(ls, float(log_s[0]), step, perp),
    )


def path_tilt_correlation(u: jnp.ndarray, wave: Wave = "spherical") -> tuple[jnp.ndarray, jnp.ndarray]:
    """Path-averaged (longitudinal, transverse) tilt correlation at u = theta L / D."""
    log_u, par, perp = path_table(wave)
    u = jnp.asarray(u)
    lu = jnp.log(jnp.clip(u, _U_MIN, _U_MAX))
    step = float(log_u[1] - log_u[0])
    at_zero = u <= 0
    return (
        jnp.where(at_zero, 1.0, _uniform_interp(lu, float(log_u[0]), step, par)),
        jnp.where(at_zero, 1.0, _uniform_interp(lu, float(log_u[0]), step, perp)),
    )


def tilt_variance(optics: Optics, atmosphere: Atmosphere, wave: Wave = "spherical") -> jnp.ndarray:
    """Per-axis Z-tilt variance, rad^2."""
    r0 = fried_parameter(optics, atmosphere, wave)
    lam = jnp.asarray(optics.wavelength)
    return Z_TILT_CONSTANT * lam**2 * optics.aperture ** (-1.0 / 3.0) * r0 ** (-5.0 / 3.0)


def tilt_std_px(optics: Optics, atmosphere: Atmosphere, wave: Wave = "spherical") -> jnp.ndarray:
    """Per-axis Z-tilt standard deviation in pixels (angle * focal_length / pixel_pitch)."""
    return jnp.sqrt(tilt_variance(optics, atmosphere, wave)) / optics.ifov


def aperture_units_per_pixel(optics: Optics, atmosphere: Atmosphere) -> jnp.ndarray:
    """u = theta L / D for a one-pixel separation (theta = ifov)."""
    return optics.ifov * jnp.asarray(atmosphere.distance) / optics.aperture


def _covariance_components(var, par, perp, lag_y, lag_x):
    """(C_xx, C_yy, C_xy) from longitudinal / transverse correlations at lags (lag_y, lag_x)."""
    r2 = lag_x**2 + lag_y**2
    r2_safe = jnp.where(r2 > 0, r2, 1.0)
    cos2 = jnp.where(r2 > 0, lag_x**2 / r2_safe, 0.5)
    cross = jnp.where(r2 > 0, lag_x * lag_y / r2_safe, 0.0)
    return (
        var * (par * cos2 + perp * (1.0 - cos2)),
        var * (par * (1.0 - cos2) + perp * cos2),
        var * (par - perp) * cross,
    )


def tilt_covariance(
    lag_y: jnp.ndarray,
    lag_x: jnp.ndarray,
    optics: Optics,
    atmosphere: Atmosphere,
    wave: Wave = "spherical",
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(C_xx, C_yy, C_xy) of the tilt field, px^2, at pixel lags (lag_y, lag_x)."""
    var = jnp.square(tilt_std_px(optics, atmosphere, wave))
    r = jnp.sqrt(lag_x**2 + lag_y**2)
    par, perp = path_tilt_correlation(r * aperture_units_per_pixel(optics, atmosphere), wave)
    return _covariance_components(var, par, perp, lag_y, lag_x)


def _half_plane_weights(n: int) -> np.ndarray:
    """Multiplicity of each ``rfft`` column in the full spectrum (1 at DC and Nyquist, else 2)."""
    weights = np.full(n // 2 + 1, 2.0, np.float32)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return weights


def _mirror(quadrant: jnp.ndarray, m: int, n: int, odd: bool) -> jnp.ndarray:
    """Full canvas in fft order from lags 0..m/2 x 0..n/2 (even, or odd in each axis).

    An odd function must vanish at the wrap lag m/2 (n/2) of an even-sized canvas, where +lag
    and -lag are the same sample.
    """
    if odd:
        if m % 2 == 0:
            quadrant = quadrant.at[m // 2].set(0.0)
        if n % 2 == 0:
            quadrant = quadrant.at[:, n // 2].set(0.0)
    rows = quadrant[1 : m - m // 2][::-1]
    full = jnp.concatenate([quadrant, -rows if odd else rows], axis=0)
    cols = full[:, 1 : n - n // 2][:, ::-1]
    return jnp.concatenate([full, -cols if odd else cols], axis=1)


def _tapered_correlations(r, u_per_px, exact_radius: float, flat_radius: float, wave: Wave):
    """Path correlations at pixel distance r, exact up to ``exact_radius`` and constant from
    ``flat_radius`` on, by tapering the underlying potential so that the pair stays the
    covariance of a gradient (curl-free) field: rho_par = d(r rho_perp) / dr.

    rho_perp(r) -> rho_perp(r_eff) with dr_eff/dr = w(r), a raised-cosine window falling from
    1 to 0 between the two radii; then rho_par = rho_perp(r_eff) + r w (rho_par - rho_perp)(r_eff)
    / r_eff. A covariance that flattens smoothly before the canvas wraps embeds with almost no
    negative eigenvalues (< 0.1% of the variance at embed factor 3), whereas cutting the curves
    at the wrap (odd C_xy jumps there) makes the embedding indefinite at high frequencies.
    """
    span = flat_radius - exact_radius
    x = jnp.clip((r - exact_radius) / span, 0.0, 1.0)
    window = 0.5 * (1.0 + jnp.cos(jnp.pi * x))
    r_eff = jnp.where(r <= exact_radius, r, exact_radius + span * (0.5 * x + jnp.sin(jnp.pi * x) / (2.0 * jnp.pi)))
    par, perp = path_tilt_correlation(r_eff * u_per_px, wave)
    r_safe = jnp.where(r > 0, r_eff, 1.0)
    par = jnp.where(r > 0, perp + r * window / r_safe * (par - perp), 1.0)
    return par, perp


def _canvas_covariance(canvas: int, exact_radius: float, optics, atmosphere, wave):
    """(C_xx, C_yy, C_xy) in px^2 on a square embedding canvas in fft lag order.

    Evaluated on one quadrant of non-negative lags and mirrored: C_xx and C_yy are even in
    each axis, C_xy odd in each.
    """
    var = jnp.square(tilt_std_px(optics, atmosphere, wave))
    lags = jnp.arange(canvas // 2 + 1, dtype=jnp.float32)
    ly, lx = lags[:, None], lags[None, :]
    r = jnp.sqrt(lx**2 + ly**2)
    u = aperture_units_per_pixel(optics, atmosphere)
    par, perp = _tapered_correlations(r, u, exact_radius, canvas / 2.0, wave)
    cxx, cyy, cxy = _covariance_components(var, par, perp, ly, lx)
    m = canvas
    return _mirror(cxx, m, m, False), _mirror(cyy, m, m, False), _mirror(cxy, m, m, True)


_SPECTRAL_FLOOR = 1e-4  # soft floor of the spectral eigenvalues, in units of the variance
_MINOR_FLOOR = 1e-3  # soft floor of the minor eigenvalue relative to the major one


def _soft_positive(lam: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
    """0.5 (lam + sqrt(lam^2 + scale^2)): ~lam above ``scale``, ~scale^2 / (4 |lam|) below -scale.

    A smooth, strictly positive stand-in for max(lam, 0) whose square root has a bounded slope.
    """
    return 0.5 * (lam + jnp.sqrt(jnp.square(lam) + jnp.square(scale)))


def tilt_spectrum_sqrt(
    canvas: int,
    exact_radius: float,
    optics: Optics,
    atmosphere: Atmosphere,
    wave: Wave = "spherical",
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Fourier amplitudes (x <- xi1, x <- xi2, y <- xi1, y <- xi2) on the ``rfft2`` half plane.

    The covariances are real and even (C_xx, C_yy) or odd in each axis (C_xy), so their
    spectra S are real 2 x 2 symmetric matrices per frequency. A tilt field is curl-free, so the
    minor eigenvalue is ~0 everywhere but at DC (where the spectrum is isotropic); the embedding
    makes some eigenvalues slightly negative (< 0.1% of the variance with the tapered
    covariance) and float32 round-off (~5e-7 of the covariance) puts noise of ~2e-5 var on
    every mode and ~1e-6 of the major eigenvalue on the minor one. Clipping at 0 and taking
    sqrt (infinite slope at 0) would make the field and its gradients erratic in the
    parameters, so each eigenvalue is made positive smoothly (``_soft_positive``) at a scale of
    1e-4 var (+ 1e-3 x major for the minor one), adding < 1e-3 of the variance before the
    renormalisation. The square root is assembled
    from the eigenvalues and the eigenvector angle (cos 2 theta, sin 2 theta), which needs no
    division by the eigenvalue gap (the spectrum is isotropic at DC), and each axis is
    renormalised to the Z-tilt variance.

    """
    m = n = canvas
    cxx, cyy, cxy = _canvas_covariance(canvas, exact_radius, optics, atmosphere, wave)
    # The covariance flattens to an isotropic plateau (its value at the canvas corner); moving
    # that constant into the DC bin exactly keeps it out of the FFT's round-off, which
    # otherwise puts ~1e-3 var of noise on every mode.
    plateau = cxx[m // 2, n // 2]
    dc = jnp.zeros((m, n // 2 + 1)).at[0, 0].set(plateau * m * n)
    sxx, syy = (jnp.real(jnp.fft.rfft2(c - plateau)) + dc for c in (cxx, cyy))
    sxy = jnp.real(jnp.fft.rfft2(cxy))
    x, y = sxx - syy, 2.0 * sxy
    spread = safe_sqrt(x**2 + y**2)
    spread_safe = jnp.where(spread > 0, spread, 1.0)
    cos2 = jnp.where(spread > 0, x / spread_safe, 1.0)
    sin2 = jnp.where(spread > 0, y / spread_safe, 0.0)
    var = jnp.square(tilt_std_px(optics, atmosphere, wave))  # = mean of S over the modes
    major = 0.5 * (sxx + syy + spread)
    minor = 0.5 * (sxx + syy - spread)
    major = _soft_positive(major, _SPECTRAL_FLOOR * var)
    minor = _soft_positive(minor, _SPECTRAL_FLOOR * var + _MINOR_FLOOR * major)
    root_major, root_minor = safe_sqrt(major), safe_sqrt(minor)
    a = 0.5 * (root_major * (1.0 + cos2) + root_minor * (1.0 - cos2))
    d = 0.5 * (root_major * (1.0 - cos2) + root_minor * (1.0 + cos2))
    b = 0.5 * (root_major - root_minor) * sin2
    # Renormalise each axis so that C'(0) = (1 / MN) sum_k S'(k) equals the Z-tilt variance.
    weights = jnp.asarray(_half_plane_weights(n))
    gx = jnp.sqrt(var * m * n / jnp.maximum(jnp.sum((a**2 + b**2) * weights), 1e-30))
    gy = jnp.sqrt(var * m * n / jnp.maximum(jnp.sum((b**2 + d**2) * weights), 1e-30))
    return a * gx, b * gx, b * gy, d * gy


def embedding_canvas(shape: tuple[int, int], embed_factor: float) -> int:
    """Side of the square embedding canvas: ``embed_factor`` x the longer side, made even."""
    side = int(np.ceil(embed_factor * max(shape)))
    return side + side % 2


def tilt_field(
    key: jax.Array,
    shape: tuple[int, int],
    optics: Optics,
    atmosphere: Atmosphere,
    *,
    wave: Wave = "spherical",
    embed_factor: float = 3.0,
) -> jnp.ndarray:
    """Tilt displacement field [H, W, 2] in pixels: channel 0 along x (width), 1 along y.

    Each component is zero-mean Gaussian with the per-axis Z-tilt variance, correlated as the
    path-averaged Chanan curves (longitudinal along the lag, transverse across it), and the
    x and y components are cross-correlated accordingly. The covariance is exact for pixel
    separations up to max(H, W) (every separation along a row or column, no periodicity);
    the longer diagonal separations between frame corners fall in the taper, where the
    correlation is too high by at most ~0.02. ``embed_factor`` >= 2.5 (default 3).
    """
    if embed_factor < 2.5:
        raise ValueError(f"embed_factor must be >= 2.5; got {embed_factor}.")
    h, w = shape
    side = embedding_canvas(shape, embed_factor)
    canvas = (side, side)
    xx, xy, yx, yy = tilt_spectrum_sqrt(side, float(max(shape)), optics, atmosphere, wave)
    # irfft2 of sqrt(S) x complex white noise (E|z|^2 = 1) has covariance C when the
    # amplitude is scaled by sqrt(MN), and by a further sqrt(2) on the self-conjugate
    # columns (DC and Nyquist), whose imaginary part irfft2 discards.
    edge = np.sqrt(2.0 / _half_plane_weights(side))
    scale = jnp.asarray(edge * side)
    kx, ky = jax.random.split(key)
    half = (side, side // 2 + 1)
    noise_x = jax.random.normal(kx, half, jnp.complex64)
    noise_y = jax.random.normal(ky, half, jnp.complex64)
    fx = jnp.fft.irfft2((xx * noise_x + xy * noise_y) * scale, s=canvas)
    fy = jnp.fft.irfft2((yx * noise_x + yy * noise_y) * scale, s=canvas)
    return jnp.stack([fx[:h, :w], fy[:h, :w]], axis=-1)
