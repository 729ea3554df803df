"""Restoration (reconstruction) losses: the Charbonnier penalty of the JDATT seed (sec. 3.1, eq. 1).

Turbulence leaves spatially varying residuals and outliers (mis-registered edges, scintillation) in a
restored frame. The Charbonnier penalty ``sqrt((x - y)^2 + eps^2)`` behaves like ``(x - y)^2 / (2 eps)`` for
``|x - y| << eps`` (smooth, finite gradient at zero, unlike L1) and like ``|x - y|`` for ``|x - y| >> eps``
(outliers get a bounded gradient, unlike L2), which is why restoration networks (LapSRN, EDVR, MAMAT) use it.
"""

from __future__ import annotations

import jax.numpy as jnp

CHARBONNIER_EPS = 1e-3
"""Default epsilon, in image units ([0, 1] intensities): the seed's "typically 1e-3" (also LapSRN / EDVR)."""


def charbonnier_loss(
    pred: jnp.ndarray, target: jnp.ndarray, eps: float = CHARBONNIER_EPS
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Mean Charbonnier penalty ``mean(sqrt((pred - target)^2 + eps^2))`` over every element.

    Args:
      pred: restored images, any shape (typically ``[B, H, W, C]`` in [0, 1]).
      target: clean images, same shape as ``pred`` (broadcasting is not allowed, to catch layout bugs).
      eps: smoothing constant in intensity units. ``1e-3`` (seed eq. 1) makes the penalty quadratic only
        for errors below ~1/4 of an 8-bit grey level, i.e. an L1 loss with a differentiable minimum.

    Returns:
      ``(loss, {"charbonnier": loss})``. As printed in eq. 1 the penalty is not offset, so a perfect
      prediction gives ``eps``, not 0 (this changes neither the gradient nor the optimum).
      Computed in float32 at least.
    """
    pred = jnp.asarray(pred)
    target = jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}")
    dtype = jnp.promote_types(jnp.result_type(pred, target), jnp.float32)
    diff = pred.astype(dtype) - target.astype(dtype)
    loss = jnp.mean(jnp.sqrt(diff * diff + jnp.asarray(eps, dtype) ** 2))
    return loss, {"charbonnier": loss}
