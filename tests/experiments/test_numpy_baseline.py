"""The benchmark's NumPy/SciPy baseline computes the same pipeline as turbjax (independent code:
brentq vs bisection width inversion, eigen-free NumPy embedding, scipy warps)."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.baselines import numpy_et_turb as B
from turbjax import physics as P

OPTICS = P.Optics(wavelength=550e-9, focal_length=0.4, f_number=5.6, pixel_pitch=5e-6)
ATMOS = P.Atmosphere(cn2=3e-13, distance=400.0, height=20.0, wind_speed=4.0)
TAU = 4e-3
ARGS = (550e-9, 0.4, 5.6, 5e-6)


def test_spatially_varying_blur_agrees():
    image = np.asarray(jax.random.uniform(jax.random.key(0), (48, 48, 3)), np.float32)
    # Widths above ~1.3 px: below that no PSF is sharper (diffraction at F/5.6 plus sampling),
    # and the two inversions stop at different, equally flat points of the FWHM curve.
    widths = np.asarray(P.blur_width_field(jax.random.key(1), (48, 48), OPTICS, ATMOS, TAU))
    widths = widths - widths.min() + 1.4
    ours = np.asarray(P.spatially_varying_blur(jnp.asarray(image), jnp.asarray(widths), OPTICS, ATMOS, TAU, pad=16))
    theirs = B.varying_blur(image.astype(np.float64), widths.astype(np.float64), *ARGS, 4.0, TAU, k=6, pad=16)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_blur_statistics_agree():
    mean, std = P.blur_width_stats(OPTICS, ATMOS, TAU)
    np.testing.assert_allclose(B.blur_stats(*ARGS, 3e-13, 400.0, 4.0, TAU), [float(mean), float(std)], rtol=1e-4)


def test_tilt_variance_law():
    rng = np.random.default_rng(0)
    fields = np.stack([B.tilt_field(rng, 32, *ARGS, 3e-13, 400.0) for _ in range(400)])
    np.testing.assert_allclose((fields**2).mean(), float(P.tilt_std_px(OPTICS, ATMOS)) ** 2, rtol=0.08)
