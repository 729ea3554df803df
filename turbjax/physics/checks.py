"""Input validation shared by the physics functions.

Every check runs on concrete values and raises ``ValueError`` naming the parameter and
its allowed range before any expensive work starts. Under ``jax.jit`` (or ``vmap`` /
``grad``) the values are tracers and cannot be inspected: value checks are then skipped,
while shape, rank and dtype checks still run because those are static. Validate
parameters once outside the jitted function (e.g. call the function eagerly on one
example, or call :func:`check_parameters`) when the values come from user input.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _values(x: Any) -> np.ndarray | None:
    if not is_concrete(x):
        return None
    return np.asarray(x, dtype=np.float64)


def check_range(
    name: str,
    x: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
) -> None:
    """Raise ``ValueError`` if any value of ``x`` is NaN/Inf or outside [low, high]."""
    v = _values(x)
    if v is None:
        return
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    bracket = ("[" if low_inclusive else "(") + f"{lo}, {hi}" + ("]" if high_inclusive else ")")
    allowed = f"{name} must be finite and in {bracket}{' ' + unit if unit else ''}"
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{allowed}; got a NaN or Inf value.")
    bad = np.zeros(v.shape, dtype=bool)
    if low is not None:
        bad |= (v < low) if low_inclusive else (v <= low)
    if high is not None:
        bad |= (v > high) if high_inclusive else (v >= high)
    if np.any(bad):
        raise ValueError(f"{allowed}; got {v[bad].ravel()[:4].tolist()}.")


def check_positive(name: str, x: Any, unit: str = "") -> None:
    """Raise ``ValueError`` unless every value of ``x`` is finite and > 0."""
    check_range(name, x, 0.0, None, low_inclusive=False, unit=unit)


def check_image(name: str, image: Any, min_rank: int = 3, max_rank: int | None = None) -> None:
    """Check a float image batch ``[..., H, W, C]`` with values in [0, 1].

    Rank and dtype are static and always checked; the value range only on concrete arrays.
    """
    shape = np.shape(image)
    rank = len(shape)
    if rank < min_rank or (max_rank is not None and rank > max_rank):
        expected = f"{min_rank}" if max_rank == min_rank else f">= {min_rank}"
        if max_rank is not None and max_rank != min_rank:
            expected = f"{min_rank} to {max_rank}"
        raise ValueError(f"{name} must have rank {expected} ([..., H, W, C] channels last); got shape {shape}.")
    dtype = image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{name} must be a float array with values in [0, 1]; got dtype {dtype}.")
    check_range(name, image, 0.0, 1.0)


def as_clip(frames, num_frames: int | None = None) -> jnp.ndarray:
    """A clip [T, H, W, C] from a clip, or from a still [H, W, C] repeated ``num_frames`` times;
    ValueError for another rank or dtype, or a still without a positive ``num_frames``."""
    frames = jnp.asarray(frames) if not hasattr(frames, "ndim") else frames
    if frames.ndim == 3:
        if num_frames is None or num_frames < 1:
            raise ValueError("num_frames must be a positive integer when frames is a still image [H, W, C].")
        check_image("frames", frames, min_rank=3, max_rank=3)
        return jnp.broadcast_to(frames, (num_frames, *frames.shape))
    check_image("frames", frames, min_rank=4, max_rank=4)
    return frames
