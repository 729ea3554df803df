"""Charbonnier loss: hand-computed values and gradients; the TMTS loss and its tilt term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from turbjax.losses.restoration import charbonnier_loss, tmts_loss
from turbjax.models.restorers import RestorerOutput
from turbjax.physics.warp import warp


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


def _tilt_scene():
    """A clean frame with a flat 4 px border, its tilt-only version under a known integer shift, and the shift."""
    rng = np.random.default_rng(0)
    clean = np.full((2, 16, 20, 3), 0.5, np.float32)
    clean[:, 4:-4, 4:-4] = rng.uniform(size=(2, 8, 12, 3))
    tilt = np.broadcast_to(np.array([2.0, -1.0], np.float32), (2, 16, 20, 2))  # (dx, dy) px
    tilt_only = warp(jnp.asarray(clean), jnp.asarray(tilt))  # tilt_only[y, x] = clean[y - 1, x + 2]
    return jnp.asarray(clean), tilt_only, jnp.asarray(tilt)


def test_tmts_tilt_term_vanishes_for_the_inverse_field():
    clean, tilt_only, tilt = _tilt_scene()
    np.testing.assert_array_equal(tilt_only[:, 5:-4, 4:-6], clean[:, 4:-5, 6:-4])  # the warp is an exact shift
    image = clean + 0.1
    loss, terms = tmts_loss(RestorerOutput(image=image, features={}, tilt_field=-tilt), clean, tilt_only)
    eps = 1e-3
    np.testing.assert_array_equal(warp(tilt_only, -tilt), clean)  # the inverse field undoes the warp everywhere
    np.testing.assert_allclose(terms["tilt"], eps, rtol=2e-5)  # Charbonnier floor (float32 mean): zero residual
    np.testing.assert_allclose(terms["charbonnier"], np.sqrt(0.01 + eps**2), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.8 * terms["charbonnier"] + 0.2 * terms["tilt"], rtol=1e-6)
    # No field, or the field with the wrong sign, leaves a residual.
    for field in (jnp.zeros_like(tilt), tilt):
        _, wrong = tmts_loss(RestorerOutput(image=image, features={}, tilt_field=field), clean, tilt_only)
        assert float(wrong["tilt"]) > 10 * eps


def test_tmts_loss_weights_gradient_and_checks():
    clean, tilt_only, tilt = _tilt_scene()
    out = RestorerOutput(image=clean, features={}, tilt_field=-0.5 * tilt)
    loss, terms = tmts_loss(out, clean, tilt_only, weights=(0.3, 0.7), eps=1e-2)
    np.testing.assert_allclose(loss, 0.3 * terms["charbonnier"] + 0.7 * terms["tilt"], rtol=1e-6)
    np.testing.assert_allclose(terms["charbonnier"], 1e-2, rtol=2e-5)
    # The tilt term trains the field: its gradient is non-zero away from the inverse.
    grad = jax.grad(lambda f: tmts_loss(RestorerOutput(clean, {}, f), clean, tilt_only)[0])(-0.5 * tilt)
    assert float(jnp.abs(grad).max()) > 0.0
    with pytest.raises(ValueError, match="tilt_field"):
        tmts_loss(RestorerOutput(image=clean, features={}), clean, tilt_only)
