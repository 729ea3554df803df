"""Phase screens: FFT screens with subharmonics, autoregressive frozen flow, multi-layer atmospheres.

Units: lengths in m, spatial frequencies f in cycles/m, phases in rad, time in s.

Spectrum. The phase power spectral density of von Karman turbulence is

    Phi(f) = c r0^(-5/3) (f^2 + 1/L0^2)^(-11/6),   c = Gamma(11/6)^2 / (2 pi^(11/3)) [24/5 Gamma(6/5)]^(5/6)

with c = 0.022896 (``PSD_CONSTANT``): the value for which L0 = inf gives exactly Kolmogorov's
D(r) = 6.8839 (r / r0)^(5/3) (in rad/m the same spectrum is 0.4898 r0^(-5/3) kappa^(-11/3)).

FFT screen. On an n x n grid of spacing dx the screen is the real part of a random Fourier series

    phi(x) = Re sum_k a_k exp(2 pi i f_k . x),   a_k = s_k (g1 + i g2),   s_k = sqrt(Phi(f_k)) df,

with df = 1 / (n dx), g1, g2 independent standard normals and a_0 = 0. Each mode contributes
variance s_k^2, so the screen's own ("discrete") structure function is exactly
D(r) = 2 sum_k s_k^2 [1 - cos(2 pi f_k . r)] (:func:`discrete_structure_function`); tests check the
generator against it and against theory. A periodic FFT screen lacks the frequencies below df,
which carry most of the large-scale phase; Lane's subharmonics add them back: at level p = 1, 2, 3
a 3 x 3 grid of spacing df / 3^p (centre omitted) tiles the omitted central cell of the level
above. Lane gives each mode the centre value s = sqrt(Phi(f)) df / 3^p; here the low-order modes
(the subharmonics and the 8 grid modes around the origin) carry the integral of Phi |f|^2 over their
cell instead (``_mode_amplitudes`` says why). Subharmonic modes are plane waves evaluated on the
grid, so the screen stops being periodic. ``phase_screen`` subtracts the subharmonic part's
grid mean (a piston, irrelevant to images and to D(r)).

Differentiability. Coefficients are drawn for r0 = 1 m and the phase is multiplied by r0^(-5/6), so
the screen is an exact, smooth function of r0 (and of dx and L0 through s_k) for a fixed key.

Autoregressive frozen flow (Srinath et al. 2015). The state is the set of Fourier coefficients;
each step advects every mode by the wind and renews it with an AR(1) coefficient alpha:

    a_k <- alpha exp(-2 pi i f_k . v dt) a_k + sqrt(1 - alpha^2) s_k (g1 + i g2).

The phase factor translates the screen by v dt (phi_new(x) = phi_old(x - v dt)); the renewal keeps
E|a_k|^2 = 2 s_k^2 at every step, so the statistics are stationary for any number of steps, and
the per-mode lag-n autocorrelation is alpha^n (after undoing the advection phase). alpha = 1 is
pure frozen flow (periodic in the grid for the FFT modes); alpha < 1 lets the pattern "boil" and
hides that periodicity. Subharmonics are optional here (default on, as for ``phase_screen``):
they are modes like the others, advected and renewed the same way, so the translation of a
step is exact on the overlap of the grid for integer and non-integer shifts alike. The AR screen
does not subtract a mean (that would break the exact translation).

Multi-layer atmosphere. :class:`LayerAtmosphere` holds thin layers with altitudes h_i, fractions
w_i of Int Cn2 dh (sum 1), wind vectors and the total Fried parameter. With plane waves
r0^(-5/3) = sum_i r0_i^(-5/3), hence r0_i = r0 w_i^(-3/5), and the isoplanatic angle is
theta0 = 0.314 r0 / h_bar with h_bar = (sum_i w_i h_i^(5/3))^(3/5), 0.314 = (2.914 / 0.423)^(-3/5)
(the constants of ``turbjax.physics.optics``; spherical waves as there, see
:func:`layer_isoplanatic_angle`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy import special

from turbjax.physics.checks import check_positive, check_range, is_concrete
from turbjax.physics.optics import (
    FRIED_CONSTANT,
    ISOPLANATIC_CONSTANT,
    Wave,
    fried_parameter_from_profile,
    hufnagel_valley,
    wavenumber,
)

KOLMOGOROV_CONSTANT = 2.0 * (24.0 / 5.0 * math.gamma(6.0 / 5.0)) ** (5.0 / 6.0)  # 6.8839: D = K (r/r0)^(5/3)
PSD_CONSTANT = (
    math.gamma(11.0 / 6.0) ** 2 / (2.0 * math.pi ** (11.0 / 3.0)) * (24.0 / 5.0 * math.gamma(6.0 / 5.0)) ** (5.0 / 6.0)
)  # 0.022896, f in cycles/m
THETA0_CONSTANT = (ISOPLANATIC_CONSTANT / FRIED_CONSTANT) ** (-3.0 / 5.0)  # 0.314: theta0 = 0.314 r0 / h_bar
SUBHARMONIC_LEVELS = 3


# --------------------------------------------------------------------------------------------
# Spectrum and theory


def phase_psd(f: jnp.ndarray, r0: jnp.ndarray | float, outer_scale: jnp.ndarray | float = jnp.inf) -> jnp.ndarray:
    """von Karman phase PSD (rad^2 m^2) at spatial frequency ``f`` (cycles/m); L0 = inf is Kolmogorov.

    Infinite at f = 0 for L0 = inf: callers zero that mode (see :func:`_amplitude`).
    """
    f2 = jnp.asarray(f) ** 2 + jnp.asarray(outer_scale, jnp.result_type(float)) ** -2.0
    return PSD_CONSTANT * jnp.asarray(r0) ** (-5.0 / 3.0) * f2 ** (-11.0 / 6.0)


def kolmogorov_structure_function(r: jnp.ndarray | float, r0: jnp.ndarray | float) -> jnp.ndarray:
    """Kolmogorov phase structure function D(r) = 6.8839 (r / r0)^(5/3), rad^2 (r, r0 in m)."""
    return KOLMOGOROV_CONSTANT * (jnp.asarray(r) / jnp.asarray(r0)) ** (5.0 / 3.0)


def von_karman_structure_function(r: np.ndarray | float, r0: float, outer_scale: float) -> np.ndarray:
    """von Karman phase structure function, rad^2 (NumPy/SciPy reference for tests, not traced).

    With f0 = 1 / L0 and the spectrum of this module, C(r) = Int Phi(f) cos(2 pi f . r) d^2f gives

        D(r) = 2 [C(0) - C(r)],  C(0) = (6 pi / 5) c r0^(-5/3) f0^(-5/3),
        C(r) = 2 pi c r0^(-5/3) f0^(-5/6) (2 pi r)^(5/6) K_{5/6}(2 pi f0 r) / (2^(5/6) Gamma(11/6)).

    ``outer_scale`` = inf returns the Kolmogorov law.
    """
    r = np.asarray(r, np.float64)
    if not np.isfinite(outer_scale):
        return KOLMOGOROV_CONSTANT * (r / r0) ** (5.0 / 3.0)
    f0 = 1.0 / outer_scale
    scale = PSD_CONSTANT * r0 ** (-5.0 / 3.0)
    z = 2.0 * np.pi * f0 * r
    return 4.0 * np.pi * scale * f0 ** (-5.0 / 3.0) * _bessel_drop(z) / (2.0 ** (5.0 / 6.0) * math.gamma(11.0 / 6.0))


def _bessel_drop(z: np.ndarray) -> np.ndarray:
    """g(0) - g(z) for g(z) = z^nu K_nu(z), nu = 5/6, accurate at small z (series) and large z.

    The direct difference loses all precision when r << L0 (g(0) - g(z) ~ z^(5/3)); below z = 2 the
    series of K_nu = pi (I_-nu - I_nu) / (2 sin nu pi) is used, whose constant term cancels exactly.
    """
    nu = 5.0 / 6.0
    z = np.asarray(z, np.float64)
    small = z < 2.0
    zs = np.where(small, z, 1.0)[..., None]
    k = np.arange(30)
    x = (zs / 2.0) ** 2
    log_fact = special.gammaln(k + 1.0)
    s1 = np.sum(np.where(k >= 1, x**k / np.exp(log_fact + special.gammaln(k + 1.0 - nu)), 0.0), axis=-1)
    s2 = np.sum(x**k * (zs / 2.0) ** (2.0 * nu) / np.exp(log_fact + special.gammaln(k + 1.0 + nu)), axis=-1)
    series = np.pi / (2.0 * np.sin(nu * np.pi)) * 2.0**nu * (s2 - s1)
    zl = np.where(small, 1.0, z)
    direct = 2.0 ** (nu - 1.0) * math.gamma(nu) - zl**nu * special.kv(nu, zl)
    return np.where(small, series, direct)


def _grid_frequencies(n: int, dx) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(fx [1, n], fy [n, 1]) in cycles/m on the ``fft2`` grid of an n x n screen of spacing dx (m)."""
    freq = jnp.asarray(np.fft.fftfreq(n)) / dx
    return freq[None, :], freq[:, None]


