"""TMTS: turbulence mitigation guided by the turbulence signature (Flax NNX).

The TMTS seed (Yin et al., Remote Sensing 2025, section 2.2) builds on DATUM's recurrent design (Zhang et al., CVPR
2024): deep features of every frame are aligned to a *hidden reference feature* that a recurrent unit carries through
the window, forwards and backwards; the embeddings of the two passes are fused over the window and decoded. TMTS adds
the turbulence signature ``S`` (``turbjax.physics.signature``, px^2: where the scene jitters) to three places:
alignment (TSGA), the reference update (CGRFU) and the fusion attention (TSTSA). Architecture (``TMTS``), with
``C = base_channels``, ``D = 5 C`` (the deep width), ``G = deform_groups``, ``Tw = num_frames`` (the fused window)::

    clip [B,T,H,W,3] in [0,1], T odd >= Tw, H and W divisible by 4          (restores the centre frame t_c = T // 2)
    signature  S_t = turbulence_signature(window of frames around t)    [B,T,H,W] px^2 -> log1p, 4x4 mean -> s_t [h,w,1]
    encoder    per frame, DATUM-style RDB pyramid: f1 [H, C], f2 [H/2, 2C], f3 [H/4, D]   (h, w = H/4, W/4)
               (+ f3 * sigmoid(conv(s_t)) if use_ts.encoder)
    SpyNet     coarse flows between neighbouring frames at H/4 (models.spynet, trained from scratch)
    forward pass t = 0 .. T-1 (backward pass T-1 .. 0, same modules; both in one lax.scan), r_{-1} = 0, O_{-1} = 0:
      TSGA     O = O_{t-1} + warp(flow_{t-1 -> t}, O_{t-1})           coarse field composed with the pair flow
               offsets = RDB([warp(f3_t, O), sigmoid(conv(s_t)), O, r_{t-1}]) + O     (G groups x 9 points)
               f^_t = guided deformable attention(query r_{t-1}, keys / values f3_t sampled at the offsets)
               O_t = mean offset                                         (t = 0: f^_0 = f3_0, O_0 = 0)
      fusion   e_t = RDBs([f^_t, f3_t, r_{t-1}])                          forward (backward) embedding [h, D]
      CGRFU    Z = e_t * sigmoid(conv(s_t)) + e_t;  (u, g) = sigmoid(conv([Z, r]));  H~ = tanh(Conv([Z, g * r]))
               r_t = (1 - u) * H~ + u * r_{t-1}
    TSTSA      concat over the Tw frames around t_c of [e_fw, e_bw] -> 1x1 conv + GELU -> x [h, Tw D]
               Q, K, V = separable conv(x); per head softmax(temperature * (Q * sigmoid(conv(s)))  K^T) V; x + proj
    decoders   two DATUM reconstructors (transposed-conv 2x upsampling + channel-attention blocks with f2, f1 skips):
               tilt head  -> tilt_field [B,H,W,2] px (inverse tilt of the centre frame, zero at initialisation)
               image head -> residual; image = warp(centre frame, tilt_field) + residual, skips warped by the field

``TMTS(config, rngs=...)(clip) -> RestorerOutput(image [B,H,W,3], features, tilt_field [B,H,W,2])``, the
``Restorer`` contract, so TMTS can serve as a JDATT teacher. ``tilt_field`` follows
:func:`turbjax.physics.warp.warp`: ``warp(centre_tilt_only, tilt_field) ~ clean`` (what ``tmts_loss`` supervises).

Feature taps (``RestorerOutput.features``; the first four carry the names of ``turbjax.models.restorers.FEATURE_NAMES``
at the same resolutions, so a JDATT student can tap them):

================  ==============================  ============================================================
name              shape                           what
================  ==============================  ============================================================
``registration``  ``[B, H,   W,   C]``            centre-frame f1 warped by the predicted tilt field
``enhance1``      ``[B, H/2, W/2, 6 C]``          image decoder after its half-resolution CAB
``enhance2``      ``[B, H/4, W/4, Tw D]``         TSTSA output (fused window)
``decoder``       ``[B, H,   W,   3 C]``          image decoder after its full-resolution CAB
``embedding``     ``[B, H/4, W/4, 2 D]``          forward and backward embeddings of the centre frame
``signature``     ``[B, H,   W,   1]``            S of the centre frame, px^2 (only when some ``use_ts`` is on)
================  ==============================  ============================================================

Signature switches (``TSSwitches``, the seed's Table 6 ablation): turning one off removes exactly that module's
signature path (its ``sigmoid(conv(S))`` and that conv's parameters): TSGA's offset guide loses its C signature
channels (and its 1x1 conv the matching weights), CGRFU
uses ``Z = e``, TSTSA's scores are unweighted (``S_a = 1``), the encoder does not modulate ``f3``. With all off the
signature is not even computed, so the output's gradient with respect to it is exactly zero.

Parameters (trainable, ``count_parameters``; ``nnx.eval_shape``, nothing allocated), all switches as configured:

============  =======  =========  =======  =========  =======  =======  ========  =========
config        encoder  SpyNet     TSGA     fusion     CGRFU    TSTSA    decoders  total
============  =======  =========  =======  =========  =======  =======  ========  =========
``paper``     160,792  1,440,300  155,584  1,467,920  775,840  964,376  765,225   5,730,037
``tiny``      33,896   25,302     34,904   118,800    149,480  87,716   146,077   596,175
============  =======  =========  =======  =========  =======  =======  ========  =========

``paper`` (16 base channels, Tw = 5, 8 groups, 15 fusion RDBs, a 6-level SpyNet) has 5.73 M parameters, 8.2 %
below the seed's 6.24 M (Table 6); without the signature it has 2,608 fewer. The seed gives no layer widths beyond
"three-layer convolutional encoder (16 kernels/layer)" and "8 parallel deformable attention groups", so every other
size follows DATUM's public code (fusion width 6C, 15 RDBs of 3 layers, growth C; SpyNet; Tw = 5; 8 TSTSA heads;
a plain channel MLP replaces its gated depthwise FFN in the attention). Table 6
cannot be matched from the description: its increments (+0.957 M for TSGA, +0.53 M for CGRFU over a 4.78 M
"TSTSA" baseline) say the seed's TSGA is about 6x the guided deformable attention described (0.16 M here) and its
CGRFU smaller than DATUM's ConvGRU (0.78 M here), and its "w TS" columns have *fewer* parameters than "w/o TS"
(-14 k to -30 k), whereas a ``sigmoid(conv(S))`` path can only add weights. The layers that would explain this are
not described, so we keep DATUM's sizes rather than invent them. The rest does agree: encoder + SpyNet + fusion +
TSTSA + decoders = 4.80 M here vs the seed's 4.78 M baseline.

Choices the seed leaves open (documented guesses):

- S_t: the signature of the ``signature_window`` frames around t (clamped inside the clip; default the whole clip,
  one S for every frame: "global spatio-temporal information"), compressed by ``log1p`` (S is px^2 and reaches
  sigma_I^2 / eps, 1-100 px^2 for 1-10 % noise, on flat pixels, which would saturate any sigmoid) and averaged to
  H/4, where alignment, recurrence and fusion run.
- GRU update: the seed prints ``H_t = (1 - u_t) H~_t + u_t g_t`` but its text says the candidate is "fused with the
  hidden states from the previous time step via the update gate"; ``g_t`` is the reset gate, not a state, so we use
  ``u_t * r_{t-1}`` (DATUM's ConvGRU and the standard GRU). The candidate ``tanh([Z, r * g])`` needs a conv to map
  2D -> D channels: DATUM's conv3x3 + RDB + conv3x3.
- Guided deformable attention (after RVRT / DATUM): one attention head per offset group, 9 points per group on
  the 3x3 kernel grid plus learned offsets (bounded by ``max_offset`` px with a tanh), queries from the reference,
  keys and values sampled bilinearly (gather-based ``warp``), then a 1x1 projection and a channel MLP.
- TSTSA is DATUM's channel ("transposed") attention; the signature scales the query-key product pixel-wise,
  ``scores = temperature * sum_p q(p) S_a(p) k(p)`` with ``S_a = sigmoid(conv(s))`` one map per head, which is how a
  spatial map can scale channel-attention scores (regions of strong turbulence weigh more in the fusion).
- Output: ``image = warp(centre, tilt_field) + residual`` (DATUM decodes the image directly); the residual form
  starts at the warped input, which makes training from scratch on small data far quicker.
- ``use_ts.encoder`` (off in the named configs, the seed ablates only the three modules): ``f3 <- f3 * sigmoid(conv(s))
  + f3``, the CGRFU gate form.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from turbjax.models.detector import count_parameters
from turbjax.models.layers import MLP, ChannelAttention, ConvNormAct
from turbjax.models.restorers import RestorerOutput
from turbjax.models.spynet import SpyNet
from turbjax.physics.signature import turbulence_signature
from turbjax.physics.warp import warp

STRIDE: int = 4
"""Downsampling of the deep features; H and W must be multiples of it."""

VARIANTS: tuple[str, ...] = ("tiny", "paper")


@dataclasses.dataclass(frozen=True)
class TSSwitches:
    """Where the turbulence signature is used (the seed's Table 6 ablation). ``TSSwitches.off()``: nowhere."""

    tsga: bool = True
    cgrfu: bool = True
    tstsa: bool = True
    encoder: bool = False

    @property
    def any(self) -> bool:
        return self.tsga or self.cgrfu or self.tstsa or self.encoder

    @classmethod
    def off(cls) -> TSSwitches:
        return cls(tsga=False, cgrfu=False, tstsa=False, encoder=False)


@dataclasses.dataclass(frozen=True)
class TMTSConfig:
    """TMTS hyper-parameters (static; hashable).

    Attributes:
      base_channels: C; the deep features have D = 5 C channels (DATUM's layout), the seed's 16.
      num_frames: Tw = 2N + 1 frames fused by TSTSA around the centre (odd); clips may be longer (odd).
      deform_groups: G offset groups = attention heads of the guided deformable attention (seed: 8).
      fusion_blocks: residual dense blocks of the lucky-fusion network (DATUM: 15).
      rdb_layers: dense layers per RDB (DATUM: 3).
      spynet_levels, spynet_widths, spynet_kernel: the flow network (SpyNet: 6, (32, 64, 32, 16), 7).
      tstsa_heads: channel-attention heads of TSTSA (DATUM: 8); must divide Tw * D.
      max_offset: bound (px at H/4) of the learned offset residuals around the coarse flow.
      signature_window: frames per signature window (>= 2), or None for the whole clip.
      use_ts: which modules use the signature.
    """

    base_channels: int = 16
    num_frames: int = 5
    deform_groups: int = 8
    fusion_blocks: int = 15
    rdb_layers: int = 3
    spynet_levels: int = 6
    spynet_widths: tuple[int, ...] = (32, 64, 32, 16)
    spynet_kernel: int = 7
    tstsa_heads: int = 8
    max_offset: float = 10.0
    signature_window: int | None = None
    use_ts: TSSwitches = TSSwitches()

    @property
    def deep_channels(self) -> int:
        return 5 * self.base_channels

    def __post_init__(self):
        c, d = self.base_channels, self.deep_channels
        if c < 2 or c % 2:
            raise ValueError(f"base_channels must be even and >= 2, got {c}")
        if self.num_frames < 1 or self.num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd (2N + 1), got {self.num_frames}")
        if (2 * d) % self.deform_groups:
            raise ValueError(f"deform_groups {self.deform_groups} must divide the attention width 2 D = {2 * d}")
        if (self.num_frames * d) % self.tstsa_heads:
            raise ValueError(f"tstsa_heads {self.tstsa_heads} must divide Tw * D = {self.num_frames * d}")
        if self.fusion_blocks < 1 or self.rdb_layers < 1:
            raise ValueError("fusion_blocks and rdb_layers must be >= 1")
        if self.signature_window is not None and self.signature_window < 2:
            raise ValueError(f"signature_window must be >= 2 frames or None, got {self.signature_window}")


_VARIANT_CONFIGS: dict[str, dict] = {
    # CPU: a few channels, 2 fusion RDBs, a 3-level SpyNet with 5x5 kernels; trains in minutes.
    "tiny": dict(
        base_channels=8, num_frames=3, deform_groups=4, fusion_blocks=2, rdb_layers=2, spynet_levels=3,
        spynet_widths=(8, 16, 8), spynet_kernel=5, tstsa_heads=4,
    ),
    # The seed: 16 base channels, 8 deformable groups, 3-level features; the rest DATUM's (module docstring).
    "paper": dict(),
}  # fmt: skip


def tmts_config(name: str, **overrides) -> TMTSConfig:
    """The named config ``name`` in :data:`VARIANTS` with fields overridden (e.g. ``use_ts=TSSwitches.off()``)."""
    if name not in _VARIANT_CONFIGS:
        raise ValueError(f"unknown TMTS config {name!r}; choose one of {VARIANTS}")
    return TMTSConfig(**{**_VARIANT_CONFIGS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _pool(x: jax.Array, factor: int) -> jax.Array:
    """``factor`` x ``factor`` mean pooling of ``[..., H, W, C]`` (H, W divisible by ``factor``)."""
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // factor, factor, w // factor, factor, c).mean(axis=(-4, -2))


def window_signatures(clip: jax.Array, window: int | None = None) -> jax.Array:
    """Per-frame turbulence signatures ``[B, T, H, W]`` (px^2) of ``clip [B, T, H, W, C]`` in [0, 1].

    ``S_t`` is :func:`turbulence_signature` of the ``window`` consecutive frames around ``t`` (shifted to stay inside
    the clip, so every S_t uses the same number of frames); ``window=None`` or ``>= T`` uses the whole clip for every
    frame (one global map, the cheapest).
    """
    t = clip.shape[1]
    if window is None or window >= t:
        return jnp.broadcast_to(turbulence_signature(clip)[:, None], clip.shape[:-1])
    starts = [min(max(i - window // 2, 0), t - window) for i in range(t)]
    windows = jnp.stack([clip[:, s : s + window] for s in starts], axis=1)  # [B, T, window, H, W, C]
    return turbulence_signature(windows)


def kernel_grid(size: int = 3) -> jax.Array:
    """The ``size`` x ``size`` sampling grid ``[size^2, 2]`` of (dx, dy) px, row-major (dy outer), centred on 0."""
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    dy, dx = jnp.meshgrid(r, r, indexing="ij")
    return jnp.stack([dx.ravel(), dy.ravel()], axis=-1)


def sample_points(x: jax.Array, displacements: jax.Array) -> jax.Array:
    """Bilinear samples ``[N, H, W, P, C]`` of ``x [N, H, W, C]`` at ``p + displacements [N, H, W, P, 2]`` px.

    Point ``j`` of pixel ``p`` reads ``x`` at ``p + displacements[..., j, :]`` in the :func:`warp` convention
    ((dx, dy), border-clamped). ``warp`` is vmapped over the points with ``x`` shared, so its gathers batch the
    indices only and ``x`` is never copied P times.
    """
    return jax.vmap(warp, in_axes=(None, -2), out_axes=-2)(x, displacements)


def deformable_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, offsets: jax.Array, groups: int
) -> jax.Array:
    """Deformable attention: each pixel attends to P points per group around it.

    Args:
      query, key, value: ``[N, H, W, C]``, channels split into ``groups`` heads of ``C / groups``.
      offsets: ``[N, H, W, G, P, 2]`` px (dx, dy) relative to the ``sqrt(P)`` x ``sqrt(P)`` :func:`kernel_grid`:
        point ``j`` of group ``g`` samples ``key`` / ``value`` at ``p + grid[j] + offsets[..., g, j, :]``.

    Returns ``[N, H, W, C]``: per group ``sum_j softmax_j(q . k_j / sqrt(C / G)) v_j``. With zero offsets this is
    plain attention over the 3x3 neighbourhood (borders replicated); with offsets it can follow any displacement,
    at the cost of one bilinear gather per point.
    """
    n, h, w, c = query.shape
    g = groups
    p = offsets.shape[-2]
    size = math.isqrt(p)
    if size * size != p or offsets.shape != (n, h, w, g, p, 2) or c % g:
        raise ValueError(f"offsets must be [N, H, W, G, k*k, 2] for query {query.shape}, G={g}; got {offsets.shape}")
    cg = c // g
    positions = offsets + kernel_grid(size).astype(offsets.dtype)  # [N, H, W, G, P, 2]
    kv = jnp.concatenate([key.reshape(n, h, w, g, cg), value.reshape(n, h, w, g, cg)], axis=-1)
    kv = jnp.moveaxis(kv, 3, 1).reshape(n * g, h, w, 2 * cg)  # groups into the batch
    positions = jnp.moveaxis(positions, 3, 1).reshape(n * g, h, w, p, 2)
    sampled = sample_points(kv, positions).reshape(n, g, h, w, p, 2 * cg)
    sampled = jnp.moveaxis(sampled, 1, 3)  # [N, H, W, G, P, 2 cg]
    k, v = sampled[..., :cg], sampled[..., cg:]
    q = query.reshape(n, h, w, g, cg)
    weights = jax.nn.softmax(jnp.einsum("nhwgc,nhwgpc->nhwgp", q, k) / math.sqrt(cg), axis=-1)
    return jnp.einsum("nhwgp,nhwgpc->nhwgc", weights, v).reshape(n, h, w, c)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, *, rngs: nnx.Rngs, **kw) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding="SAME", rngs=rngs, **kw)


# ----------------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------------


class RDB(nnx.Module):
    """Residual dense block: ``layers`` 3x3 conv + GELU layers, each fed all previous maps; 1x1 fusion; residual.

    ``[N, H, W, channels] -> [N, H, W, channels]``. Dense connections reuse every intermediate map (cheap depth for
    narrow networks: the block's layers add ``growth`` channels each); the residual keeps it near identity.
    """

    def __init__(self, channels: int, growth: int, layers: int = 3, *, rngs: nnx.Rngs):
        self.dense = nnx.List(
            [ConvNormAct(channels + i * growth, growth, 3, norm=False, act=nnx.gelu, rngs=rngs) for i in range(layers)]
        )
        self.fuse = _conv(channels + layers * growth, channels, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for layer in self.dense:
            h = jnp.concatenate([h, layer(h)], axis=-1)
        return x + self.fuse(h)


class CAB(nnx.Module):
    """Channel-attention block: ``x + CA(conv_k1(GELU(conv_k0(x))))``, ``CA`` a squeeze-excitation (reduction 16)."""

    def __init__(self, channels: int, kernels: tuple[int, int] = (1, 3), *, rngs: nnx.Rngs):
        self.conv1 = ConvNormAct(channels, channels, kernels[0], norm=False, act=nnx.gelu, rngs=rngs)
        self.conv2 = _conv(channels, channels, kernels[1], rngs=rngs)
        self.attention = ChannelAttention(channels, reduction=16, act=nnx.relu, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.attention(self.conv2(self.conv1(x)))


class SignatureGate(nnx.Module):
    """``sigmoid(conv3x3(s))``: a learned, bounded map of the (log-compressed, H/4) signature ``[..., h, w, k]``."""

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        self.conv = _conv(in_channels, out_channels, 3, rngs=rngs)

    def __call__(self, s: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(self.conv(s))


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------


class FeatureEncoder(nnx.Module):
    """Per-frame three-level features (DATUM's encoder): ``frames [N, H, W, 3]`` in [0, 1] -> (f1, f2, f3).

    ``f1 [N, H, W, C]`` (5x5 conv), ``f2 [N, H/2, W/2, 2C]`` (RDB + 5x5 stride-2 conv), ``f3 [N, H/4, W/4, 5C]`` (RDB on
    ``[f2, conv_s2(frame)]`` + 5x5 stride-2 conv, concatenated with a 5x5 stride-2 conv of the half-size frame): every
    level also sees the image directly, so coarse features do not depend on one path only.
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        c, layers = config.base_channels, config.rdb_layers
        self.stem1 = _conv(3, c, 5, rngs=rngs)
        self.stem2 = _conv(3, c, 5, 2, rngs=rngs)
        self.stem3 = _conv(3, c, 5, 2, rngs=rngs)
        self.rdb1 = RDB(c, c, layers, rngs=rngs)
        self.down1 = _conv(c, 2 * c, 5, 2, rngs=rngs)
        self.rdb2 = RDB(3 * c, 3 * c // 2, layers, rngs=rngs)
        self.down2 = _conv(3 * c, 4 * c, 5, 2, rngs=rngs)
        self.signature = SignatureGate(1, config.deep_channels, rngs=rngs) if config.use_ts.encoder else None

    def __call__(self, frames: jax.Array, signature: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        n, h, w, ch = frames.shape
        x = frames * 2.0 - 1.0
        f1 = self.stem1(x)
        half = jax.image.resize(x, (n, h // 2, w // 2, ch), "bilinear")
        f2 = self.down1(self.rdb1(f1))
        f3 = self.down2(self.rdb2(jnp.concatenate([f2, self.stem2(x)], axis=-1)))
        f3 = jnp.concatenate([f3, self.stem3(half)], axis=-1)
        if self.signature is not None:
            f3 = f3 * self.signature(signature) + f3
        return f1, f2, f3


class GuidedDeformableAttention(nnx.Module):
    """Align ``feature`` to ``reference`` with offsets predicted from a guide (RVRT / DATUM's GDA).

    ``(feature, guide, reference [N, h, w, D | K | D], flow [N, h, w, 2]) -> (aligned [N, h, w, D], new flow)``.
    Offsets: 1x1 conv -> GELU -> RDB -> 1x1 conv (zero-initialised: a fresh module samples the 3x3 grid around the
    coarse flow) to ``G x 9 x 2`` residuals, bounded to ``max_offset`` px by a tanh, plus ``flow``. Attention:
    queries from the reference, keys and values from the feature (1x1 projections to 2D), :func:`deformable_attention`,
    1x1 projection back to D and a residual channel MLP. The new flow is the mean offset (the kernel grid is
    centred), the deformation field carried to the next time step.
    """

    def __init__(self, channels: int, guide_channels: int, config: TMTSConfig, *, rngs: nnx.Rngs):
        g, inner = config.deform_groups, 2 * channels
        self.groups, self.points, self.max_offset = g, 9, config.max_offset
        self.offset_in = ConvNormAct(guide_channels, channels, 1, norm=False, act=nnx.gelu, rngs=rngs)
        self.offset_rdb = RDB(channels, config.base_channels, config.rdb_layers, rngs=rngs)
        zeros = nnx.initializers.zeros
        self.offset_out = _conv(channels, g * self.points * 2, 1, kernel_init=zeros, bias_init=zeros, rngs=rngs)
        self.q = _conv(channels, inner, 1, rngs=rngs)
        self.k = _conv(channels, inner, 1, rngs=rngs)
        self.v = _conv(channels, inner, 1, rngs=rngs)
        self.proj = _conv(inner, channels, 1, rngs=rngs)
        self.ffn = MLP(channels, 2 * channels, channels, 2, rngs=rngs)

    def __call__(
        self, feature: jax.Array, guide: jax.Array, reference: jax.Array, flow: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        n, h, w, _ = feature.shape
        residual = self.offset_out(self.offset_rdb(self.offset_in(guide)))
        residual = self.max_offset * jnp.tanh(residual / self.max_offset)
        offsets = residual.reshape(n, h, w, self.groups, self.points, 2) + flow[..., None, None, :]
        out = deformable_attention(self.q(reference), self.k(feature), self.v(feature), offsets, self.groups)
        out = self.proj(out)
        return out + self.ffn(out), offsets.mean(axis=(3, 4))


class TSGA(nnx.Module):
    """Turbulence-signature-guided alignment (seed eq. 5).

    ``(f3_t, r_{t-1}, O [N, h, w, 2] px, s_t [N, h, w, 1] | None) -> (aligned f^_t, O_t)``: the guide of the offsets
    is ``[warp(f3_t, O), r_{t-1}, O, sigmoid(conv(s_t))]`` (the last only with ``use_ts.tsga``, C channels).
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        d, c = config.deep_channels, config.base_channels
        self.signature = SignatureGate(1, c, rngs=rngs) if config.use_ts.tsga else None
        guide = 2 * d + 2 + (c if self.signature is not None else 0)
        self.gda = GuidedDeformableAttention(d, guide, config, rngs=rngs)

    def __call__(
        self, feature: jax.Array, reference: jax.Array, flow: jax.Array, signature: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        parts = [warp(feature, flow), reference, flow]
        if self.signature is not None:
            parts.append(self.signature(signature))
        return self.gda(feature, jnp.concatenate(parts, axis=-1), reference, flow)


class LuckyFusion(nnx.Module):
    """DATUM's RDNet: ``[f^_t, f3_t, r_{t-1}] [N, h, w, 3D] -> e_t [N, h, w, D]``, the forward / backward embedding.

    An RDB at 3D + 3x3 conv to 6C, ``fusion_blocks - 1`` more RDBs, then all block outputs concatenated, 1x1 conv and
    3x3 conv to D (dense global fusion: every depth contributes to the embedding).
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        c, d, layers, n = config.base_channels, config.deep_channels, config.rdb_layers, config.fusion_blocks
        mid = 6 * c
        self.first = RDB(3 * d, c, layers, rngs=rngs)
        self.shrink = _conv(3 * d, mid, 3, rngs=rngs)
        self.blocks = nnx.List([RDB(mid, c, layers, rngs=rngs) for _ in range(n - 1)])
        self.merge = _conv(n * mid, mid, 1, rngs=rngs)
        self.out = _conv(mid, d, 3, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.shrink(self.first(x))
        outs = [h]
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return self.out(self.merge(jnp.concatenate(outs, axis=-1)))


class CGRFU(nnx.Module):
    """Convolutional gated reference-feature update (seed eqs. 6-9): ``(e_t, r_{t-1}, s_t | None) -> r_t``.

    ``Z = e * sigmoid(conv(s)) + e`` (``Z = e`` without ``use_ts.cgrfu``); ``(u, g) = split(sigmoid(conv3x3([Z, r])))``
    (update gate first); candidate ``H~ = tanh(candidate([Z, g * r]))`` with ``candidate`` = conv3x3 -> RDB ->
    conv3x3 (DATUM's ConvGRU); ``r_t = (1 - u) * H~ + u * r_{t-1}``. ``r`` stays in (-1, 1) when it starts there.
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        d = config.deep_channels
        self.signature = SignatureGate(1, d, rngs=rngs) if config.use_ts.cgrfu else None
        self.gates = _conv(2 * d, 2 * d, 3, rngs=rngs)
        self.candidate_in = _conv(2 * d, d, 3, rngs=rngs)
        self.candidate_rdb = RDB(d, d, config.rdb_layers, rngs=rngs)
        self.candidate_out = _conv(d, d, 3, rngs=rngs)

    def candidate(self, x: jax.Array) -> jax.Array:
        """The pre-tanh candidate network on ``[Z, g * r]`` (exposed for tests)."""
        return self.candidate_out(self.candidate_rdb(self.candidate_in(x)))

    def __call__(self, embedding: jax.Array, hidden: jax.Array, signature: jax.Array | None = None) -> jax.Array:
        z = embedding if self.signature is None else embedding * self.signature(signature) + embedding
        update, reset = jnp.split(jax.nn.sigmoid(self.gates(jnp.concatenate([z, hidden], axis=-1))), 2, axis=-1)
        candidate = jnp.tanh(self.candidate(jnp.concatenate([z, reset * hidden], axis=-1)))
        return (1.0 - update) * candidate + update * hidden


class TSTSA(nnx.Module):
    """Turbulence-signature temporal self-attention (seed eq. 10) over the fused window.

    ``(embeddings [N, Tw, h, w, 2D], signature [N, h, w, Tw] | None) -> [N, h, w, Tw D]``: frames concatenated in
    channels, 1x1 conv + GELU to ``x``; Q, K, V from a separable conv (depthwise 3x3, pointwise to 3x); per head
    channel attention ``softmax(temperature * (Q S_a) K^T) V`` with Q, K L2-normalised over pixels and
    ``S_a = sigmoid(conv(s))`` weighting each pixel's contribution (``S_a = 1`` without ``use_ts.tstsa``); 1x1
    projection; residual. Channel attention costs O(HW C^2), not O((HW)^2), so it runs on whole frames.
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        tw, d, heads = config.num_frames, config.deep_channels, config.tstsa_heads
        width = tw * d
        self.heads = heads
        self.reduce = ConvNormAct(2 * width, width, 1, norm=False, act=nnx.gelu, rngs=rngs)
        self.depthwise = _conv(width, width, 3, feature_group_count=width, use_bias=False, rngs=rngs)
        self.pointwise = _conv(width, 3 * width, 1, use_bias=False, rngs=rngs)
        self.temperature = nnx.Param(jnp.ones((heads,), jnp.float32))
        self.signature = SignatureGate(tw, heads, rngs=rngs) if config.use_ts.tstsa else None
        self.project = _conv(width, width, 1, use_bias=False, rngs=rngs)

    def __call__(self, embeddings: jax.Array, signature: jax.Array | None = None) -> jax.Array:
        n, tw, h, w, c2 = embeddings.shape
        x = self.reduce(jnp.moveaxis(embeddings, 1, 3).reshape(n, h, w, tw * c2))
        width = x.shape[-1]
        q, k, v = jnp.split(self.pointwise(self.depthwise(x)), 3, axis=-1)

        def heads(a: jax.Array) -> jax.Array:  # [N, h, w, width] -> [N, heads, width / heads, h w]
            return jnp.moveaxis(a.reshape(n, h * w, self.heads, width // self.heads), 1, -1)

        def normalise(a: jax.Array) -> jax.Array:
            return a * jax.lax.rsqrt(jnp.sum(a * a, axis=-1, keepdims=True) + 1e-12)

        q, k, v = normalise(heads(q)), normalise(heads(k)), heads(v)
        if self.signature is not None:
            weights = self.signature(signature).reshape(n, h * w, self.heads)  # [N, hw, heads]
            q = q * jnp.moveaxis(weights, 1, -1)[:, :, None, :]
        scores = jnp.einsum("nkcp,nkdp->nkcd", q, k) * self.temperature[...][None, :, None, None]
        out = jnp.einsum("nkcd,nkdp->nkcp", jax.nn.softmax(scores, axis=-1), v)  # [N, heads, c, hw]
        out = jnp.moveaxis(out, -1, 1).reshape(n, h, w, width)
        return x + self.project(out)


class Reconstructor(nnx.Module):
    """One branch of the dual decoder: ``(fused [N, h, w, Tw D], f2 [N, H/2, W/2, 2C], f1 [N, H, W, C]) -> out``.

    Transposed 3x3 stride-2 conv to 4C, concat f2, CAB(6C); transposed conv to 2C, concat f1, CAB(3C); 3x3 conv +
    GELU to C and a 3x3 conv to ``out_channels`` (``out_init``: zeros for the tilt field, tiny for the residual image,
    so a fresh model outputs the input's centre frame). Also returns the two CAB maps (feature taps).
    """

    def __init__(self, config: TMTSConfig, out_channels: int, out_init: nnx.Initializer, *, rngs: nnx.Rngs):
        c, width = config.base_channels, config.num_frames * config.deep_channels
        self.up2 = nnx.ConvTranspose(width, 4 * c, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.fuse2 = CAB(6 * c, rngs=rngs)
        self.up1 = nnx.ConvTranspose(6 * c, 2 * c, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.fuse1 = CAB(3 * c, rngs=rngs)
        self.head = ConvNormAct(3 * c, c, 3, norm=False, act=nnx.gelu, rngs=rngs)
        self.out = _conv(c, out_channels, 3, kernel_init=out_init, rngs=rngs)

    def __call__(self, fused: jax.Array, skip2: jax.Array, skip1: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        half = self.fuse2(jnp.concatenate([self.up2(fused), skip2], axis=-1))
        full = self.fuse1(jnp.concatenate([self.up1(half), skip1], axis=-1))
        return self.out(self.head(full)), half, full


# ----------------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------------


class TMTS(nnx.Module):
    """The TMTS network; see the module docstring for the architecture, feature taps and parameter counts.

    ``TMTS(config, rngs=nnx.Rngs(0))(clip [B, T, H, W, 3] in [0, 1], signature=None) -> RestorerOutput`` restoring
    the centre frame ``clip[:, T // 2]``; ``T`` odd and ``>= config.num_frames``, ``H`` and ``W`` divisible by 4.
    ``signature`` ``[B, T, H, W]`` px^2 replaces the computed :func:`window_signatures` (e.g. a precomputed or
    differentiated one); it is ignored when every ``use_ts`` switch is off.
    """

    def __init__(self, config: TMTSConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = FeatureEncoder(config, rngs=rngs)
        self.spynet = SpyNet(config.spynet_levels, config.spynet_widths, config.spynet_kernel, rngs=rngs)
        self.tsga = TSGA(config, rngs=rngs)
        self.fusion = LuckyFusion(config, rngs=rngs)
        self.cgrfu = CGRFU(config, rngs=rngs)
        self.tstsa = TSTSA(config, rngs=rngs)
        self.tilt_decoder = Reconstructor(config, 2, nnx.initializers.zeros, rngs=rngs)
        self.image_decoder = Reconstructor(config, 3, nnx.initializers.normal(1e-3), rngs=rngs)

    def _recurrence(self, f3: jax.Array, flows: jax.Array, signature: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Forward and backward passes: ``(e_fw, e_bw)``, each ``[B, T, h, w, D]`` indexed by frame.

        ``f3 [B, T, h, w, D]``; ``flows [B, 2, T-1, h, w, 2]``: ``flows[:, 0, k]`` has reference frame k and support
        frame k+1, ``flows[:, 1, k]`` reference k+1 and support k (``warp(support, flow) ~ reference``);
        ``signature [B, T, h, w, 1]`` or None. The two passes share their modules, so they run as one recurrence
        over a batch of 2B sequences (the backward ones time-reversed), in a ``lax.scan``: compile time does not grow
        with T. Step 0 has nothing to align to (f^_0 = f3_0, O_0 = 0); it goes through the same body, with the
        TSGA result discarded by a ``where``, so that the body is traced once.
        """
        ts = self.config.use_ts
        b, t, h, w, d = f3.shape

        def both(fw: jax.Array, bw: jax.Array) -> jax.Array:  # [2B, T, ...] time-major for the scan
            return jnp.moveaxis(jnp.concatenate([fw, bw], axis=0), 1, 0)

        seq = both(f3, f3[:, ::-1])
        pair = jnp.pad(both(flows[:, 0], flows[:, 1, ::-1]), ((1, 0), (0, 0), (0, 0), (0, 0), (0, 0)))
        sig = None if signature is None else both(signature, signature[:, ::-1])
        first = jnp.arange(t) == 0
        graphdef, state = nnx.split((self.tsga, self.fusion, self.cgrfu))

        def step(carry, x):
            hidden, field = carry
            f, flow, s, is_first = x
            tsga, fusion, cgrfu = nnx.merge(graphdef, state)
            field = field + warp(flow, field)  # previous field composed with the pair flow
            aligned, new_field = tsga(f, hidden, field, s if ts.tsga else None)
            aligned = jnp.where(is_first, f, aligned)
            field = jnp.where(is_first, jnp.zeros_like(new_field), new_field)
            embedding = fusion(jnp.concatenate([aligned, f, hidden], axis=-1))
            hidden = cgrfu(embedding, hidden, s if ts.cgrfu else None)
            return (hidden, field), embedding

        init = (jnp.zeros((2 * b, h, w, d), f3.dtype), jnp.zeros((2 * b, h, w, 2), f3.dtype))
        _, embeddings = jax.lax.scan(step, init, (seq, pair, sig, first))  # [T, 2B, h, w, D]
        embeddings = jnp.moveaxis(embeddings, 0, 1)
        return embeddings[:b], embeddings[b:, ::-1]

    def __call__(self, clip: jax.Array, signature: jax.Array | None = None) -> RestorerOutput:
        cfg, ts = self.config, self.config.use_ts
        if clip.ndim != 5 or clip.shape[-1] != 3:
            raise ValueError(f"expected a clip [B, T, H, W, 3], got shape {clip.shape}")
        b, t, h, w, _ = clip.shape
        if t % 2 == 0 or t < max(cfg.num_frames, 3):
            raise ValueError(f"the clip needs an odd number T >= {max(cfg.num_frames, 3)} of frames, got T = {t}")
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"frame size {h}x{w} must be divisible by {STRIDE}")
        h4, w4 = h // STRIDE, w // STRIDE
        centre = t // 2

        full_signature = small_signature = None
        if ts.any:
            full_signature = window_signatures(clip, cfg.signature_window) if signature is None else signature
            if full_signature.shape != clip.shape[:-1]:
                raise ValueError(f"signature must be [B, T, H, W] = {clip.shape[:-1]}, got {full_signature.shape}")
            small_signature = _pool(jnp.log1p(full_signature)[..., None], STRIDE)  # [B, T, h4, w4, 1]

        frames = clip.reshape(b * t, h, w, 3)
        enc_sig = small_signature.reshape(b * t, h4, w4, 1) if ts.encoder else None
        f1, f2, f3 = (a.reshape(b, t, *a.shape[1:]) for a in self.encoder(frames, enc_sig))

        # Coarse flows at H/4 for both passes in one SpyNet call: forward k: x_k -> x_{k+1}; backward k: x_{k+1} -> x_k.
        small = _pool(clip, STRIDE)  # [B, T, h4, w4, 3]
        ref = jnp.stack([small[:, :-1], small[:, 1:]], axis=1).reshape(-1, h4, w4, 3)
        sup = jnp.stack([small[:, 1:], small[:, :-1]], axis=1).reshape(-1, h4, w4, 3)
        flows = self.spynet(ref, sup).reshape(b, 2, t - 1, h4, w4, 2)
        forward, backward = self._recurrence(f3, flows, small_signature)

        half_window = cfg.num_frames // 2
        window = range(centre - half_window, centre + half_window + 1)
        embeddings = jnp.concatenate([forward, backward], axis=-1)[:, window.start : window.stop]  # [B, Tw, h, w, 2D]
        tstsa_sig = None
        if ts.tstsa:
            tstsa_sig = jnp.moveaxis(small_signature[:, window.start : window.stop, ..., 0], 1, -1)  # [B, h4, w4, Tw]
        fused = self.tstsa(embeddings, tstsa_sig)

        tilt_field, _, _ = self.tilt_decoder(fused, f2[:, centre], f1[:, centre])
        half_field = 0.5 * _pool(tilt_field, 2)  # the same displacement in half-resolution pixels
        skip2 = warp(f2[:, centre], half_field)
        skip1 = warp(f1[:, centre], tilt_field)
        residual, dec_half, dec_full = self.image_decoder(fused, skip2, skip1)
        image = warp(clip[:, centre], tilt_field) + residual

        features = {
            "registration": skip1,
            "enhance1": dec_half,
            "enhance2": fused,
            "decoder": dec_full,
            "embedding": embeddings[:, half_window],
        }
        if full_signature is not None:
            features["signature"] = full_signature[:, centre, ..., None]
        return RestorerOutput(image=image, features=features, tilt_field=tilt_field)


def module_parameters(model: TMTS) -> dict[str, int]:
    """Trainable parameters per top-level module of ``model`` (works on ``nnx.eval_shape`` models), plus ``total``."""
    names = ("encoder", "spynet", "tsga", "fusion", "cgrfu", "tstsa", "tilt_decoder", "image_decoder")
    counts = {name: count_parameters(getattr(model, name)) for name in names}
    counts["total"] = count_parameters(model)
    return counts
