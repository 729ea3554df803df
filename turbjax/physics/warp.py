"""Gather-based bilinear warping.

Convention used throughout turbjax: a displacement field ``field`` [..., H, W, 2] holds, in
pixels, (dx, dy) = (displacement along the width axis, along the height axis), and

    warp(image, field)[y, x] = image(y + dy[y, x], x + dx[y, x])

(backward sampling: each output pixel reads the input at its displaced position).
Edge rule: sample positions outside the image are clamped to the border (edge replication),
so warped borders repeat the outermost row/column instead of pulling in black.

Four flat ``take`` gathers with bilinear weights; this is several times faster on CPU than
``jax.scipy.ndimage.map_coordinates`` and differentiable in both image and field.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _warp_single(image: jnp.ndarray, field: jnp.ndarray) -> jnp.ndarray:
    h, w, c = image.shape
    ys = jnp.arange(h, dtype=field.dtype)[:, None] + field[..., 1]
    xs = jnp.arange(w, dtype=field.dtype)[None, :] + field[..., 0]
    ys = jnp.clip(ys, 0.0, h - 1.0)
    xs = jnp.clip(xs, 0.0, w - 1.0)
    y0 = jnp.clip(jnp.floor(ys), 0, h - 2).astype(jnp.int32)
    x0 = jnp.clip(jnp.floor(xs), 0, w - 2).astype(jnp.int32)
    wy = (ys - y0)[..., None]
    wx = (xs - x0)[..., None]
    flat = image.reshape(h * w, c)

    def take(yi, xi):
        return jnp.take(flat, (yi * w + xi).reshape(-1), axis=0).reshape(h, w, c)

    top = (1.0 - wx) * take(y0, x0) + wx * take(y0, x0 + 1)
    bottom = (1.0 - wx) * take(y0 + 1, x0) + wx * take(y0 + 1, x0 + 1)
    return (1.0 - wy) * top + wy * bottom


def warp(image: jnp.ndarray, field: jnp.ndarray) -> jnp.ndarray:
    """Bilinearly sample ``image`` [..., H, W, C] at positions displaced by ``field`` [..., H, W, 2].

    Leading axes of ``image`` and ``field`` must match. H and W must be at least 2.
    """
    lead = image.shape[:-3]
    if field.shape[:-1] != image.shape[:-1] or field.shape[-1] != 2:
        raise ValueError(
            f"field must have shape {image.shape[:-1] + (2,)} to warp an image of shape "
            f"{image.shape}; got {field.shape}."
        )
    fn = _warp_single
    for _ in lead:
        fn = jax.vmap(fn)
    return fn(image, field.astype(image.dtype))
