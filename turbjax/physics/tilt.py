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

The field is drawn by circulant embedding of a curl-free field (see ``tilt_spectrum``): the
trace covariance var (rho_par + rho_perp) is evaluated on a square canvas ``embed_factor``
times the frame, exact up to the frame size and tapered beyond it so that it flattens before
the canvas wraps (``_tapered_correlations``), transformed once, and the x and y components
are the k_hat_x and k_hat_y projections of one white noise shaped by its square root.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from turbjax.physics.mtf import rfft_weights
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


def _mirror_even(quadrant: jnp.ndarray, m: int) -> jnp.ndarray:
    """Full m x m canvas in fft lag order from the lags 0..m/2 x 0..m/2 of an even function."""
    index = np.rint(np.abs(np.fft.fftfreq(m) * m)).astype(np.int32)
    return quadrant[index][:, index]


def _tapered_correlations(r, u_per_px, exact_radius: float, flat_radius: float, wave: Wave):
    """Path correlations at pixel distance r, exact up to ``exact_radius`` and constant from
    ``flat_radius`` on, by tapering the underlying potential so that the pair stays the
    covariance of a gradient (curl-free) field: rho_par = d(r rho_perp) / dr.

    rho_perp(r) -> rho_perp(r_eff) with dr_eff/dr = w(r), a raised-cosine window falling from
    1 to 0 between the two radii; then rho_par = rho_perp(r_eff) + r w (rho_par - rho_perp)(r_eff)
    / r_eff. A covariance that flattens smoothly before the canvas wraps embeds with almost no
    negative spectrum, whereas cutting the curves at the wrap (a kink, or for C_xy a jump) makes
    the embedding indefinite at high frequencies (38% of the variance at embed factor 2).
    """
    span = flat_radius - exact_radius
    x = jnp.clip((r - exact_radius) / span, 0.0, 1.0)
    window = 0.5 * (1.0 + jnp.cos(jnp.pi * x))
    r_eff = jnp.where(r <= exact_radius, r, exact_radius + span * (0.5 * x + jnp.sin(jnp.pi * x) / (2.0 * jnp.pi)))
    par, perp = path_tilt_correlation(r_eff * u_per_px, wave)
    r_safe = jnp.where(r > 0, r_eff, 1.0)
    par = jnp.where(r > 0, perp + r * window / r_safe * (par - perp), 1.0)
    return par, perp


_SPECTRAL_FLOOR = 1e-3  # soft floor of the trace spectrum, in units of the per-axis variance ...


def _soft_positive(lam: jnp.ndarray, scale) -> jnp.ndarray:
    """0.5 (lam + sqrt(lam^2 + scale^2)): ~lam above ``scale``, ~scale^2 / (4 |lam|) below -scale.

    A smooth, strictly positive stand-in for max(lam, 0) whose square root has a bounded slope.
    """
    # Each branch sees only its own sign of lam (finite values and gradients in both), and the
    # negative one is written without the cancellation of lam + root.
    positive = lam >= 0
    lam_pos = jnp.where(positive, lam, 0.0)
    lam_neg = jnp.where(positive, 0.0, lam)
    upper = 0.5 * (lam_pos + jnp.sqrt(jnp.square(lam_pos) + jnp.square(scale)))
    lower = 0.5 * jnp.square(scale) / (jnp.sqrt(jnp.square(lam_neg) + jnp.square(scale)) - lam_neg)
    return jnp.where(positive, upper, lower)


_LOCAL_FLOOR = 0.05  # ... and relative to the spectrum's local magnitude (3 x 3 neighbourhood)


def _spectral_floor(spectrum: jnp.ndarray, var) -> jnp.ndarray:
    """Scale of the smooth positivity applied to each embedded spectral value.

    Near DC the tapered embedding's spectrum has side lobes that can cross zero as the
    parameters change while the neighbouring modes are large; a floor proportional to the
    local magnitude (5% of its 3 x 3 average) rounds those crossings off, so that the field,
    and its gradients, stay smooth in the parameters. Elsewhere the floor (>= 1e-3 var) is far
    below the values it guards and changes them by ~1e-3 relative.
    """
    # Rows (k_y) are periodic; the half-plane columns (k_x = 0 .. Nyquist) are not: pad them.
    width = spectrum.shape[1]
    magnitude = jnp.pad(jnp.abs(spectrum), ((0, 0), (1, 1)), mode="edge")
    rows = [jnp.roll(magnitude, dy, axis=0) for dy in (-1, 0, 1)]
    smooth = sum(row[:, 1 + dx : 1 + dx + width] for row in rows for dx in (-1, 0, 1)) / 9.0
    return jnp.maximum(_SPECTRAL_FLOOR * var, _LOCAL_FLOOR * smooth)


