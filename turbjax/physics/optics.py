"""Camera optics and atmosphere parameter pytrees, turbulence strength and profiles.

SI units throughout: metres, seconds, radians, Cn2 in m^(-2/3). Fields of :class:`Optics` and
:class:`Atmosphere` may be Python floats or arrays; a leading batch axis on every field
makes a batch of parameter sets that ``jax.vmap`` maps over, and the functions below are
differentiable in every field.
"""

from __future__ import annotations

import math
from typing import Literal

import jax.numpy as jnp
from flax import struct

from turbjax.physics.checks import check_positive, check_range

Wave = Literal["spherical", "plane"]

# Constants of the Kolmogorov theory (see PHYSICS.md).
FRIED_CONSTANT = 0.423  # r0 = [0.423 k^2 Int Cn2 dz]^(-3/5)
ISOPLANATIC_CONSTANT = 2.914  # theta0 = [2.914 k^2 Int Cn2 z^(5/3) dz]^(-3/5)
# Int_0^1 t^(5/3) dt: spherical-wave weight (z/L)^(5/3) for a uniform path.
SPHERICAL_R0_WEIGHT = 3.0 / 8.0
# Int_0^1 t^(5/3) (1 - t)^(5/3) dt = B(8/3, 8/3): spherical-wave isoplanatic weight.
SPHERICAL_THETA0_WEIGHT = math.gamma(8.0 / 3.0) ** 2 / math.gamma(16.0 / 3.0)


@struct.dataclass
class Optics:
    """Imaging system.

    Attributes:
      wavelength: mean wavelength, m.
      focal_length: m.
      f_number: focal_length / aperture diameter (dimensionless).
      pixel_pitch: sensor pixel size, m.
    """

    wavelength: jnp.ndarray | float
    focal_length: jnp.ndarray | float
    f_number: jnp.ndarray | float
    pixel_pitch: jnp.ndarray | float

    @property
    def aperture(self) -> jnp.ndarray:
        """Aperture diameter D = focal_length / f_number, m."""
        return jnp.asarray(self.focal_length) / jnp.asarray(self.f_number)

    @property
    def ifov(self) -> jnp.ndarray:
        """Instantaneous field of view of one pixel, rad/pixel."""
        return jnp.asarray(self.pixel_pitch) / jnp.asarray(self.focal_length)


@struct.dataclass
class Atmosphere:
    """Turbulent propagation path.

    Attributes:
      cn2: refractive-index structure parameter of the path, m^(-2/3). Used as given
        (uniform along the path); ``height`` does not rescale it.
      distance: path length from the camera aperture to the scene, m.
      height: height of the path above ground, m (used by profile helpers only).
      wind_speed: transverse wind speed, m/s (frozen flow across the aperture).
    """

    cn2: jnp.ndarray | float
    distance: jnp.ndarray | float
    height: jnp.ndarray | float
    wind_speed: jnp.ndarray | float


def wavenumber(wavelength: jnp.ndarray | float) -> jnp.ndarray:
    """Optical wavenumber k = 2 pi / lambda, rad/m."""
    return 2.0 * jnp.pi / jnp.asarray(wavelength)


def _path_weight(wave: Wave, spherical: float, plane: float) -> float:
    if wave == "spherical":
        return spherical
    if wave == "plane":
        return plane
    raise ValueError(f"wave must be 'spherical' or 'plane'; got {wave!r}.")


def fried_parameter(optics: Optics, atmosphere: Atmosphere, wave: Wave = "spherical") -> jnp.ndarray:
    """Fried parameter r0 (m) of a horizontal path of uniform Cn2.

    Plane wave: r0 = [0.423 k^2 Cn2 L]^(-3/5). Spherical wave (point source in the scene,
    the default for a camera imaging a scene through a horizontal path): the path integral
    is weighted by (z/L)^(5/3) with z measured from the source, which for a uniform path is
    3/8, so the spherical r0 is (8/3)^(3/5) = 1.80 times the plane-wave r0.
    """
    weight = _path_weight(wave, SPHERICAL_R0_WEIGHT, 1.0)
    k = wavenumber(optics.wavelength)
    integral = weight * jnp.asarray(atmosphere.cn2) * jnp.asarray(atmosphere.distance)
    return (FRIED_CONSTANT * k**2 * integral) ** (-3.0 / 5.0)


