"""Small Flax NNX building blocks shared by the detector, the restorers and the TMTS network.

Conventions: images and feature maps are channels-last ``[B, H, W, C]``; token sequences are
``[B, N, D]``. Every block is shape-preserving in its batch and spatial axes unless its
docstring says otherwise (a ``stride`` > 1 divides H and W).

Normalisation is GroupNorm (or none), never BatchNorm: GroupNorm works per example, so a
forward pass is independent of the batch size and of how the batch is sharded over devices,
and there is no running-statistics state to carry through distillation or checkpoints.

Dropout: every block takes a ``dropout`` rate; with rate 0 (the default) no random stream
is stored and calls are deterministic. With rate > 0 the block starts in training mode;
``module.eval()`` / ``module.train()`` switch all nested dropout on and off.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Activation = Callable[[jax.Array], jax.Array]


def group_count(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """GroupNorm groups for ``channels``: the largest divisor <= ``max_groups`` leaving >= ``min_group_size`` per group.

    Narrow layers (16-32 channels, common in the small variants) would otherwise get groups of one
    channel, i.e. instance norm, which throws away colour/contrast information.
    """
    best = 1
    for g in range(1, max_groups + 1):
        if channels % g == 0 and channels // g >= min_group_size:
            best = g
    return best


def _dropout(rate: float, rngs: nnx.Rngs) -> nnx.Dropout:
    # No stored random stream when dropout is off: keeps the state to parameters only.
    return nnx.Dropout(rate, deterministic=rate == 0.0, rngs=rngs if rate > 0.0 else None)


class ConvNormAct(nnx.Module):
    """Conv -> GroupNorm (optional) -> activation (optional).

    ``[B, H, W, in_channels] -> [B, H / stride, W / stride, out_channels]`` ("SAME" padding, so H and W
    must be divisible by ``stride`` for the exact division). The conv has a bias only when there is no
    norm (the norm's shift makes it redundant).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        norm: bool = True,
        act: Activation | None = nnx.silu,
        norm_scale_init: nnx.Initializer = nnx.initializers.ones,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_channels,
            out_channels,
            (kernel_size, kernel_size),
            strides=(stride, stride),
            padding="SAME",
            use_bias=not norm,
            rngs=rngs,
        )
        self.norm = (
            nnx.GroupNorm(out_channels, num_groups=group_count(out_channels), scale_init=norm_scale_init, rngs=rngs)
            if norm
            else None
        )
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ChannelAttention(nnx.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from the global average.

    ``[B, H, W, C] -> [B, H, W, C]``. Global pooling -> Linear(C, C / reduction) -> act -> Linear -> sigmoid.
    Cheap global context for convolutional blocks whose receptive field is local.
    """

    def __init__(self, channels: int, reduction: int = 4, *, act: Activation = nnx.silu, rngs: nnx.Rngs):
        hidden = max(channels // reduction, 4)
        self.squeeze = nnx.Linear(channels, hidden, rngs=rngs)
        self.excite = nnx.Linear(hidden, channels, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = jnp.mean(x, axis=(-3, -2))  # [B, C]
        gate = jax.nn.sigmoid(self.excite(self.act(self.squeeze(pooled))))
        return x * gate[..., None, None, :]


class ResidualBlock(nnx.Module):
    """Basic ResNet block: ``act(x + norm(conv(act(norm(conv(x))))))``, two 3x3 convs at constant width.

    ``[B, H, W, C] -> [B, H, W, C]``. The second norm's scale starts at zero (with a norm) so that a
    freshly built block is close to the identity, which keeps deep stacks trainable from scratch with
    small batches. ``se=True`` adds a :class:`ChannelAttention` on the residual branch.
    """

    def __init__(
        self,
        channels: int,
        *,
        norm: bool = True,
        act: Activation = nnx.silu,
        se: bool = False,
        rngs: nnx.Rngs,
    ):
        self.conv1 = ConvNormAct(channels, channels, 3, norm=norm, act=act, rngs=rngs)
        self.conv2 = ConvNormAct(
            channels, channels, 3, norm=norm, act=None, norm_scale_init=nnx.initializers.zeros, rngs=rngs
        )
        self.se = ChannelAttention(channels, act=act, rngs=rngs) if se else None
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(self.conv1(x))
        if self.se is not None:
            y = self.se(y)
        return self.act(x + y)


def sine_point_embedding(points: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """Sine/cosine embedding ``[..., dim]`` of normalised points ``[..., 2]`` = (x, y) in [0, 1].

    The layout of ``sine_position_embedding`` (first half the row = y, second half the column = x), so a
    point at a pixel centre gets that pixel's embedding: queries anchored at a point attend near it.
    """
    if dim % 4:
        raise ValueError(f"sine position embedding needs dim divisible by 4, got {dim}")
    n = dim // 4
    freqs = temperature ** (-jnp.arange(n, dtype=jnp.float32) / n)  # [n]

    def encode(p: jax.Array) -> jax.Array:
        angles = (p * (2.0 * math.pi))[..., None] * freqs  # [..., n]
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)

    return jnp.concatenate([encode(points[..., 1]), encode(points[..., 0])], axis=-1)


def sine_position_embedding(
    height: int, width: int, dim: int, temperature: float = 10000.0, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """Fixed 2D sine/cosine position embedding of a ``height`` x ``width`` grid, ``[height, width, dim]``.

    The first ``dim / 2`` channels encode the row, the last ``dim / 2`` the column; each half is
    ``[sin(p * f_0..f_{n-1}), cos(p * f_0..f_{n-1})]`` with ``n = dim / 4`` geometric frequencies
    ``f_i = temperature ** (-i / n)``. Positions are pixel centres normalised to ``[0, 2 pi]`` so the
    embedding describes *relative* position in the image and is the same for any resolution: a detector
    trained on 128 px crops can run on 512 px frames. ``dim`` must be divisible by 4.
    """
    ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
    xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
    grid = jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), axis=-1)  # [height, width, 2] = (x, y)
    return sine_point_embedding(grid, dim, temperature).astype(dtype)


class MLP(nnx.Module):
    """``num_layers`` Linear layers with an activation between them (none after the last).

    ``[..., in_features] -> [..., out_features]``; hidden layers have ``hidden_features``. ``out_kernel_init`` /
    ``out_bias_init`` set the last layer's initialisers (e.g. zeros for a regression head that should start
    at its prior, or a class-prior bias).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        num_layers: int = 2,
        *,
        act: Activation = nnx.gelu,
        dropout: float = 0.0,
        out_kernel_init: nnx.Initializer | None = None,
        out_bias_init: nnx.Initializer | None = None,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got {num_layers}")
        dims = [in_features] + [hidden_features] * (num_layers - 1) + [out_features]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            extra = {}
            if i == num_layers - 1:
                if out_kernel_init is not None:
                    extra["kernel_init"] = out_kernel_init
                if out_bias_init is not None:
                    extra["bias_init"] = out_bias_init
            layers.append(nnx.Linear(d_in, d_out, rngs=rngs, **extra))
        self.layers = nnx.List(layers)
        self.act = act
        self.dropout = _dropout(dropout, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.dropout(self.act(x))
        return x


def _attention(dim: int, num_heads: int, dropout: float, rngs: nnx.Rngs) -> nnx.MultiHeadAttention:
    if dim % num_heads:
        raise ValueError(f"hidden dim {dim} must be divisible by num_heads {num_heads}")
    return nnx.MultiHeadAttention(
        num_heads=num_heads,
        in_features=dim,
        qkv_features=dim,
        out_features=dim,
        dropout_rate=dropout,
        deterministic=dropout == 0.0,
        decode=False,
        keep_rngs=dropout > 0.0,
        rngs=rngs,
    )


def _with_pos(x: jax.Array, pos: jax.Array | None) -> jax.Array:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nnx.Module):
    """Pre-norm transformer encoder layer: self-attention then FFN, each ``x + f(LayerNorm(x))``.

    ``x [B, N, D]``, optional ``pos [N, D]`` or ``[B, N, D]`` -> ``[B, N, D]``. As in DETR the position
    embedding is added to queries and keys only, not to values, so positions steer *where* to look
    without being mixed into the content. Pre-norm keeps gradients well scaled without warm-up tricks;
    the output is un-normalised, so stacks should end with a LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = _attention(dim, num_heads, dropout, rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.ffn = MLP(dim, ffn_dim, dim, 2, dropout=dropout, rngs=rngs)
        self.dropout = _dropout(dropout, rngs)

    def __call__(self, x: jax.Array, pos: jax.Array | None = None) -> jax.Array:
        h = self.norm1(x)
        qk = _with_pos(h, pos)
        x = x + self.dropout(self.attn(qk, qk, h))
        return x + self.dropout(self.ffn(self.norm2(x)))


class TransformerDecoderLayer(nnx.Module):
    """Pre-norm DETR decoder layer: self-attention over queries, cross-attention to memory, FFN.

    ``tgt [B, Q, D]``, ``memory [B, N, D]``, optional ``query_pos [Q, D] | [B, Q, D]`` and
    ``memory_pos [N, D] | [B, N, D]`` -> ``[B, Q, D]``. Self-attention lets queries suppress duplicates of
    each other (what lets DETR drop NMS); cross-attention reads the image. Position embeddings go into
    queries and keys only.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.self_attn = _attention(dim, num_heads, dropout, rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.cross_attn = _attention(dim, num_heads, dropout, rngs)
        self.norm3 = nnx.LayerNorm(dim, rngs=rngs)
        self.ffn = MLP(dim, ffn_dim, dim, 2, dropout=dropout, rngs=rngs)
        self.dropout = _dropout(dropout, rngs)

    def __call__(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        query_pos: jax.Array | None = None,
        memory_pos: jax.Array | None = None,
    ) -> jax.Array:
        h = self.norm1(tgt)
        qk = _with_pos(h, query_pos)
        tgt = tgt + self.dropout(self.self_attn(qk, qk, h))
        h = self.norm2(tgt)
        tgt = tgt + self.dropout(self.cross_attn(_with_pos(h, query_pos), _with_pos(memory, memory_pos), memory))
        return tgt + self.dropout(self.ffn(self.norm3(tgt)))
