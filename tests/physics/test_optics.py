"""Turbulence strength against closed forms and the HV5/7 reference values (PHYSICS.md)."""

import math

import jax
import numpy as np
import pytest

from turbjax import physics as P

OPTICS = P.Optics(wavelength=550e-9, focal_length=0.4, f_number=5.6, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=2e-14, distance=750.0, height=20.0, wind_speed=3.0)


def _k(lam):
    return 2 * math.pi / lam


def test_fried_parameter_closed_forms():
    plane = float(P.fried_parameter(OPTICS, ATMOS, wave="plane"))
    sph = float(P.fried_parameter(OPTICS, ATMOS, wave="spherical"))
    expected_plane = (0.423 * _k(550e-9) ** 2 * 2e-14 * 750.0) ** (-0.6)
    expected_sph = (0.423 * _k(550e-9) ** 2 * 2e-14 * 750.0 * 3 / 8) ** (-0.6)
    np.testing.assert_allclose(plane, expected_plane, rtol=1e-3)
    np.testing.assert_allclose(sph, expected_sph, rtol=1e-3)
    np.testing.assert_allclose(sph / plane, (8 / 3) ** 0.6, rtol=1e-3)  # 1.80x


def test_fried_parameter_wavelength_scaling():
    r1 = float(P.fried_parameter(OPTICS, ATMOS))
    r2 = float(P.fried_parameter(OPTICS.replace(wavelength=1100e-9), ATMOS))
    np.testing.assert_allclose(r2 / r1, 2.0**1.2, rtol=1e-3)


def test_isoplanatic_angle_closed_forms():
    plane = float(P.isoplanatic_angle(OPTICS, ATMOS, wave="plane"))
    sph = float(P.isoplanatic_angle(OPTICS, ATMOS, wave="spherical"))
    integral_plane = 2e-14 * 750.0 ** (8 / 3) * 3 / 8
    beta = math.gamma(8 / 3) ** 2 / math.gamma(16 / 3)
    np.testing.assert_allclose(plane, (2.914 * _k(550e-9) ** 2 * integral_plane) ** (-0.6), rtol=1e-3)
    np.testing.assert_allclose(sph, (2.914 * _k(550e-9) ** 2 * 2e-14 * 750.0 ** (8 / 3) * beta) ** (-0.6), rtol=1e-3)
    assert sph > plane  # the converging cone sees less of the far path


def test_hufnagel_valley_reference_values():
    h = np.linspace(0.0, 30000.0, 300001)
    cn2 = P.hufnagel_valley(h)
    r0 = float(P.fried_parameter_from_profile(h, cn2, 500e-9))
    theta0 = float(P.isoplanatic_angle_from_profile(h, cn2, 500e-9))
    np.testing.assert_allclose(r0, 4.96e-2, rtol=1e-3)
    np.testing.assert_allclose(theta0, 6.89e-6, rtol=1e-3)
    below_2km = np.trapezoid(np.asarray(cn2)[h <= 2000], h[h <= 2000]) / np.trapezoid(np.asarray(cn2), h)
    np.testing.assert_allclose(below_2km, 0.89, atol=0.01)


def test_zenith_angle_scaling():
    h = np.linspace(0.0, 30000.0, 30001)
    cn2 = P.hufnagel_valley(h)
    r0_0 = float(P.fried_parameter_from_profile(h, cn2, 500e-9))
    r0_60 = float(P.fried_parameter_from_profile(h, cn2, 500e-9, zenith_angle=math.pi / 3))
    np.testing.assert_allclose(r0_60 / r0_0, 2.0**-0.6, rtol=1e-4)


def test_surface_layer_scaling():
    np.testing.assert_allclose(float(P.surface_layer_cn2(1e-13, 8.0, 2.0)), 1e-13 * 4.0 ** (-2 / 3), rtol=1e-5)
    np.testing.assert_allclose(
        float(P.surface_layer_cn2(1e-13, 8.0, 2.0, exponent=-4 / 3)), 1e-13 * 4.0 ** (-4 / 3), rtol=1e-5
    )


def test_parameters_vmap_over_batch():
    batch = P.Atmosphere(cn2=np.array([1e-14, 4e-14]), distance=np.array([500.0, 500.0]), height=10.0, wind_speed=2.0)
    r0 = jax.vmap(lambda a: P.fried_parameter(OPTICS, a), in_axes=(P.Atmosphere(0, 0, None, None),))(batch)
    np.testing.assert_allclose(float(r0[0] / r0[1]), 4.0**0.6, rtol=1e-3)


@pytest.mark.parametrize(
    "field,value,name",
    [
        ("cn2", -1e-14, "atmosphere.cn2"),
        ("cn2", float("nan"), "atmosphere.cn2"),
        ("distance", 0.0, "atmosphere.distance"),
        ("wind_speed", -1.0, "atmosphere.wind_speed"),
    ],
)
def test_check_parameters_names_the_bad_one(field, value, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        P.check_parameters(OPTICS, ATMOS.replace(**{field: value}), 1e-3)


def test_check_parameters_exposure():
    with pytest.raises(ValueError, match=r"exposure_time must be finite and in \(0, inf\]"):
        P.check_parameters(OPTICS, ATMOS, 0.0)
