"""DETR-style object detector in Flax NNX, sized to the JDATT student detectors.

Architecture (``Detector``)::

    image [B,H,W,3] in [0,1]
      -> stem conv s2 -> 4 stages (stride-2 ConvNormAct + residual blocks)   stage1..stage4 at strides 4/8/16/32
      -> neck: 1x1 conv+GroupNorm of stage4 -> hidden_dim                        "neck"     [B,H/32,W/32,D]
      -> transformer encoder over the stride-32 tokens (sine positions)         "encoder"  [B,H/32,W/32,D]
      -> top-down fusion: 1x1 proj(stage3) + 2x upsample(encoder), 3x3 conv     "fused"    [B,H/16,W/16,D]
      -> (tiny) 1x1 proj(stage2) + 2x upsample(fused), 3x3 conv                 "fused8"   [B,H/8,W/8,D]
      -> memory = stride-32, stride-16 (and stride-8) tokens (+ level embedding), LayerNorm
      -> decoder: num_queries queries anchored at their current box centre, num_decoder_layers
         pre-norm layers                                                        "decoder"  [B,Q,D]
      -> shared heads after every decoder layer: class logits [B,Q,K], boxes [B,Q,4] refined layer by layer

Why these choices:

* Set prediction with learned queries (DETR): no anchors and no NMS, and the outputs are fixed-shape arrays,
  so the whole detector + Hungarian-matched loss jits and shards cleanly, and a distillation loss can compare
  teacher and student predictions query by query or through matching.
* The encoder attends only over stride-32 tokens (as RT-DETR's AIFI does): the cost is negligible even at
  256-512 px, while the stride-16 fused map keeps small objects resolvable in cross-attention.
* Sigmoid classification with ``K`` independent logits (no "no-object" class) for a focal / varifocal loss;
  the class bias starts at the prior ``p = 0.01`` (``b = -log((1 - p) / p)``) so the loss is not swamped by
  the ~Q background queries at initialisation.
* Boxes are normalised ``(cx, cy, w, h)`` in ``[0, 1]``: ``sigmoid(box_mlp(h) + [logit(ref), 0, 0])`` with
  a learned reference point ``ref`` per query and a zero-initialised last box layer, so at initialisation
  queries are spread over the image (box 0.5 x 0.5 at ``ref``) instead of collapsing at the centre; this is
  the Deformable-DETR trick that speeds up early training considerably.
* Anchored queries (``anchored_queries``, default): each layer's query position embedding is an MLP of
  the sine embedding of the current box centre, in the same coordinates as the memory's positions, so
  cross-attention looks near the box from the first step (DAB-DETR), and each layer refines the previous
  layer's box (Deformable DETR's iterative refinement). Free learned query positions, as in the original
  DETR, must discover locality by themselves; at CPU scale they did not within an hour of training.
* GroupNorm, not BatchNorm: per-example, so results do not depend on batch size or sharding.

``DetectorOutput.features`` exposes intermediate maps by name so feature distillation can tap them:

============  =========================  ===================================================
name          shape                      what
============  =========================  ===================================================
``stage1``    ``[B, H/4,  W/4,  w1]``    backbone stage 1 output
``stage2``    ``[B, H/8,  W/8,  w2]``    backbone stage 2 output
``stage3``    ``[B, H/16, W/16, w3]``    backbone stage 3 output
``stage4``    ``[B, H/32, W/32, w4]``    backbone stage 4 output
``neck``      ``[B, H/32, W/32, D]``     1x1 projection of stage4 to hidden_dim
``encoder``   ``[B, H/32, W/32, D]``     transformer-encoder output (equals ``neck`` when it has 0 layers)
``fused``     ``[B, H/16, W/16, D]``     top-down fusion of ``encoder`` with stage3
``decoder``   ``[B, Q, D]``              normalised hidden state of the last decoder layer
``fused8``    ``[B, H/8,  W/8,  D]``     stride-8 fusion of ``fused`` with stage2 (``stride8_memory`` only)
============  =========================  ===================================================

(``w1..w4`` = ``config.widths``, ``D`` = ``config.hidden_dim``.) Input height and width must be divisible by 32;
all images of a batch share one size (no padding masks).

Named variants (``detector_config``), trainable parameters at ``num_classes=80``:

==========  =======  ==========  ==========================================================
name        queries  parameters  target
==========  =======  ==========  ==========================================================
``tiny``    32       0.427 M     CPU-trainable in minutes on 64-128 px images
``small``   100      2.631 M     JDATT-S student detector (2.6 M)
``medium``  100      9.564 M     JDATT-M student detector (9.4 M)
``large``   100      20.23 M     JDATT-L student detector (20.1 M)
==========  =======  ==========  ==========================================================

The count changes by ``(hidden_dim + 1) * (num_classes - 80)`` for another ``num_classes`` (e.g. -1,419 for
the JDATT dataset's 69 classes with ``small``) and by ``(hidden_dim + 2) * delta`` for ``delta`` more queries.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from turbjax.models.layers import (
    MLP,
    ConvNormAct,
    ResidualBlock,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    sine_point_embedding,
    sine_position_embedding,
)

VARIANTS: tuple[str, ...] = ("tiny", "small", "medium", "large")
FEATURE_NAMES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "neck", "encoder", "fused", "decoder")
STRIDE: int = 32  # total downsampling of the backbone; input sizes must be multiples of it


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters of :class:`Detector`.

    Attributes:
      num_classes: K, number of object classes (sigmoid logits, no background class).
      num_queries: Q, number of learned object queries = maximum detections per image.
      widths: channels of the 4 backbone stages (strides 4, 8, 16, 32); the stem has ``max(widths[0] // 2, 8)``.
      depths: residual blocks per stage (after the stride-2 downsampling conv of each stage).
      hidden_dim: D, transformer width (divisible by ``num_heads`` and by 4 for the sine embedding).
      num_encoder_layers: transformer encoder layers over the stride-32 tokens; 0 disables the encoder.
      num_decoder_layers: decoder layers (>= 1); all but the last give auxiliary outputs.
      num_heads: attention heads.
      ffn_dim: hidden width of the transformer feed-forward blocks.
      dropout: dropout rate in the transformer (0 = deterministic, no dropout RNG needed).
      prior_prob: initial foreground probability of every class logit.
      anchored_queries: derive each decoder layer's query positions from the current box centre (sine
        embedding through a 2-layer MLP, as DAB-DETR) and refine boxes layer by layer (each layer predicts
        an offset to the previous layer's box in logit space, the previous box detached, as Deformable
        DETR); False: learned free query positions and boxes relative to the fixed reference points only.
      stride8_memory: also put the stride-8 map (stage2 fused with the stride-16 map) into the decoder's
        memory: small objects in small frames (64 px: a 8 x 8 instead of a 4 x 4 finest map).
    """

    num_classes: int = 80
    num_queries: int = 100
    widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    depths: tuple[int, int, int, int] = (1, 1, 1, 1)
    hidden_dim: int = 128
    num_encoder_layers: int = 1
    num_decoder_layers: int = 3
    num_heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.0
    prior_prob: float = 0.01
    anchored_queries: bool = True
    stride8_memory: bool = False

    def __post_init__(self):
        if len(self.widths) != 4 or len(self.depths) != 4:
            raise ValueError(f"widths and depths need 4 stages, got {self.widths} and {self.depths}")
        if self.hidden_dim % self.num_heads or self.hidden_dim % 4:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by num_heads and by 4")
        if self.num_decoder_layers < 1:
            raise ValueError("the detector needs at least one decoder layer")
        if not 0.0 < self.prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {self.prior_prob}")


