"""MTF limits, monotonicity in exposure time, the printed constants, PSF and FWHM laws."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from turbjax import physics as P
from turbjax.physics.mtf import diffraction_mtf

OPTICS = P.Optics(wavelength=550e-9, focal_length=0.3, f_number=4.0, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=5e-14, distance=300.0, height=20.0, wind_speed=4.0)
FREQ = jnp.linspace(0.0, 0.5, 101)  # cycles/pixel up to Nyquist


def test_long_exposure_matches_seed_eq6():
    """57.4 a Cn2 L lambda^(-1/3) nu^(5/3), a = 3/8 for a spherical wave (seed eq. 6)."""
    nu = np.asarray(FREQ) / (5e-6 / 0.3)
    expected = np.exp(-57.4 * 3 / 8 * 5e-14 * 300.0 * (550e-9) ** (-1 / 3) * nu ** (5 / 3))
    got = np.asarray(P.mtf_long_exposure(FREQ, OPTICS, ATMOS))
    # 57.4 is 3.44 * 0.423 * 4 pi^2 = 57.44 rounded: compare exponents to 0.2%.
    np.testing.assert_allclose(np.log(got[1:]), np.log(expected[1:]), rtol=2e-3)
    np.testing.assert_allclose(3.44 * 0.423 * 4 * math.pi**2, 57.4, rtol=1e-3)


def test_short_exposure_formula():
    r0 = float(P.fried_parameter(OPTICS, ATMOS))
    lam_nu = 550e-9 * np.asarray(FREQ) / (5e-6 / 0.3)
    d = 0.3 / 4.0
    for alpha in (0.5, 1.0):
        expected = np.exp(-3.44 * (lam_nu / r0) ** (5 / 3) * (1 - alpha * (lam_nu / d) ** (1 / 3)))
        got = np.asarray(P.mtf_short_exposure(FREQ, OPTICS, ATMOS, alpha=alpha))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_exposure_mtf_limits():
    se = np.asarray(P.mtf_short_exposure(FREQ, OPTICS, ATMOS))
    le = np.asarray(P.mtf_long_exposure(FREQ, OPTICS, ATMOS))
    zero = np.asarray(P.mtf_exposure(FREQ, OPTICS, ATMOS, 0.0))
    np.testing.assert_allclose(zero, se, rtol=1e-6)
    # The bracket term (lambda nu / D_eff)^(1/3) vanishes only like tau^(-1/3): at tau = 1e9 s
    # it is ~1.6e-4 at Nyquist. Compare in log space where the MTF is meaningful.
    mask = le > 1e-6
    inf = np.asarray(P.mtf_exposure(FREQ, OPTICS, ATMOS, 1e9))
    np.testing.assert_allclose(np.log(inf[mask]), np.log(le[mask]), rtol=2e-3)
    gaps = [
        np.abs(np.log(np.asarray(P.mtf_exposure(FREQ, OPTICS, ATMOS, t))[mask] / le[mask])).max() for t in (1e3, 1e6)
    ]
    np.testing.assert_allclose(gaps[0] / gaps[1], 10.0, rtol=0.05)  # (1e3)^(1/3)
    assert np.all(se >= le - 1e-7)


def test_exposure_mtf_non_increasing_in_tau():
    taus = np.geomspace(1e-5, 10.0, 60)
    curves = np.stack([np.asarray(P.mtf_exposure(FREQ, OPTICS, ATMOS, t)) for t in taus])
    assert np.all(np.diff(curves, axis=0) <= 1e-7)
    # and strictly decreasing at mid frequencies over the 0.5-40 ms range the seed uses
    mid = np.stack([np.asarray(P.mtf_exposure(FREQ[60], OPTICS, ATMOS, t)) for t in (5e-4, 4e-2)])
    assert mid[1] < mid[0] * 0.97


def test_paper_form_is_the_printed_formula():
    tau = 5e-3
    r0 = float(P.fried_parameter(OPTICS, ATMOS))
    rho = 1 + 0.35 * (r0 / (0.3 / 4.0 + 4.0 * tau)) ** (1 / 3)
    nu = np.asarray(FREQ) / (5e-6 / 0.3)
    expected = np.exp(-((550e-9 * nu / rho) ** (5 / 3)))
    got = np.asarray(P.mtf_exposure(FREQ, OPTICS, ATMOS, tau, form="paper"))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Dimensionally inconsistent as printed: it barely blurs at all.
    assert got.min() > 0.99


def test_diffraction_mtf_values():
    # x = lambda nu / D = 0.5 -> (2/pi)(acos 0.5 - 0.5 sqrt(0.75)) = 0.3910
    cutoff = (0.3 / 4.0) / 550e-9 * (5e-6 / 0.3)  # cycles/pixel
    values = np.asarray(diffraction_mtf(jnp.array([0.0, 0.5 * cutoff, cutoff, 2 * cutoff]), OPTICS))
    np.testing.assert_allclose(values, [1.0, 0.3910, 0.0, 0.0], atol=2e-4)


def test_psf_from_mtf_properties():
    n = 33
    mtf = P.mtf_exposure(P.frequency_grid(n), OPTICS, ATMOS, 5e-3, include_diffraction=True)
    psf = np.asarray(P.psf_from_mtf(mtf))
    assert psf.min() >= 0.0
    np.testing.assert_allclose(psf.sum(), 1.0, rtol=1e-5)
    assert np.unravel_index(psf.argmax(), psf.shape) == (16, 16)  # centred: tilt-free
    np.testing.assert_allclose(psf, psf[::-1, ::-1], atol=1e-7)
    np.testing.assert_allclose(psf, psf.T, atol=1e-7)


def test_fwhm_of_gaussian():
    n = 41
    y, x = np.mgrid[:n, :n] - n // 2
    for sigma in (0.8, 1.5, 3.0):
        g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
        np.testing.assert_allclose(float(P.fwhm(jnp.asarray(g))), 2.3548 * sigma, rtol=0.01)


@pytest.mark.parametrize("width", [2.0, 3.0, 5.0, 8.0])
@pytest.mark.parametrize("tau", [5e-4, 2e-2])
def test_psf_for_width_has_that_fwhm(width, tau):
    psf = P.psf_for_width(width, 65, OPTICS, ATMOS, tau)
    np.testing.assert_allclose(float(P.fwhm(psf)), width, rtol=0.05)


def test_seeing_fwhm_law():
    """The long-exposure PSF's FWHM is 0.98 lambda / r0 (PHYSICS.md), measured on a kernel."""
    strong = ATMOS.replace(cn2=5e-13)
    n = 129
    mtf = P.mtf_long_exposure(P.frequency_grid(n), OPTICS, strong)
    width_px = float(P.fwhm(P.psf_from_mtf(mtf)))
    r0 = float(P.fried_parameter(OPTICS, strong))
    np.testing.assert_allclose(width_px, 0.98 * 550e-9 / r0 / (5e-6 / 0.3), rtol=0.03)