def tilt_spectrum(
    canvas: int,
    exact_radius: float,
    optics: Optics,
    atmosphere: Atmosphere,
    wave: Wave = "spherical",
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Fourier amplitudes of a curl-free tilt field on the ``rfft2`` half plane of the canvas.

    A Z-tilt field is the gradient of a (filtered, path-integrated) phase, so its spectral matrix
    is S(k) = T(k) k_hat k_hat^T, where T is the spectrum of the trace covariance
    C_xx + C_yy = var (rho_par + rho_perp), a radial function. One real FFT of that radial
    function gives everything: the x and y amplitudes are sqrt(T) k_hat_x and sqrt(T) k_hat_y,
    driven by one shared white noise (exactly the x-y cross-covariance of a gradient field),
    and the DC mode, where the plateau of the tapered covariance is an isotropic random offset,
    is returned separately as the per-axis offset standard deviation.

    The trace is made positive smoothly (``_soft_positive`` at the scale of ``_spectral_floor``;
    the tapered embedding is nearly PSD and float32 round-off is ~5e-7 of the covariance), the
    plateau is moved into the DC bin exactly to keep it out of the FFT's round-off, and each
    axis is renormalised to the Z-tilt variance. Returns (amp_x, amp_y, offset_std).
    """
    m = canvas
    var = jnp.square(tilt_std_px(optics, atmosphere, wave))
    lags = jnp.arange(m // 2 + 1, dtype=jnp.float32)
    r = jnp.sqrt(lags[:, None] ** 2 + lags[None, :] ** 2)
    par, perp = _tapered_correlations(r, aperture_units_per_pixel(optics, atmosphere), exact_radius, m / 2.0, wave)
    trace = _mirror_even(var * (par + perp), m)
    plateau = trace[m // 2, m // 2]  # the canvas corner lies beyond the taper
    spectrum = jnp.real(jnp.fft.rfft2(trace - plateau)).at[0, 0].add(plateau * m * m)
    spectrum = _soft_positive(spectrum, _spectral_floor(spectrum, var))
    ky = jnp.asarray(np.fft.fftfreq(m), jnp.float32)[:, None]
    kx = jnp.asarray(np.fft.rfftfreq(m), jnp.float32)[None, :]
    k_norm = np.sqrt(np.fft.fftfreq(m)[:, None] ** 2 + np.fft.rfftfreq(m)[None, :] ** 2)
    k_norm[0, 0] = 1.0
    root = jnp.sqrt(spectrum)
    amp_x = (root * kx / k_norm).at[0, 0].set(0.0)
    amp_y = (root * ky / k_norm).at[0, 0].set(0.0)
    # Per-axis variance: (1 / m^2) sum over the full plane (rfft columns other than DC and
    # Nyquist count twice), plus the DC offset's half of the trace.
    weights = jnp.asarray(rfft_weights(m))
    dc_var = 0.5 * spectrum[0, 0] / m**2
    var_x = jnp.sum(weights * amp_x**2) / m**2 + dc_var
    var_y = jnp.sum(weights * amp_y**2) / m**2 + dc_var
    gx, gy = jnp.sqrt(var / var_x), jnp.sqrt(var / var_y)
    return amp_x * gx, amp_y * gy, jnp.sqrt(dc_var) * 0.5 * (gx + gy)


def embedding_canvas(shape: tuple[int, int], embed_factor: float) -> int:
    """Side of the square embedding canvas: ``embed_factor`` x the longer side, made even."""
    side = int(np.ceil(embed_factor * max(shape)))
    return side + side % 2


def tilt_canvas(
    key: jax.Array,
    side: int,
    exact_radius: float,
    optics: Optics,
    atmosphere: Atmosphere,
    wave: Wave = "spherical",
) -> jnp.ndarray:
    """A whole periodic embedding canvas [side, side, 2] of tilt (px), stationary everywhere.

    Any window of it is a tilt field whose covariance follows the theory up to separations of
    ``exact_radius`` pixels (``side`` >= 2.5 x ``exact_radius``); windows may start anywhere, with
    indices taken modulo ``side`` (frozen flow reads shifted windows of one canvas).
    """
    amp_x, amp_y, offset_std = tilt_spectrum(side, exact_radius, optics, atmosphere, wave)
    # irfft2 of amplitude x complex white noise (E|z|^2 = 1) has the intended covariance when
    # scaled by sqrt(MN) = side, and by a further sqrt(2) on the self-conjugate columns (DC and
    # Nyquist), whose imaginary part irfft2 discards.
    scale = jnp.asarray(np.sqrt(2.0 / rfft_weights(side)) * side)
    k_noise, k_offset = jax.random.split(key)
    noise = jax.random.normal(k_noise, (side, side // 2 + 1), jnp.complex64) * scale
    fx = jnp.fft.irfft2(amp_x * noise, s=(side, side))
    fy = jnp.fft.irfft2(amp_y * noise, s=(side, side))
    offset = offset_std * jax.random.normal(k_offset, (2,))
    return jnp.stack([fx + offset[0], fy + offset[1]], axis=-1)


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
    field is curl-free like a real angle-of-arrival field. The covariance follows the theory for
    pixel separations up to max(H, W) (every separation along a row or column, no periodicity)
    to within 0.02 of the variance (the clipped side lobes of the embedding, largest when the
    correlation barely decays across the frame); the longer diagonal separations between frame
    corners fall in the taper, where the correlation is too high by at most ~0.02.
    ``embed_factor`` >= 2.5 (default 3).
    """
    if embed_factor < 2.5:
        raise ValueError(f"embed_factor must be >= 2.5; got {embed_factor}.")
    h, w = shape
    side = embedding_canvas(shape, embed_factor)
    return tilt_canvas(key, side, float(max(shape)), optics, atmosphere, wave)[:h, :w]
