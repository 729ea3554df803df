"""Bilinear warp against scipy.ndimage.map_coordinates, shifts, edges and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from turbjax import physics as P


@pytest.fixture(scope="module")
def image():
    return np.asarray(jax.random.uniform(jax.random.key(0), (20, 24, 3)), np.float32)


def test_matches_scipy_map_coordinates(image):
    field = np.asarray(jax.random.normal(jax.random.key(1), (20, 24, 2)) * 3.0, np.float32)
    got = np.asarray(P.warp(jnp.asarray(image), jnp.asarray(field)))
    yy, xx = np.mgrid[:20, :24].astype(np.float64)
    coords = [np.clip(yy + field[..., 1], 0, 19), np.clip(xx + field[..., 0], 0, 23)]
    ref = np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_integer_shift_and_identity(image):
    zero = np.asarray(P.warp(jnp.asarray(image), jnp.zeros((20, 24, 2))))
    np.testing.assert_array_equal(zero, image)
    field = np.zeros((20, 24, 2), np.float32)
    field[..., 0], field[..., 1] = 2.0, -1.0  # read 2 px to the right, 1 px up
    out = np.asarray(P.warp(jnp.asarray(image), jnp.asarray(field)))
    np.testing.assert_allclose(out[1:, :-2], image[:-1, 2:], atol=1e-6)
    np.testing.assert_allclose(out[0, :-2], image[0, 2:], atol=1e-6)  # clamped to the top row


def test_batched_and_gradient(image):
    images = jnp.stack([jnp.asarray(image)] * 2)
    field = jnp.full((2, 20, 24, 2), 0.3)
    out = P.warp(images, field)
    assert out.shape == images.shape
    grad = jax.grad(lambda f: jnp.sum(P.warp(images, f) * images))(field)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


def test_shape_mismatch_raises(image):
    with pytest.raises(ValueError, match="field must have shape"):
        P.warp(jnp.asarray(image), jnp.zeros((20, 24, 3)))
