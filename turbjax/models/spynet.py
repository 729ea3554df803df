"""SpyNet-style coarse-to-fine optical flow (Ranjan & Black 2017), trained from scratch (no pretrained weights).

TMTS (and DATUM before it) use SpyNet for the *coarse* deformation field that pre-aligns the deep features before
the guided deformable attention refines them. Pretrained SpyNet weights cannot be downloaded here, so this is a
small, randomly initialised network that learns with the restorer (or, optionally, from the simulator's true tilt
fields).

Sign convention (the one of :func:`turbjax.physics.warp.warp`): ``flow = SpyNet(...)(ref, sup)`` is
``[B, H, W, 2]`` pixels ``(dx, dy)`` (along the width, along the height) such that

    warp(sup, flow) ~ ref,   i.e.   ref[y, x] ~ sup(y + dy[y, x], x + dx[y, x]):

each pixel of the reference frame reads the supporting frame at its displaced position (backward warping). A
supporting frame that is the reference shifted right by 2 px (``sup[y, x] = ref[y, x - 2]``) has ``dx = +2``.

Architecture. An average-pooling pyramid of ``levels`` levels (level 0 full resolution, level ``k`` at ``1 / 2^k``).
At the coarsest level the flow starts at zero; at every level, from coarse to fine, the flow of the level below is
bilinearly upsampled (and doubled: pixels are half as large), ``sup`` is warped by it, and that level's own *basic
module* (a stack of ``kernel_size`` x ``kernel_size`` convs of widths ``widths``, ReLU between them, then a conv to
2 channels) predicts a residual from ``[ref, warp(sup, flow), flow]``. Each level sees small residual motions at its
own scale, so a shallow module per level covers large displacements: the reason SpyNet is tiny next to FlowNet.
The last conv of every basic module is zero-initialised, so a fresh network predicts zero flow (the identity
alignment) rather than noise. Frames whose size is not a multiple of ``2^(levels-1)`` are edge-padded for the
pyramid and the flow is cropped back (padding keeps pixel units exact, unlike resizing).

Parameters: one basic module per level; the original SpyNet (6 levels, widths (32, 64, 32, 16), 7x7 kernels, RGB)
has 6 x 240,050 = 1,440,300.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from turbjax.physics.warp import warp


def _pool2(x: jax.Array) -> jax.Array:
    """2x2 average pooling of ``[N, H, W, C]`` (H, W even): the anti-aliased pyramid step."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample_flow(flow: jax.Array) -> jax.Array:
    """Bilinear 2x upsampling of a flow ``[N, H, W, 2]``, values doubled (a pixel of the coarse level is two)."""
    n, h, w, c = flow.shape
    return 2.0 * jax.image.resize(flow, (n, 2 * h, 2 * w, c), "bilinear")


class SpyNetLevel(nnx.Module):
    """One basic module: ``[ref, warped sup, flow]`` (``2 C + 2`` channels) -> residual flow ``[N, H, W, 2]`` px."""

    def __init__(self, in_channels: int, widths: Sequence[int], kernel_size: int, *, rngs: nnx.Rngs):
        dims = [2 * in_channels + 2, *widths]
        k = (kernel_size, kernel_size)
        self.convs = nnx.List([nnx.Conv(a, b, k, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.out = nnx.Conv(
            dims[-1], 2, k, kernel_init=nnx.initializers.zeros, bias_init=nnx.initializers.zeros, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = nnx.relu(conv(x))
        return self.out(x)


class SpyNet(nnx.Module):
    """Coarse-to-fine optical flow; see the module docstring for the architecture and the sign convention.

    Args:
      levels: pyramid levels (>= 1); motions up to about ``2^(levels-1)`` px are reachable.
      widths: hidden widths of every level's basic module (SpyNet: ``(32, 64, 32, 16)``).
      kernel_size: conv kernel of the basic modules (SpyNet: 7).
      in_channels: channels of the frames (3 for RGB).

    ``SpyNet(...)(ref [B, H, W, C], sup [B, H, W, C]) -> flow [B, H, W, 2]`` in pixels, ``warp(sup, flow) ~ ref``.
    Frames are expected in [0, 1] (they are mapped to [-1, 1] inside).
    """

    def __init__(
        self,
        levels: int = 6,
        widths: Sequence[int] = (32, 64, 32, 16),
        kernel_size: int = 7,
        in_channels: int = 3,
        *,
        rngs: nnx.Rngs,
    ):
        if levels < 1:
            raise ValueError(f"SpyNet needs at least one level, got {levels}")
        self.levels = levels
        self.basic_modules = nnx.List([SpyNetLevel(in_channels, widths, kernel_size, rngs=rngs) for _ in range(levels)])

    def __call__(self, ref: jax.Array, sup: jax.Array) -> jax.Array:
        if ref.shape != sup.shape or ref.ndim != 4:
            raise ValueError(f"ref and sup must both be [B, H, W, C]; got {ref.shape} and {sup.shape}")
        _, h, w, _ = ref.shape
        m = 2 ** (self.levels - 1)
        pad = ((0, 0), (0, -h % m), (0, -w % m), (0, 0))
        ref = jnp.pad(ref * 2.0 - 1.0, pad, mode="edge")
        sup = jnp.pad(sup * 2.0 - 1.0, pad, mode="edge")
        pyramid = [(ref, sup)]
        for _ in range(self.levels - 1):
            r, s = pyramid[-1]
            pyramid.append((_pool2(r), _pool2(s)))
        flow = None
        for level in reversed(range(self.levels)):
            r, s = pyramid[level]
            if flow is None:
                flow = jnp.zeros((*r.shape[:3], 2), r.dtype)
                warped = s
            else:
                flow = _upsample_flow(flow)
                warped = warp(s, flow)
            flow = flow + self.basic_modules[level](jnp.concatenate([r, warped, flow], axis=-1))
        return flow[:, :h, :w]
