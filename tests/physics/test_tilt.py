"""Tilt fields: Z-tilt variance law, isotropy, Chanan correlations, no periodicity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

from turbjax import physics as P
from turbjax.physics.tilt import aperture_units_per_pixel

# u per pixel = pitch L N / f^2 = 1/16: lags of 16 and 32 px are 1 and 2 aperture separations.
OPTICS = P.Optics(wavelength=550e-9, focal_length=0.5, f_number=8.0, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=5e-14, distance=390.625, height=20.0, wind_speed=3.0)
N = 128
N_FIELDS = 2000


def test_geometry_of_the_test_setup():
    np.testing.assert_allclose(float(aperture_units_per_pixel(OPTICS, ATMOS)), 1 / 16, rtol=1e-5)


@pytest.mark.parametrize("s,par,perp", [(0.5, 0.76, 0.91), (1.0, 0.54, 0.77), (2.0, 0.41, 0.62), (4.0, 0.31, 0.48)])
def test_chanan_curves_match_literature(s, par, perp):
    """Quoted curves (PHYSICS.md) sit 0.01-0.03 below the infinite-outer-scale integrals."""
    got = P.chanan_correlation(jnp.asarray(s))
    np.testing.assert_allclose([float(got[0]), float(got[1])], [par, perp], atol=0.03)
    assert float(got[0]) >= par - 0.002 and float(got[1]) >= perp - 0.002


def _chanan_quad(s):
    """Chanan's integrals by adaptive quadrature from x = 0 (independent of the table)."""
    w = lambda x: x ** (-8 / 3) * (special.jv(2, x) / x) ** 2  # noqa: E731

    def integral(f):
        pieces = [(0.0, 1e-6), (1e-6, 1.0), (1.0, 10.0), (10.0, 100.0), (100.0, 2000.0)]
        return sum(integrate.quad(f, a, b, limit=2000)[0] for a, b in pieces)

    norm = integral(w)
    par = integral(lambda x: w(x) * (special.j0(2 * s * x) - special.jv(2, 2 * s * x)))
    perp = integral(lambda x: w(x) * (special.j0(2 * s * x) + special.jv(2, 2 * s * x)))
    return par / norm, perp / norm


@pytest.mark.parametrize("s", [1.0, 4.0])
def test_chanan_table_against_quadrature(s):
    got = P.chanan_correlation(jnp.asarray(s))
    np.testing.assert_allclose([float(got[0]), float(got[1])], _chanan_quad(s), atol=3e-3)


@pytest.mark.parametrize("u", [0.5, 2.0])
def test_plane_wave_path_average_by_nested_quadrature(u):
    """Plane wave: rho(u) = Int_0^1 rho_chanan(u t) dt."""
    t, wt = np.polynomial.legendre.leggauss(24)
    t, wt = 0.5 * (t + 1), 0.5 * wt
    curves = np.array([_chanan_quad(u * ti) for ti in t])
    expected = wt @ curves
    got = P.path_tilt_correlation(jnp.asarray(u), wave="plane")
    np.testing.assert_allclose([float(got[0]), float(got[1])], expected, atol=0.01)


@pytest.mark.parametrize("u", [0.25, 1.0, 4.0])
def test_spherical_path_average(u):
    """Spherical: weight (1-t)^(5/3), footprint (1-t): s = u t / (1 - t); by adaptive quad."""

    def avg(component):
        f = lambda t: (1 - t) ** (5 / 3) * float(P.chanan_correlation(u * t / (1 - t))[component])  # noqa: E731
        return integrate.quad(f, 0.0, 1.0, limit=200)[0] / (3 / 8)

    got = P.path_tilt_correlation(jnp.asarray(u))
    np.testing.assert_allclose([float(got[0]), float(got[1])], [avg(0), avg(1)], atol=0.01)


@functools.cache
def _fields():
    """2000 independent 128^2 fields, drawn in chunks (one vmap of all 2000 needs ~10 GB)."""
    keys = jax.random.split(jax.random.key(0), N_FIELDS)
    fn = jax.jit(jax.vmap(lambda k: P.tilt_field(k, (N, N), OPTICS, ATMOS)))
    return np.concatenate([np.asarray(fn(chunk)) for chunk in keys.reshape(10, -1)]).astype(np.float64)