_VARIANT_CONFIGS: dict[str, dict] = {
    "tiny": dict(
        num_queries=32, widths=(16, 32, 48, 64), depths=(1, 1, 1, 1), hidden_dim=64,
        num_encoder_layers=1, num_decoder_layers=2, num_heads=4, ffn_dim=128, stride8_memory=True,
    ),
    "small": dict(
        num_queries=100, widths=(32, 64, 128, 192), depths=(1, 1, 1, 1), hidden_dim=128,
        num_encoder_layers=1, num_decoder_layers=3, num_heads=4, ffn_dim=512,
    ),
    "medium": dict(
        num_queries=100, widths=(48, 96, 192, 352), depths=(1, 1, 2, 1), hidden_dim=256,
        num_encoder_layers=1, num_decoder_layers=3, num_heads=8, ffn_dim=1024,
    ),
    "large": dict(
        num_queries=100, widths=(64, 128, 256, 512), depths=(2, 3, 4, 1), hidden_dim=256,
        num_encoder_layers=1, num_decoder_layers=6, num_heads=8, ffn_dim=1024,
    ),
}  # fmt: skip


def detector_config(name: str, num_classes: int = 80, **overrides) -> DetectorConfig:
    """The named variant ``name`` in :data:`VARIANTS`, with ``num_classes`` and any other field overridden.

    Example: ``detector_config("small", num_classes=69)`` for the JDATT dataset's 69 categories.
    """
    if name not in _VARIANT_CONFIGS:
        raise ValueError(f"unknown detector variant {name!r}; choose one of {VARIANTS}")
    return DetectorConfig(**{**_VARIANT_CONFIGS[name], "num_classes": num_classes, **overrides})