def _subharmonic_frequencies(n: int, dx, levels: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(fx [S], fy [S], df [S]) of Lane's subharmonics, S = 8 levels, cycles/m."""
    ij = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)], np.float64)
    scale = np.repeat(3.0 ** -np.arange(1, levels + 1), 8)  # df_p / df
    ij = np.tile(ij, (levels, 1))
    df = 1.0 / (n * jnp.asarray(dx))
    step = jnp.asarray(scale) * df
    return jnp.asarray(ij[:, 1]) * step, jnp.asarray(ij[:, 0]) * step, step


def _amplitude(f2: jnp.ndarray, outer_scale, df) -> jnp.ndarray:
    """s = sqrt(Phi(f) at r0 = 1 m) df for squared frequencies ``f2``; 0 where f = 0 (the piston mode)."""
    positive = f2 > 0
    safe = jnp.where(positive, f2, 1.0)
    return jnp.where(positive, jnp.sqrt(phase_psd(jnp.sqrt(safe), 1.0, outer_scale)) * df, 0.0)


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _cell_amplitude(fx: jnp.ndarray, fy: jnp.ndarray, width, outer_scale) -> jnp.ndarray:
    """Amplitude (r0 = 1 m) of modes at (fx, fy) standing for square cells of side ``width`` (cycles/m):
    s^2 = Int_cell Phi(f) |f|^2 d^2f / |f_k|^2 (8 x 8 Gauss-Legendre), for cells not containing 0."""
    half = 0.5 * jnp.asarray(width)[..., None, None]
    nodes = jnp.asarray(_GAUSS_NODES)
    x = fx[..., None, None] + half * nodes[:, None]
    y = fy[..., None, None] + half * nodes[None, :]
    w = jnp.asarray(_GAUSS_WEIGHTS[:, None] * _GAUSS_WEIGHTS[None, :]) * half**2
    integral = jnp.sum(w * phase_psd(jnp.sqrt(x**2 + y**2), 1.0, outer_scale) * (x**2 + y**2), axis=(-2, -1))
    return jnp.sqrt(integral / (fx**2 + fy**2))


