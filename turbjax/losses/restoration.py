"""Restoration (reconstruction) losses: the Charbonnier penalty of the JDATT seed (sec. 3.1, eq. 1).

Turbulence leaves spatially varying residuals and outliers (mis-registered edges, scintillation) in a
restored frame. The Charbonnier penalty ``sqrt((x - y)^2 + eps^2)`` behaves like ``(x - y)^2 / (2 eps)`` for
``|x - y| << eps`` (smooth, finite gradient at zero, unlike L1) and like ``|x - y|`` for ``|x - y| >> eps``
(outliers get a bounded gradient, unlike L2), which is why restoration networks (LapSRN, EDVR, MAMAT) use it.
``tmts_loss`` adds TMTS's geometric term on the predicted inverse-tilt field (TMTS seed, sec. 2.2.5).
"""

from __future__ import annotations

from typing import Protocol

import jax.numpy as jnp

from turbjax.physics.warp import warp

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


class TiltPrediction(Protocol):
    """What :func:`tmts_loss` reads from a restorer output (``turbjax.models.RestorerOutput`` has both)."""

    image: jnp.ndarray
    tilt_field: jnp.ndarray | None


TMTS_WEIGHTS = (0.8, 0.2)
"""TMTS (seed sec. 2.2.5) weights (w1, w2) of the pixel-fidelity and geometric (tilt) Charbonnier terms."""


def tmts_loss(
    output: TiltPrediction,
    clean: jnp.ndarray,
    tilt_only: jnp.ndarray,
    weights: tuple[float, float] = TMTS_WEIGHTS,
    eps: float = CHARBONNIER_EPS,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """TMTS composite loss ``w1 Charbonnier(image, clean) + w2 Charbonnier(warp(tilt_only, field), clean)``.

    The second (geometric) term supervises the tilt decoder alone: warping the tilt-only centre frame (turbulent
    displacement, no blur) by the predicted inverse-tilt field must give the clean frame, so the field learns
    the geometry separately from deblurring, which the simulator makes possible (only it knows ``tilt_only``).

    Args:
      output: a restorer output with ``image [B, H, W, C]`` and ``tilt_field [B, H, W, 2]`` in pixels
        (``turbjax.models.RestorerOutput``, e.g. from ``TMTS``), ``warp(tilt_only, tilt_field) ~ clean``.
      clean: clean centre frames ``[B, H, W, C]`` in [0, 1].
      tilt_only: the centre frames with tilt only ``[B, H, W, C]`` (``Degradation.tilt_only``).
      weights: ``(w1, w2)``; the seed's empirical ``(0.8, 0.2)``.
      eps: Charbonnier epsilon (intensity units), the seed's 1e-3.

    Returns:
      ``(loss, {"charbonnier": image term, "tilt": geometric term})``, terms unweighted. Like
      :func:`charbonnier_loss`, each term is ``eps`` (not 0) for a perfect prediction.
    """
    if output.tilt_field is None:
        raise ValueError("tmts_loss needs a restorer output with a tilt_field (a model with a tilt head)")
    image_term, _ = charbonnier_loss(output.image, clean, eps)
    tilt_term, _ = charbonnier_loss(warp(jnp.asarray(tilt_only), output.tilt_field), clean, eps)
    loss = weights[0] * image_term + weights[1] * tilt_term
    return loss, {"charbonnier": image_term, "tilt": tilt_term}
