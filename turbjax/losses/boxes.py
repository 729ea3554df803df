"""Axis-aligned box utilities: format conversion, area, IoU and generalised IoU (GIoU).

Formats (last axis of length 4, any leading axes):

- ``cxcywh``: (centre x, centre y, width, height), what the detector predicts (normalised to [0, 1]
  of the image width/height, but nothing here assumes a unit; areas come out in units squared);
- ``xyxy``: (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, what IoU is computed on.

Boxes must be well formed (non-negative width and height). Degenerate boxes (zero width and/or height,
e.g. a collapsed prediction or a zero-padded target) are allowed: every function returns finite values
and finite gradients for them. That is done with safe denominators ``max(denominator, eps)``; since the
intersection never exceeds the union, this only changes results when the union (or the enclosing box)
has area below ``eps``, where the IoU is 0/0 and we define it as ``intersection / eps`` (0 for two
degenerate boxes).

``eps`` defaults to ``1e-7`` in area units. For normalised boxes that is 0.1 px^2 of a 1000 x 1000 image,
so only sub-pixel boxes are affected. Pass a smaller ``eps`` if you work with much larger images
(float32 handles 1e-12 fine; the gradient scale of a degenerate pair grows like 1/eps but stays finite).

Generalised IoU (Rezatofighi et al., CVPR 2019): ``giou = iou - (enclose - union) / enclose`` with
``enclose`` the area of the smallest box containing both; it lies in (-1, 1] and, unlike IoU, still
gives a gradient to boxes that do not overlap.
"""

from __future__ import annotations

import jax.numpy as jnp

EPS = 1e-7
"""Default floor of IoU/GIoU denominators, in box-area units (see the module docstring)."""


def cxcywh_to_xyxy(boxes: jnp.ndarray) -> jnp.ndarray:
    """(cx, cy, w, h) [..., 4] -> (x0, y0, x1, y1) [..., 4], same units."""
    cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(boxes: jnp.ndarray) -> jnp.ndarray:
    """(x0, y0, x1, y1) [..., 4] -> (cx, cy, w, h) [..., 4], same units."""
    x0, y0, x1, y1 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0], axis=-1)


def box_area(boxes: jnp.ndarray) -> jnp.ndarray:
    """Area of xyxy boxes [..., 4] -> [...], in units squared. Assumes x0 <= x1, y0 <= y1."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection_union(a: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Broadcasting intersection and union areas of xyxy boxes a [..., 4] and b [..., 4]."""
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.maximum(hi - lo, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def _enclosing_area(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Broadcasting area of the smallest box containing xyxy boxes a and b."""
    lo = jnp.minimum(a[..., :2], b[..., :2])
    hi = jnp.maximum(a[..., 2:], b[..., 2:])
    wh = jnp.maximum(hi - lo, 0.0)
    return wh[..., 0] * wh[..., 1]


def iou(a: jnp.ndarray, b: jnp.ndarray, eps: float = EPS) -> jnp.ndarray:
    """IoU of aligned (broadcasting) xyxy box pairs a [..., 4], b [..., 4] -> [...] in [0, 1]."""
    inter, union = _intersection_union(a, b)
    return inter / jnp.maximum(union, eps)


def giou(a: jnp.ndarray, b: jnp.ndarray, eps: float = EPS) -> jnp.ndarray:
    """Generalised IoU of aligned (broadcasting) xyxy box pairs a [..., 4], b [..., 4] -> [...] in (-1, 1]."""
    inter, union = _intersection_union(a, b)
    enclose = _enclosing_area(a, b)
    return inter / jnp.maximum(union, eps) - (enclose - union) / jnp.maximum(enclose, eps)


def pairwise_iou(a: jnp.ndarray, b: jnp.ndarray, eps: float = EPS) -> tuple[jnp.ndarray, jnp.ndarray]:
    """All-pairs IoU of xyxy boxes a [N, 4] and b [M, 4].

    Returns ``(iou [N, M], union [N, M])``; the union (units squared) is returned because GIoU needs it.
    """
    inter, union = _intersection_union(a[:, None, :], b[None, :, :])
    return inter / jnp.maximum(union, eps), union


def pairwise_giou(a: jnp.ndarray, b: jnp.ndarray, eps: float = EPS) -> jnp.ndarray:
    """All-pairs generalised IoU of xyxy boxes a [N, 4] and b [M, 4] -> [N, M] in (-1, 1]."""
    return giou(a[:, None, :], b[None, :, :], eps)
