"""The satellite benchmark's NumPy baseline computes the same PSFs and blended blur as turbjax
(independent code: lstsq plane fit, fftconvolve on the weights' supports)."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.baselines import numpy_satellite as B
from turbjax import physics as P
from turbjax.physics import satellite as SA
from turbjax.physics import screens as S

SETTINGS = SA.SatelliteSettings(grid=3, psf_size=16, oversample=4)
N_W = SETTINGS.pupil_window  # 32 samples
MASK = S.circular_pupil(N_W, 28.0)


def _phases(count: int) -> jnp.ndarray:
    keys = jax.random.split(jax.random.key(0), count)
    return jax.vmap(lambda k: P.phase_screen(k, N_W, 0.5 / 28.0, 0.05))(keys)


def test_psfs_agree():
    phases = _phases(2)
    ours = jax.vmap(lambda p: SA.pupil_psf(p, MASK, SETTINGS))(S.remove_piston_tilt(phases, MASK))
    mask = np.asarray(MASK, np.float64)
    theirs = [B.pupil_psf(B.remove_plane(np.asarray(p, np.float64), mask), mask, 16, 4) for p in phases]
    np.testing.assert_allclose(np.asarray(ours), np.stack(theirs), atol=2e-6)


def test_blended_blur_agrees():
    h, w, g, k = 40, 52, SETTINGS.grid, SETTINGS.psf_size
    image = np.asarray(jax.random.uniform(jax.random.key(1), (h, w, 2)), np.float64)
    psfs = np.asarray(jax.random.uniform(jax.random.key(2), (g * g, k, k)), np.float64)
    psfs /= psfs.sum(axis=(1, 2), keepdims=True)
    wy, wx = SA.blend_weights(h, g), SA.blend_weights(w, g)
    ours = SA._blur_blend(
        jnp.asarray(image.transpose(2, 0, 1), jnp.float32), jnp.asarray(psfs, jnp.float32), wy, wx, k // 2
    )
    theirs = B.blend(image, psfs.reshape(g, g, k, k))
    np.testing.assert_allclose(np.asarray(ours).transpose(1, 2, 0), theirs, atol=2e-6)