@struct.dataclass
class DetectorOutput:
    """Detector predictions (a pytree, so it passes through ``jax.jit`` and sharding unchanged).

    Attributes:
      logits: ``[B, Q, K]`` class logits of the last decoder layer (apply ``sigmoid`` for probabilities).
      boxes: ``[B, Q, 4]`` normalised ``(cx, cy, w, h)`` in ``[0, 1]`` of the last decoder layer.
      aux: ``((logits, boxes), ...)`` of the earlier decoder layers, first layer first, for auxiliary losses;
        ``num_decoder_layers - 1`` entries.
      features: named intermediate maps (see the module docstring) for feature distillation.
    """

    logits: jax.Array
    boxes: jax.Array
    aux: tuple[tuple[jax.Array, jax.Array], ...]
    features: dict[str, jax.Array]


def _inverse_sigmoid(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    x = jnp.clip(x, eps, 1.0 - eps)
    return jnp.log(x) - jnp.log1p(-x)


def _reference_init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    # Reference centres spread uniformly over the image, stored as logits.
    return _inverse_sigmoid(jax.random.uniform(key, shape, dtype, 0.05, 0.95))


class Backbone(nnx.Module):
    """Convolutional backbone: stem (3x3, stride 2) and 4 stages of (3x3 stride-2 ConvNormAct + residual blocks).

    ``[B, H, W, 3] -> {"stage1": [B, H/4, W/4, w1], ..., "stage4": [B, H/32, W/32, w4]}``.
    """

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], *, rngs: nnx.Rngs):
        stem_width = max(widths[0] // 2, 8)
        self.stem = ConvNormAct(3, stem_width, 3, stride=2, rngs=rngs)
        stages = []
        c_in = stem_width
        for width, depth in zip(widths, depths, strict=True):
            blocks = [ConvNormAct(c_in, width, 3, stride=2, rngs=rngs)]
            blocks += [ResidualBlock(width, rngs=rngs) for _ in range(depth)]
            stages.append(nnx.List(blocks))
            c_in = width
        self.stages = nnx.List(stages)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = self.stem(x)
        out = {}
        for i, stage in enumerate(self.stages):
            for block in stage:
                x = block(x)
            out[f"stage{i + 1}"] = x
        return out


class Detector(nnx.Module):
    """DETR-style detector; see the module docstring for the architecture and the feature names.

    ``Detector(config, rngs=nnx.Rngs(0))(images [B, H, W, 3] in [0, 1]) -> DetectorOutput`` with H, W
    divisible by 32.
    """

    def __init__(self, config: DetectorConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        d = c.hidden_dim
        self.backbone = Backbone(c.widths, c.depths, rngs=rngs)
        self.neck = ConvNormAct(c.widths[3], d, 1, act=None, rngs=rngs)
        self.encoder = nnx.List(
            [
                TransformerEncoderLayer(d, c.num_heads, c.ffn_dim, dropout=c.dropout, rngs=rngs)
                for _ in range(c.num_encoder_layers)
            ]
        )
        self.encoder_norm = nnx.LayerNorm(d, rngs=rngs) if c.num_encoder_layers else None
        self.lateral = ConvNormAct(c.widths[2], d, 1, act=None, rngs=rngs)
        self.fuse = ConvNormAct(d, d, 3, rngs=rngs)
        # Learned embedding added to the positions of each memory level (0: stride 32, 1: stride 16) so that
        # cross-attention can tell the two scales apart.
        self.level_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (3 if c.stride8_memory else 2, d)))
        self.memory_norm = nnx.LayerNorm(d, rngs=rngs)
        if c.stride8_memory:
            self.lateral8 = ConvNormAct(c.widths[1], d, 1, act=None, rngs=rngs)
            self.fuse8 = ConvNormAct(d, d, 3, rngs=rngs)

        if c.anchored_queries:
            self.query_pos_mlp = MLP(d, d, d, 2, act=nnx.relu, rngs=rngs)
        else:
            self.query_pos = nnx.Param(nnx.initializers.normal(1.0)(rngs.params(), (c.num_queries, d)))
        self.reference = nnx.Param(_reference_init(rngs.params(), (c.num_queries, 2)))
        self.decoder = nnx.List(
            [
                TransformerDecoderLayer(d, c.num_heads, c.ffn_dim, dropout=c.dropout, rngs=rngs)
                for _ in range(c.num_decoder_layers)
            ]
        )
        self.decoder_norm = nnx.LayerNorm(d, rngs=rngs)
        bias = -math.log((1.0 - c.prior_prob) / c.prior_prob)
        self.class_head = nnx.Linear(d, c.num_classes, bias_init=nnx.initializers.constant(bias), rngs=rngs)
        self.box_head = MLP(d, d, 4, 3, act=nnx.relu, out_kernel_init=nnx.initializers.zeros, rngs=rngs)

    def _heads(self, hidden: jax.Array, previous: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``hidden [B, Q, D]`` (normalised), ``previous`` box logits ``[B|1, Q, 4]`` ->
        ``(logits [B, Q, K], boxes [B, Q, 4])``: boxes are ``sigmoid(box_mlp(hidden) + previous)``."""
        return self.class_head(hidden), jax.nn.sigmoid(self.box_head(hidden) + previous)

    def __call__(self, images: jax.Array) -> DetectorOutput:
        b, h, w, _ = images.shape
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"image size {h}x{w} must be divisible by {STRIDE}")
        c = self.config
        d = c.hidden_dim
        features = self.backbone(images * 2.0 - 1.0)

        neck = self.neck(features["stage4"])  # [B, h32, w32, D]
        h32, w32 = h // STRIDE, w // STRIDE
        pos32 = sine_position_embedding(h32, w32, d, dtype=neck.dtype).reshape(h32 * w32, d)
        tokens = neck.reshape(b, h32 * w32, d)
        for layer in self.encoder:
            tokens = layer(tokens, pos32)
        if self.encoder_norm is not None:
            tokens = self.encoder_norm(tokens)
        encoded = tokens.reshape(b, h32, w32, d)

        def upsample(x):  # nearest 2x
            return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)

        fused = self.fuse(self.lateral(features["stage3"]) + upsample(encoded))  # [B, h16, w16, D]
        h16, w16 = 2 * h32, 2 * w32
        pos16 = sine_position_embedding(h16, w16, d, dtype=fused.dtype).reshape(h16 * w16, d)
        level = self.level_embed[...]
        levels = [tokens, fused.reshape(b, h16 * w16, d)]
        positions = [pos32 + level[0], pos16 + level[1]]
        if c.stride8_memory:
            fused8 = self.fuse8(self.lateral8(features["stage2"]) + upsample(fused))  # [B, h8, w8, D]
            pos8 = sine_position_embedding(2 * h16, 2 * w16, d, dtype=fused.dtype).reshape(4 * h16 * w16, d)
            levels.append(fused8.reshape(b, 4 * h16 * w16, d))
            positions.append(pos8 + level[2])
            features["fused8"] = fused8
        memory = self.memory_norm(jnp.concatenate(levels, axis=1))
        memory_pos = jnp.concatenate(positions, axis=0)  # [N, D]

        ref = self.reference[...]  # [Q, 2] logits of the reference centres
        previous = jnp.concatenate([ref, jnp.zeros_like(ref)], axis=-1)[None]  # [1, Q, 4] box logits
        tgt = jnp.zeros((b, c.num_queries, d), memory.dtype)
        outputs = []
        for layer in self.decoder:
            if c.anchored_queries:
                query_pos = self.query_pos_mlp(sine_point_embedding(jax.nn.sigmoid(previous[..., :2]), d))
            else:
                query_pos = self.query_pos[...]
            tgt = layer(tgt, memory, query_pos, memory_pos)
            hidden = self.decoder_norm(tgt)
            logits, boxes = self._heads(hidden, previous)
            outputs.append((logits, boxes))
            if c.anchored_queries:
                previous = jax.lax.stop_gradient(_inverse_sigmoid(boxes))

        features.update(neck=neck, encoder=encoded, fused=fused, decoder=hidden)
        logits, boxes = outputs[-1]
        return DetectorOutput(logits=logits, boxes=boxes, aux=tuple(outputs[:-1]), features=features)


def count_parameters(module: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param``) in ``module``.

    Works on abstract modules too, so big variants can be counted without allocating memory:
    ``count_parameters(nnx.eval_shape(lambda: Detector(cfg, rngs=nnx.Rngs(0))))``.
    """
    leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
    return int(sum(math.prod(x.shape) for x in leaves))