CELL_WEIGHTED_RADIUS = 1  # grid modes with max(|kx|, |ky|) <= this get cell-integrated amplitudes


def _mode_amplitudes(n: int, dx, outer_scale, levels: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Amplitudes at r0 = 1 m of the grid modes [n, n] and of the subharmonics [8 levels].

    Most modes carry the centre value sqrt(Phi(f_k)) df. The low-order ones (the subharmonics and
    the grid modes within ``CELL_WEIGHTED_RADIUS`` of the origin) carry the cell integral of
    Phi |f|^2 divided by |f_k|^2 instead: for f r << 1 a mode adds 2 pi^2 (f . r)^2 s^2 to D(r) and
    its tilt is likewise quadratic in f, so this makes the cell's contribution to D(r) and to the
    aperture tilt exact, where the centre value under-represents the steep f^(-11/3) spectrum.
    Expected D(r) / von Karman (n = 64, L0 = 25 m, 2 <= r <= N/8): 0.95-0.96 with Lane's centre
    values, 0.97-0.99 with these. The price: quantities quartic in f for small f (the tip/tilt-removed
    residual) are overstated by the first ring of grid modes when an aperture spans a large part of
    the screen (0.134 law: +3% at D = N/2, < 1% at D <= N/4; subharmonics alone do not matter there).
    """
    dx = jnp.asarray(dx)
    df = 1.0 / (n * dx)
    fx, fy = _grid_frequencies(n, dx)
    grid = _amplitude(fx**2 + fy**2, outer_scale, df)
    m = min(CELL_WEIGHTED_RADIUS, (n - 1) // 2)
    k = np.array([(i, j) for i in range(-m, m + 1) for j in range(-m, m + 1) if (i, j) != (0, 0)])
    if k.size:
        cells = _cell_amplitude(jnp.asarray(k[:, 1]) * df, jnp.asarray(k[:, 0]) * df, df, outer_scale)
        grid = grid.at[k[:, 0] % n, k[:, 1] % n].set(cells.astype(grid.dtype))
    sx, sy, sdf = _subharmonic_frequencies(n, dx, levels)
    return grid, _cell_amplitude(sx, sy, sdf, outer_scale)


@functools.partial(jax.jit, static_argnames=("n", "subharmonics", "levels", "axis"))
def discrete_structure_function(
    separation: jnp.ndarray | float,
    n: int,
    dx: float,
    r0: float,
    outer_scale: float = jnp.inf,
    *,
    subharmonics: bool = True,
    levels: int = SUBHARMONIC_LEVELS,
    axis: int = 1,
) -> jnp.ndarray:
    """Expected structure function (rad^2) of this module's generator, from its own discrete spectrum.

    D(r) = 2 sum_k s_k^2 [1 - cos(2 pi f_k r)] over the grid modes (and the subharmonics), for a
    separation ``separation`` (m) along ``axis`` (1 = x, 0 = y; the spectrum is symmetric so both
    agree). Exact for :func:`phase_screen` and for every step of the AR screens: the generator can be
    checked against it to within sampling error alone.
    """
    r = jnp.asarray(separation)
    grid, sub = _mode_amplitudes(n, dx, outer_scale, levels if subharmonics else 0)
    fx, fy = _grid_frequencies(n, dx)
    f = jnp.broadcast_to(fx if axis == 1 else fy, (n, n))
    total = jnp.sum(grid**2 * (1.0 - jnp.cos(2.0 * jnp.pi * f * r[..., None, None])), axis=(-2, -1))
    if subharmonics:
        sx, sy, _ = _subharmonic_frequencies(n, dx, levels)
        fs = sx if axis == 1 else sy
        total = total + jnp.sum(sub**2 * (1.0 - jnp.cos(2.0 * jnp.pi * fs * r[..., None])), axis=-1)
    return 2.0 * jnp.asarray(r0) ** (-5.0 / 3.0) * total


# --------------------------------------------------------------------------------------------
# Screens: state, AR step, evaluation


@struct.dataclass
class ARScreen:
    """Fourier-coefficient state of a (possibly evolving) phase screen; a pytree.

    Attributes:
      coeffs: [n, n] complex grid coefficients drawn for r0 = 1 m (rad), ``fft2`` ordering.
      sub_coeffs: [8 levels] complex subharmonic coefficients (shape [0] without subharmonics).
      dx: grid spacing, m.
      r0: Fried parameter, m; the phase is r0^(-5/6) times that of the coefficients.
      outer_scale: von Karman outer scale L0, m (inf = Kolmogorov).
      velocity: (vx, vy) wind, m/s; the pattern moves along +x (columns) and +y (rows).
      dt: time step, s.
      alpha: AR(1) renewal coefficient in [0, 1] (1 = pure frozen flow).
    """

    coeffs: jnp.ndarray
    sub_coeffs: jnp.ndarray
    dx: jnp.ndarray
    r0: jnp.ndarray
    outer_scale: jnp.ndarray
    velocity: jnp.ndarray
    dt: jnp.ndarray
    alpha: jnp.ndarray

    @property
    def n(self) -> int:
        return self.coeffs.shape[-1]

    @property
    def levels(self) -> int:
        return self.sub_coeffs.shape[-1] // 8


def _mode_noise(key: jax.Array, n: int, num_sub: int, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Complex normals g1 + i g2 (E|z|^2 = 2) for the n x n grid modes and ``num_sub`` subharmonics.

    One draw for all modes: every separate ``jax.random`` call adds a PRNG kernel to compile.
    """
    g = jax.random.normal(key, (2, n * n + num_sub), dtype)
    z = g[0] + 1j * g[1]
    return z[: n * n].reshape(n, n), z[n * n :]


def _float_dtype(*xs) -> Any:
    return jnp.result_type(float, *[jnp.asarray(x) for x in xs])


def _check_screen_args(n: int, dx, r0, outer_scale) -> None:
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2 grid points; got {n}.")
    if is_concrete((dx, r0)):
        check_positive("dx", dx, "m")
        check_positive("r0", r0, "m")
    if is_concrete(outer_scale):
        value = np.asarray(outer_scale, np.float64)
        if np.any(np.isnan(value)) or np.any(value <= 0):
            raise ValueError(f"outer_scale (L0) must be > 0 m (inf for Kolmogorov); got {value.ravel()[:4].tolist()}.")


def ar_screen_init(
    key: jax.Array,
    n: int,
    dx: jnp.ndarray | float,
    r0: jnp.ndarray | float,
    outer_scale: jnp.ndarray | float = jnp.inf,
    *,
    velocity: jnp.ndarray | Sequence[float] = (0.0, 0.0),
    dt: jnp.ndarray | float = 1.0,
    alpha: jnp.ndarray | float = 0.99,
    subharmonics: bool = True,
    levels: int = SUBHARMONIC_LEVELS,
) -> ARScreen:
    """Draw the stationary state of an n x n screen (spacing ``dx`` m, Fried parameter ``r0`` m).

    ``velocity`` (vx, vy) m/s, ``dt`` s and ``alpha`` are used by :func:`ar_screen_step`.
    The coefficients have the stationary distribution, so step 0 is already a valid screen.
    """
    _check_screen_args(n, dx, r0, outer_scale)
    if is_concrete(alpha):
        check_range("alpha", alpha, 0.0, 1.0)
    levels = levels if subharmonics else 0
    dtype = _float_dtype(dx, r0, velocity)
    grid, sub = _mode_amplitudes(n, jnp.asarray(dx, dtype), outer_scale, levels)
    grid_noise, sub_noise = _mode_noise(key, n, 8 * levels, dtype)
    return ARScreen(
        coeffs=grid * grid_noise,
        sub_coeffs=sub * sub_noise,
        dx=jnp.asarray(dx, dtype),
        r0=jnp.asarray(r0, dtype),
        outer_scale=jnp.asarray(outer_scale, dtype),
        velocity=jnp.asarray(velocity, dtype),
        dt=jnp.asarray(dt, dtype),
        alpha=jnp.asarray(alpha, dtype),
    )


def _advection(fx: jnp.ndarray, fy: jnp.ndarray, state: ARScreen) -> jnp.ndarray:
    """exp(-2 pi i f . v dt); the cycles are reduced to [-1/2, 1/2] before scaling by 2 pi."""
    cycles = fx * state.velocity[0] * state.dt + fy * state.velocity[1] * state.dt
    cycles = cycles - jax.lax.stop_gradient(jnp.round(cycles))
    return jnp.exp(-2j * jnp.pi * cycles)


def ar_screen_step(key: jax.Array, state: ARScreen) -> ARScreen:
    """Advance the screen by one step of ``state.dt``: advect every mode by the wind, renew with alpha."""
    n, levels = state.n, state.levels
    grid, sub = _mode_amplitudes(n, state.dx, state.outer_scale, levels)
    fx, fy = _grid_frequencies(n, state.dx)
    sx, sy, _ = _subharmonic_frequencies(n, state.dx, levels)
    renew = jnp.sqrt(jnp.maximum(1.0 - state.alpha**2, 0.0))
    grid_noise, sub_noise = _mode_noise(key, n, 8 * levels, state.dx.dtype)
    coeffs = state.alpha * _advection(fx, fy, state) * state.coeffs + renew * grid * grid_noise
    sub_coeffs = state.alpha * _advection(sx, sy, state) * state.sub_coeffs + renew * sub * sub_noise
    return state.replace(coeffs=coeffs, sub_coeffs=sub_coeffs)


def _subharmonic_phase(state: ARScreen) -> jnp.ndarray:
    """Re sum_s c_s exp(2 pi i (fx_s x + fy_s y)) on the grid (x = column * dx), r0 = 1 m."""
    n = state.n
    sx, sy, _ = _subharmonic_frequencies(n, state.dx, state.levels)
    x = jnp.arange(n, dtype=state.dx.dtype) * state.dx
    ex = jnp.exp(2j * jnp.pi * sx[:, None] * x[None, :])  # [S, n]
    ey = jnp.exp(2j * jnp.pi * sy[:, None] * x[None, :])
    return jnp.real(jnp.einsum("s,sy,sx->yx", state.sub_coeffs, ey, ex))


def ar_screen_phase(state: ARScreen) -> jnp.ndarray:
    """The screen [n, n] in rad (rows = y, columns = x)."""
    n = state.n
    phase = jnp.real(jnp.fft.ifft2(state.coeffs)) * (n * n)
    if state.levels:
        phase = phase + _subharmonic_phase(state)
    return state.r0 ** (-5.0 / 6.0) * phase


def ar_screen_run(
    key: jax.Array,
    state: ARScreen,
    num_steps: int,
    observe: Callable[[ARScreen], Any] | None = None,
) -> tuple[ARScreen, Any]:
    """Emit ``observe(state)`` then step, ``num_steps`` times (``lax.scan``, any number of steps).

    Returns (the state after ``num_steps`` steps, the stacked observations). ``observe`` defaults
    to :func:`ar_screen_phase`, giving screens [num_steps, n, n] whose first entry is ``state``'s.
    Pass a reducing ``observe`` (e.g. a statistic of the screen) for long runs: memory then does not
    grow with n^2 per step.
    """
    observe = ar_screen_phase if observe is None else observe

    def body(s, k):
        return ar_screen_step(k, s), observe(s)

    return jax.lax.scan(body, state, jax.random.split(key, num_steps))


def phase_screen(
    key: jax.Array,
    n: int,
    dx: jnp.ndarray | float,
    r0: jnp.ndarray | float,
    L0: jnp.ndarray | float = jnp.inf,
    subharmonics: bool = True,
    levels: int = SUBHARMONIC_LEVELS,
) -> jnp.ndarray:
    """One n x n phase screen (rad) of spacing ``dx`` (m), Fried parameter ``r0`` (m), outer scale ``L0`` (m).

    FFT screen plus (optionally) Lane's 3-level subharmonics, whose grid mean is removed (module
    doc). ``jax.vmap`` over keys gives independent screens; differentiable in r0 (a factor
    r0^(-5/6)), dx and L0.
    """
    state = ar_screen_init(key, n, dx, r0, L0, subharmonics=subharmonics, levels=levels)
    phase = ar_screen_phase(state)
    if subharmonics:
        phase = phase - state.r0 ** (-5.0 / 6.0) * jnp.mean(_subharmonic_phase(state))
    return phase


# --------------------------------------------------------------------------------------------
# Apertures: piston and Z-tilt


def circular_pupil(n: int, diameter: jnp.ndarray | float) -> jnp.ndarray:
    """[n, n] 0/1 mask of a disc of ``diameter`` (grid samples) centred at ((n-1)/2, (n-1)/2)."""
    c = (n - 1) / 2.0
    y = jnp.arange(n)[:, None] - c
    x = jnp.arange(n)[None, :] - c
    return ((x**2 + y**2) <= (jnp.asarray(diameter) / 2.0) ** 2).astype(jnp.result_type(float))


def ztilt_kernels(mask: jnp.ndarray) -> jnp.ndarray:
    """Least-squares weights [3, n, n] of (piston, x slope, y slope) over ``mask`` [n, n].

    For a phase w [n, n], ``sum(kernels * w, axis=(-2, -1))`` are the coefficients (rad, rad/sample,
    rad/sample) of the plane p + bx x + by y closest to w on the mask: the Zernike (Z-) tilt.
    """
    n = mask.shape[-1]
    coords = jnp.arange(n, dtype=mask.dtype) - (n - 1) / 2.0
    ones = jnp.ones((n, n), mask.dtype)
    basis = jnp.stack([ones, ones * coords[None, :], ones * coords[:, None]])  # [3, n, n]
    gram = jnp.einsum("iyx,jyx->ij", basis * mask, basis)
    return jnp.einsum("ij,jyx->iyx", jnp.linalg.inv(gram), basis * mask)


def ztilt(phase: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Z-tilt (bx, by) of ``phase`` [..., n, n] over ``mask``, rad per grid sample, [..., 2]."""
    coefficients = jnp.einsum("...yx,iyx->...i", phase, ztilt_kernels(mask))
    return coefficients[..., 1:]


def remove_piston_tilt(phase: jnp.ndarray, mask: jnp.ndarray, tilt: bool = True) -> jnp.ndarray:
    """``phase`` [..., n, n] minus its least-squares plane over ``mask`` (piston and Z-tilt; with
    ``tilt=False`` the piston alone, i.e. the mean on the mask), zero off the mask."""
    if not tilt:
        mean = jnp.sum(phase * mask, axis=(-2, -1), keepdims=True) / jnp.sum(mask)
        return (phase - mean) * mask
    coefficients = jnp.einsum("...yx,iyx->...i", phase, ztilt_kernels(mask))
    n = mask.shape[-1]
    coords = jnp.arange(n, dtype=mask.dtype) - (n - 1) / 2.0
    plane = (
        coefficients[..., 0, None, None]
        + coefficients[..., 1, None, None] * coords[None, :]
        + coefficients[..., 2, None, None] * coords[:, None]
    )
    return (phase - plane) * mask


@functools.partial(jax.jit, static_argnames=("n", "subharmonics", "levels"))
def discrete_tilt_variance(
    n: int,
    dx: jnp.ndarray | float,
    r0: jnp.ndarray | float,
    mask: jnp.ndarray,
    outer_scale: jnp.ndarray | float = jnp.inf,
    *,
    subharmonics: bool = True,
    levels: int = SUBHARMONIC_LEVELS,
) -> jnp.ndarray:
    """Expected Z-tilt variance per axis (rad^2 per sample^2) of this module's n x n screens over a
    pupil ``mask`` [n_w, n_w] (n_w <= n) anywhere on the grid: sum_k s_k^2 |G_x(f_k)|^2 with
    G_x(f) = sum_rho K_x(rho) exp(2 pi i f . rho) the response of the least-squares x slope
    (:func:`ztilt_kernels`) to a unit mode. The y axis is the same by symmetry. Multiply by
    (lambda / (2 pi dx))^2 for rad^2 of angle of arrival.
    """
    n_w = mask.shape[-1]
    kernel = ztilt_kernels(mask)[1]
    grid, sub = _mode_amplitudes(n, dx, outer_scale, levels if subharmonics else 0)
    response = jnp.fft.ifft2(jnp.pad(kernel, ((0, n - n_w), (0, n - n_w)))) * (n * n)  # sum K e^{+2 pi i k rho / n}
    total = jnp.sum(grid**2 * jnp.abs(response) ** 2)
    if subharmonics:
        sx, sy, _ = _subharmonic_frequencies(n, dx, levels)
        rho = jnp.arange(n_w) * jnp.asarray(dx)
        phase = jnp.exp(2j * jnp.pi * (sx[:, None, None] * rho[None, None, :] + sy[:, None, None] * rho[None, :, None]))
        total = total + jnp.sum(sub**2 * jnp.abs(jnp.sum(kernel * phase, axis=(-2, -1))) ** 2)
    return jnp.asarray(r0) ** (-5.0 / 3.0) * total


# --------------------------------------------------------------------------------------------
# Multi-layer atmosphere


TMTS_ALTITUDES = (1000.0, 4000.0, 20000.0)  # m, TMTS section 2.3.2
TMTS_WEIGHTS = (0.6, 0.3, 0.1)


@struct.dataclass
class LayerAtmosphere:
    """Thin turbulent layers; a pytree (vmap over a leading batch axis of every field).

    Attributes:
      r0: total Fried parameter, m, at the imaging wavelength (combining all layers).
      altitude: [L] layer altitudes (distance from the aperture along the line of sight), m.
      weight: [L] fraction of the integrated Cn2 in each layer (sums to 1).
      wind: [L, 2] (vx, vy) wind of each layer, m/s.
      outer_scale: von Karman outer scale L0, m (inf = Kolmogorov).
    """

    r0: jnp.ndarray
    altitude: jnp.ndarray
    weight: jnp.ndarray
    wind: jnp.ndarray
    outer_scale: jnp.ndarray

    @property
    def num_layers(self) -> int:
        return self.altitude.shape[-1]


def check_layer_atmosphere(atmosphere: LayerAtmosphere) -> None:
    """Raise ``ValueError`` for inconsistent shapes (always) or bad values (on concrete arrays)."""
    num = np.shape(atmosphere.altitude)[-1] if np.ndim(atmosphere.altitude) else None
    if num is None or np.shape(atmosphere.weight)[-1:] != (num,) or np.shape(atmosphere.wind)[-2:] != (num, 2):
        raise ValueError(
            "LayerAtmosphere needs altitude [L], weight [L] and wind [L, 2]; got shapes "
            f"{np.shape(atmosphere.altitude)}, {np.shape(atmosphere.weight)}, {np.shape(atmosphere.wind)}."
        )
    if not is_concrete(atmosphere):
        return
    check_positive("atmosphere.r0", atmosphere.r0, "m")
    check_range("atmosphere.altitude", atmosphere.altitude, 0.0, None, unit="m")
    check_range("atmosphere.weight", atmosphere.weight, 0.0, 1.0)
    total = np.sum(np.asarray(atmosphere.weight, np.float64), axis=-1)
    if np.any(np.abs(total - 1.0) > 1e-3):
        raise ValueError(f"atmosphere.weight must sum to 1 (fractions of Int Cn2); got sums {np.ravel(total)[:4]}.")
    check_range("atmosphere.wind", atmosphere.wind, unit="m/s")
    _check_screen_args(2, 1.0, 1.0, atmosphere.outer_scale)


def layers_from_weights(
    r0: jnp.ndarray | float,
    altitudes: jnp.ndarray | Sequence[float] = TMTS_ALTITUDES,
    weights: jnp.ndarray | Sequence[float] = TMTS_WEIGHTS,
    wind: jnp.ndarray | Sequence[Sequence[float]] | None = None,
    outer_scale: jnp.ndarray | float = jnp.inf,
) -> LayerAtmosphere:
    """Layer model from altitudes (m) and Cn2 fractions (defaults: the TMTS 1/4/20 km, 0.6/0.3/0.1).

    ``wind`` [L, 2] m/s (default still air). Weights are used as given (checked to sum to 1).
    """
    altitudes = jnp.asarray(altitudes, jnp.result_type(float))
    wind = jnp.zeros((altitudes.shape[-1], 2), altitudes.dtype) if wind is None else jnp.asarray(wind, altitudes.dtype)
    atmosphere = LayerAtmosphere(
        r0=jnp.asarray(r0, altitudes.dtype),
        altitude=altitudes,
        weight=jnp.asarray(weights, altitudes.dtype),
        wind=wind,
        outer_scale=jnp.asarray(outer_scale, altitudes.dtype),
    )
    check_layer_atmosphere(atmosphere)
    return atmosphere


def _slab_integrals(boundaries: np.ndarray, profile: Callable, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(Int Cn2 dh, Int Cn2 h^(5/3) dh) over each slab [b_i, b_i+1] (trapezoid, ``samples`` points)."""
    h = np.linspace(boundaries[:-1], boundaries[1:], samples, axis=-1)  # [slabs, samples]
    c = np.asarray(profile(h), np.float64)
    return np.trapezoid(c, h, axis=-1), np.trapezoid(c * h ** (5.0 / 3.0), h, axis=-1)


def layers_from_cn2_profile(
    boundaries: Sequence[float],
    wind: jnp.ndarray | Sequence[Sequence[float]] | None = None,
    *,
    r0: jnp.ndarray | float | None = None,
    wavelength: float = 500e-9,
    altitudes: Sequence[float] | None = None,
    profile: Callable[[np.ndarray], Any] = hufnagel_valley,
    outer_scale: jnp.ndarray | float = jnp.inf,
    samples: int = 2001,
) -> LayerAtmosphere:
    """Layer model from a Cn2 profile integrated over slabs [b_0, b_1], [b_1, b_2], ... (m).

    Weights are each slab's share of Int Cn2 dh. Altitudes: by default each slab's effective
    altitude (Int Cn2 h^(5/3) / Int Cn2)^(3/5), which keeps both r0 and theta0 of the profile
    exactly (for the plane wave); or ``altitudes`` given (e.g. 1/4/20 km), which keeps r0 only.
    ``r0`` (m) defaults to the profile's own plane-wave zenith value at ``wavelength``
    (HV5/7 at 500 nm: 4.96 cm). ``profile`` maps heights (m, NumPy) to Cn2 (m^(-2/3)); default
    Hufnagel-Valley 5/7 (``turbjax.physics.optics.hufnagel_valley``).
    """
    b = np.asarray(boundaries, np.float64)
    if b.ndim != 1 or b.size < 2 or np.any(np.diff(b) <= 0) or b[0] < 0:
        raise ValueError(f"boundaries must be >= 2 increasing heights >= 0 m; got {b.tolist()}.")
    cn2, moment = _slab_integrals(b, profile, samples)
    if altitudes is None:
        heights = (moment / cn2) ** (3.0 / 5.0)
    else:
        heights = np.asarray(altitudes, np.float64)
        if heights.shape != cn2.shape:
            raise ValueError(f"altitudes must give one height per slab ({cn2.size}); got {heights.shape}.")
    if r0 is None:
        h = np.linspace(b[0], b[-1], (samples - 1) * (b.size - 1) + 1)
        r0 = float(fried_parameter_from_profile(h, np.asarray(profile(h)), wavelength))
    return layers_from_weights(r0, heights, cn2 / cn2.sum(), wind, outer_scale)


def hufnagel_valley_weights(
    altitudes: Sequence[float] = TMTS_ALTITUDES, top: float = 30000.0, **hv_kwargs: float
) -> np.ndarray:
    """Cn2 fractions of Hufnagel-Valley layers at ``altitudes`` (m): each layer takes the slab of
    heights closer to it than to its neighbours (boundaries at the midpoints, 0 and ``top``).

    For the TMTS altitudes 1/4/20 km and HV5/7 this gives about 0.91 / 0.07 / 0.02 (the profile
    puts 89% of Int Cn2 below 2 km), against the printed 0.6 / 0.3 / 0.1.
    """
    h = np.asarray(altitudes, np.float64)
    bounds = np.concatenate([[0.0], 0.5 * (h[1:] + h[:-1]), [top]])
    cn2, _ = _slab_integrals(bounds, lambda z: hufnagel_valley(z, **hv_kwargs), 2001)
    return cn2 / cn2.sum()


def _wave_factor(atmosphere: LayerAtmosphere, wave: Wave, distance) -> jnp.ndarray:
    """Path weight (1 - h/L)^(5/3) of each layer for a spherical wave from distance L, 1 for a plane wave."""
    if wave == "plane":
        return jnp.ones_like(atmosphere.weight)
    if wave == "spherical":
        if distance is None:
            raise ValueError("wave='spherical' needs the source distance (m) from the aperture.")
        return jnp.clip(1.0 - atmosphere.altitude / jnp.asarray(distance)[..., None], 0.0, 1.0) ** (5.0 / 3.0)
    raise ValueError(f"wave must be 'spherical' or 'plane'; got {wave!r}.")


def layer_fried_parameters(atmosphere: LayerAtmosphere, wave: Wave = "plane", distance=None) -> jnp.ndarray:
    """Per-layer Fried parameters r0_i (m), [..., L]: the r0 each layer alone would give.

    Plane wave: r0_i = r0 w_i^(-3/5). Spherical wave from a point at ``distance`` L (m) from the
    aperture: layer i is weighted by a_i = (1 - h_i/L)^(5/3), r0_i = r0 (w_i a_i / sum w a)^(-3/5).
    A layer of weight 0 has r0_i = inf. ``combined_fried_parameter`` of the result is r0.
    """
    share = atmosphere.weight * _wave_factor(atmosphere, wave, distance)
    share = share / jnp.sum(share, axis=-1, keepdims=True)
    positive = share > 0
    safe = jnp.where(positive, share, 1.0)
    return jnp.where(positive, jnp.asarray(atmosphere.r0)[..., None] * safe ** (-3.0 / 5.0), jnp.inf)


def combined_fried_parameter(layer_r0: jnp.ndarray) -> jnp.ndarray:
    """r0 = (sum_i r0_i^(-5/3))^(-3/5) (m) of independent layers [..., L] (m)."""
    return jnp.sum(jnp.asarray(layer_r0) ** (-5.0 / 3.0), axis=-1) ** (-3.0 / 5.0)


def layer_cn2_integrals(atmosphere: LayerAtmosphere, wavelength, wave: Wave = "plane", distance=None) -> jnp.ndarray:
    """Int Cn2 dh of each layer (m^(1/3)), [..., L], from r0 (at ``wavelength``, m) and the weights."""
    k = wavenumber(wavelength)
    total = jnp.asarray(atmosphere.r0) ** (-5.0 / 3.0) / (FRIED_CONSTANT * k**2)
    a = _wave_factor(atmosphere, wave, distance)
    return atmosphere.weight * (total / jnp.sum(atmosphere.weight * a, axis=-1))[..., None]


def layer_isoplanatic_angle(atmosphere: LayerAtmosphere, wave: Wave = "plane", distance=None) -> jnp.ndarray:
    """Isoplanatic angle theta0 (rad) of the layer model.

    Plane wave: theta0 = 0.314 r0 / h_bar, h_bar = (sum_i w_i h_i^(5/3))^(3/5). Spherical wave from a
    point at ``distance`` L (m), with the conventions of ``turbjax.physics.optics`` (weights
    a_i = (1 - h_i/L)^(5/3) in both integrals): theta0 = 0.314 r0 (sum w a)^(3/5) / (sum w h^(5/3) a)^(3/5).
    """
    a = _wave_factor(atmosphere, wave, distance)
    moment = jnp.sum(atmosphere.weight * a * atmosphere.altitude ** (5.0 / 3.0), axis=-1)
    norm = jnp.sum(atmosphere.weight * a, axis=-1)
    return THETA0_CONSTANT * jnp.asarray(atmosphere.r0) * (norm / moment) ** (3.0 / 5.0)


def layer_screens_init(
    key: jax.Array,
    atmosphere: LayerAtmosphere,
    n: int,
    dx: jnp.ndarray | float,
    *,
    dt: jnp.ndarray | float = 1.0,
    alpha: jnp.ndarray | float = 0.99,
    subharmonics: bool = True,
    levels: int = SUBHARMONIC_LEVELS,
) -> ARScreen:
    """AR screens of every layer (a batched ``ARScreen`` with a leading layer axis [L, ...]).

    Layer i gets r0_i = r0 w_i^(-3/5) and its own wind; all share the grid (n, ``dx`` m), ``dt`` (s)
    and ``alpha``. Summing the layers' phases gives a screen of the total r0.
    """
    r0_layers = layer_fried_parameters(atmosphere)
    keys = jax.random.split(key, atmosphere.num_layers)

    def init(k, r0_i, v):
        return ar_screen_init(
            k,
            n,
            dx,
            r0_i,
            atmosphere.outer_scale,
            velocity=v,
            dt=dt,
            alpha=alpha,
            subharmonics=subharmonics,
            levels=levels,
        )

    return jax.vmap(init)(keys, r0_layers, atmosphere.wind)