def test_per_pixel_variance_matches_z_tilt_law():
    fields = _fields()
    theory = float(P.tilt_std_px(OPTICS, ATMOS)) ** 2
    lam, d, f, p = 550e-9, 0.5 / 8, 0.5, 5e-6
    r0 = (0.423 * (2 * np.pi / lam) ** 2 * 5e-14 * 390.625 * 3 / 8) ** (-0.6)
    np.testing.assert_allclose(theory, 0.1822 * lam**2 * d ** (-1 / 3) * r0 ** (-5 / 3) * (f / p) ** 2, rtol=1e-4)
    per_pixel = (fields**2).mean(axis=0)  # [N, N, 2], zero-mean field
    np.testing.assert_allclose(per_pixel.mean(), theory, rtol=0.05)
    # Uniform over the frame: 4 x 4 blocks each within +-8% (block estimates carry ~3% noise).
    blocks = per_pixel.mean(-1).reshape(4, N // 4, 4, N // 4).mean(axis=(1, 3))
    np.testing.assert_allclose(blocks, theory, rtol=0.08)


def test_isotropy_sigma_x_over_sigma_y():
    fields = _fields()
    ratio = np.sqrt((fields[..., 0] ** 2).mean() / (fields[..., 1] ** 2).mean())
    np.testing.assert_allclose(ratio, 1.0, atol=0.03)


def _correlation(fields, lag, axis, component):
    n = fields.shape[1]
    a = np.take(fields[..., component], np.arange(n - lag), axis=axis + 1)
    b = np.take(fields[..., component], np.arange(lag, n), axis=axis + 1)
    return (a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean())


@pytest.mark.parametrize("lag", [16, 32, 64, 127])
def test_correlations_follow_path_averaged_chanan(lag):
    """Longitudinal (x-tilt along x, y-tilt along y) and transverse correlations at lags of
    1, 2 aperture separations and at the non-wrapping lags N/2, N-1 (a field periodic with
    period N or N/2 would be fully correlated there)."""
    fields = _fields()
    par, perp = (float(v) for v in P.path_tilt_correlation(jnp.asarray(lag / 16)))
    assert par < perp  # the curves differ: a single-curve field would fail one of the below
    got_par = 0.5 * (_correlation(fields, lag, 1, 0) + _correlation(fields, lag, 0, 1))
    got_perp = 0.5 * (_correlation(fields, lag, 0, 0) + _correlation(fields, lag, 1, 1))
    np.testing.assert_allclose([got_par, got_perp], [par, perp], atol=0.05)


def test_larger_embedding_gives_the_same_statistics():
    fn = jax.jit(jax.vmap(lambda k: P.tilt_field(k, (64, 64), OPTICS, ATMOS, embed_factor=4.0)))
    keys = jax.random.split(jax.random.key(5), 1000).reshape(4, -1)
    fields = np.concatenate([np.asarray(fn(chunk)) for chunk in keys]).astype(np.float64)
    theory = float(P.tilt_std_px(OPTICS, ATMOS)) ** 2
    np.testing.assert_allclose((fields**2).mean(), theory, rtol=0.06)
    par = float(P.path_tilt_correlation(jnp.asarray(32 / 16))[0])
    np.testing.assert_allclose(_correlation(fields, 32, 1, 0), par, atol=0.05)


def test_small_embedding_is_refused():
    with pytest.raises(ValueError, match="embed_factor"):
        P.tilt_field(jax.random.key(0), (16, 16), OPTICS, ATMOS, embed_factor=2.0)


@pytest.mark.parametrize("u_scale", [1.0, 4.0])
def test_embedded_covariance_is_exact_within_the_frame(u_scale):
    """The covariance the generator implies (inverse FFT of its amplitudes, no sampling noise)
    equals the path-averaged theory at every lag along rows, columns and diagonals of a frame,
    to 0.02 of the variance: what remains is the clipped negative side lobes of the tapered
    embedding near DC (~2% of the variance when the correlation barely decays across the frame,
    u N = 4 here; < 0.1% at u N = 8)."""
    from turbjax.physics.tilt import embedding_canvas, tilt_spectrum

    atmos = ATMOS.replace(distance=ATMOS.distance * u_scale)
    n = 64
    side = embedding_canvas((n, n), 3.0)
    amp_x, amp_y, offset = tilt_spectrum(side, float(n), OPTICS, atmos)
    cxx = np.fft.irfft2(np.asarray(amp_x, np.float64) ** 2, s=(side, side)) + float(offset) ** 2
    cyy = np.fft.irfft2(np.asarray(amp_y, np.float64) ** 2, s=(side, side)) + float(offset) ** 2
    cxy = np.fft.irfft2(np.asarray(amp_x * amp_y, np.float64), s=(side, side))
    lags = np.arange(n)
    for ly, lx in [(0 * lags, lags), (lags, 0 * lags), (lags // 2, lags // 2), (lags // 2, -(lags // 2))]:
        theory = [
            np.asarray(c)
            for c in P.tilt_covariance(jnp.asarray(ly, jnp.float32), jnp.asarray(lx, jnp.float32), OPTICS, atmos)
        ]
        got = [c[ly % side, lx % side] for c in (cxx, cyy, cxy)]
        var = float(P.tilt_std_px(OPTICS, atmos)) ** 2
        for g, t in zip(got, theory, strict=True):
            np.testing.assert_allclose(g / var, t / var, atol=0.02)
