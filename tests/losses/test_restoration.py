"""Charbonnier loss: hand-computed values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from turbjax.losses.restoration import charbonnier_loss


def test_value_by_hand():
    pred = jnp.array([[0.0, 0.003], [0.5, 0.2]])
    target = jnp.array([[0.0, 0.0], [0.1, 0.2]])
    loss, terms = charbonnier_loss(pred, target, eps=1e-3)
    expected = (1e-3 + np.sqrt(9e-6 + 1e-6) + np.sqrt(0.16 + 1e-6) + 1e-3) / 4
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert set(terms) == {"charbonnier"}
    np.testing.assert_allclose(terms["charbonnier"], loss)


def test_perfect_prediction_gives_eps():
    x = jnp.linspace(0.0, 1.0, 12).reshape(1, 2, 2, 3)
    np.testing.assert_allclose(charbonnier_loss(x, x, eps=1e-2)[0], 1e-2, rtol=1e-6)


def test_gradient_by_hand():
    # d/dp mean(sqrt(d^2 + eps^2)) = d / sqrt(d^2 + eps^2) / n: ~d/eps near 0 (smooth), ~sign(d) for outliers.
    pred = jnp.array([0.0, 1e-4, -2e-3, 0.7])
    target = jnp.zeros(4)
    eps = 1e-3
    grad = jax.grad(lambda p: charbonnier_loss(p, target, eps)[0])(pred)
    d = np.asarray(pred, np.float64)
    np.testing.assert_allclose(grad, d / np.sqrt(d**2 + eps**2) / 4, rtol=1e-5, atol=1e-7)
    assert grad[0] == 0.0  # finite and zero at the optimum, unlike L1's subgradient
    np.testing.assert_allclose(grad[3], 0.25, rtol=1e-5)  # bounded for an outlier, unlike L2 (would be 0.35)


def test_jit_and_shape_check():
    a = jnp.zeros((2, 4, 4, 3))
    b = jnp.full((2, 4, 4, 3), 0.5)
    np.testing.assert_allclose(jax.jit(charbonnier_loss)(a, b)[0], np.sqrt(0.25 + 1e-6), rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        charbonnier_loss(a, b[..., :1])