def isoplanatic_angle(optics: Optics, atmosphere: Atmosphere, wave: Wave = "spherical") -> jnp.ndarray:
    """Isoplanatic angle theta0 (rad) of a horizontal path of uniform Cn2.

    Plane wave: theta0 = [2.914 k^2 Cn2 Int_0^L z^(5/3) dz]^(-3/5) with z from the aperture,
    i.e. the integral is (3/8) L^(8/3). Spherical wave: the integrand gains the factor
    (1 - z/L)^(5/3) (the cone from the point source shrinks towards it), giving
    B(8/3, 8/3) L^(8/3).
    """
    weight = _path_weight(wave, SPHERICAL_THETA0_WEIGHT, 3.0 / 8.0)
    k = wavenumber(optics.wavelength)
    integral = weight * jnp.asarray(atmosphere.cn2) * jnp.asarray(atmosphere.distance) ** (8.0 / 3.0)
    return (ISOPLANATIC_CONSTANT * k**2 * integral) ** (-3.0 / 5.0)


def hufnagel_valley(h: jnp.ndarray | float, wind_rms: float = 21.0, ground_cn2: float = 1.7e-14) -> jnp.ndarray:
    """Hufnagel-Valley Cn2 profile (m^(-2/3)) at height ``h`` (m) above ground.

    Cn2(h) = 0.00594 (v/27)^2 (1e-5 h)^10 exp(-h/1000) + 2.7e-16 exp(-h/1500) + A exp(-h/100);
    the defaults (v = 21 m/s, A = 1.7e-14) are the HV5/7 model.
    """
    h = jnp.asarray(h)
    return (
        0.00594 * (wind_rms / 27.0) ** 2 * (1e-5 * h) ** 10 * jnp.exp(-h / 1000.0)
        + 2.7e-16 * jnp.exp(-h / 1500.0)
        + ground_cn2 * jnp.exp(-h / 100.0)
    )


def surface_layer_cn2(
    cn2_ref: jnp.ndarray | float,
    height: jnp.ndarray | float,
    reference_height: jnp.ndarray | float,
    exponent: float = -2.0 / 3.0,
) -> jnp.ndarray:
    """Scale a Cn2 measured at ``reference_height`` to ``height`` in the surface layer.

    Cn2(h) = Cn2(h0) (h / h0)^exponent; -2/3 for neutral or stable conditions, -4/3 in
    strongly unstable (convective) conditions.
    """
    return jnp.asarray(cn2_ref) * (jnp.asarray(height) / jnp.asarray(reference_height)) ** exponent


def _trapezoid(y: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum(0.5 * (y[..., 1:] + y[..., :-1]) * (x[..., 1:] - x[..., :-1]), axis=-1)


def fried_parameter_from_profile(
    heights: jnp.ndarray, cn2: jnp.ndarray, wavelength: float, zenith_angle: float = 0.0
) -> jnp.ndarray:
    """Plane-wave r0 (m) looking up through a sampled Cn2 profile (trapezoid rule).

    ``heights`` (m) increasing along the last axis; ``zenith_angle`` in rad.
    """
    k = wavenumber(wavelength)
    integral = _trapezoid(jnp.asarray(cn2), jnp.asarray(heights)) / jnp.cos(zenith_angle)
    return (FRIED_CONSTANT * k**2 * integral) ** (-3.0 / 5.0)


def isoplanatic_angle_from_profile(
    heights: jnp.ndarray, cn2: jnp.ndarray, wavelength: float, zenith_angle: float = 0.0
) -> jnp.ndarray:
    """Isoplanatic angle theta0 (rad) looking up through a sampled Cn2 profile."""
    k = wavenumber(wavelength)
    heights = jnp.asarray(heights)
    integral = _trapezoid(jnp.asarray(cn2) * heights ** (5.0 / 3.0), heights)
    integral = integral / jnp.cos(zenith_angle) ** (8.0 / 3.0)
    return (ISOPLANATIC_CONSTANT * k**2 * integral) ** (-3.0 / 5.0)


def check_parameters(optics: Optics, atmosphere: Atmosphere, exposure_time: jnp.ndarray | float | None = None) -> None:
    """Raise ``ValueError`` naming the first out-of-range physical parameter (concrete values)."""
    check_positive("optics.wavelength", optics.wavelength, "m")
    check_positive("optics.focal_length", optics.focal_length, "m")
    check_positive("optics.f_number", optics.f_number)
    check_positive("optics.pixel_pitch", optics.pixel_pitch, "m")
    check_range("atmosphere.cn2", atmosphere.cn2, 0.0, 1e-9, low_inclusive=False, unit="m^-2/3")
    check_positive("atmosphere.distance", atmosphere.distance, "m")
    check_range("atmosphere.height", atmosphere.height, 0.0, None, unit="m")
    check_range("atmosphere.wind_speed", atmosphere.wind_speed, 0.0, None, unit="m/s")
    if exposure_time is not None:
        check_positive("exposure_time", exposure_time, "s")
