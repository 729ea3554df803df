"""JDATT turbulence restorers (Flax NNX): a MAMAT-like teacher and lightweight students.

A restorer reads a window of ``T = 2N + 1`` turbulent frames and predicts the clean centre frame, in the two
stages of MAMAT / JDATT: **registration** (compensate the pixel shifts of turbulent tilt) then **enhancement**
(restore sharpness and contrast). Architecture (``Restorer``)::

    clip [B,T,H,W,3] in [0,1]  (T = config.num_frames, odd; H, W divisible by 4)
    registration  (full resolution, width C0)
      -> 3D conv stem 3x3x3 over (T,H,W) + (conv3d_layers - 1) residual 3x3x3 convs      per-frame features [B,T,H,W,C0]
      -> [deformable] align every neighbour to the centre: offsets for G channel groups, predicted at H/2 from
         (neighbour, centre) features, upsampled; neighbour features sampled bilinearly at the offsets (gather-based
         turbjax.physics.warp), then a 1x1 conv (= a deformable conv with 1x1 kernel and G offset groups)
      -> fuse the T frames: concat over time, 1x1 conv, residual 3x3 block                              [B,H,W,C0]
      -> [tilt_head] registration field g of the centre frame (below); features warped by g   "registration" [B,H,W,C0]
    enhancement  (UNet-like)
      -> 3x3 s2 conv -> mamba_blocks[0] Res-Mamba blocks at H/2                                "enhance1" [B,H/2,W/2,C1]
      -> 3x3 s2 conv -> mamba_blocks[1] Res-Mamba blocks at H/4 -> transformer_layers
         TransformerEncoderLayer over the H/4 tokens (sine positions), LayerNorm               "enhance2" [B,H/4,W/4,C2]
      -> 2x nearest up, 3x3 conv, + enhance1 skip, mamba_blocks[2] Res-Mamba blocks at H/2
      -> 2x nearest up, 3x3 conv, + registration skip, residual 3x3 block                      "decoder"  [B,H,W,C0]
      -> 3x3 conv to RGB + base, where base = centre frame (warped by g with a tilt head)       image      [B,H,W,3]

Feature taps (``RestorerOutput.features``, NHWC, for CWD / MGD distillation), ``(C0, C1, C2) = config.widths``:

================  =========================  ====================================================================
name              shape                      what
================  =========================  ====================================================================
``registration``  ``[B, H,   W,   C0]``      fused, registered features of the window (end of stage 1)
``enhance1``      ``[B, H/2, W/2, C1]``      after the encoder Res-Mamba blocks at half resolution
``enhance2``      ``[B, H/4, W/4, C2]``      after the bottleneck Res-Mamba blocks and the transformer refinement
``decoder``       ``[B, H,   W,   C0]``      last full-resolution decoder map, before the RGB head
================  =========================  ====================================================================

Tilt field (``RestorerOutput.tilt_field``, only with ``config.tilt_head``, else ``None``): the predicted
**registration (inverse-tilt) field** of the centre frame, ``[B, H, W, 2]`` pixels ``(dx, dy)`` in the
:func:`turbjax.physics.warp.warp` convention, such that ``warp(centre_tilt_only, tilt_field) ~ clean``. It is what
the TMTS tilt loss ``Charbonnier(warp(tilt_only, field), clean)`` supervises; for small smooth tilts it is about
``-Degradation.tilt_field`` of the centre frame. It is built from the alignment offsets: if ``o_t`` samples frame
``t`` onto the centre grid and frame ``t`` is the clean image displaced by ``tau_t``, then ``o_t ~ tau_c - tau_t``,
so ``mean_t o_t ~ tau_c - mean_t tau_t ~ tau_c`` (turbulent tilt averages out over the window, the premise of
temporal-average registration) and ``g = -(1/T) sum_t o_t`` (``o_c = 0``, offsets averaged over groups), plus a
zero-initialised learned 3x3-conv correction from the fused features. A freshly built model has ``g = 0``.

Variants (``restorer_config``), trainable parameters at ``T = 5``. The seed (JDATT, section 4.3 and Table 3) gives
only totals (MAMAT 2.8 M; students L 2.5 M, M 0.7 M, S 0.6 M) and the qualitative changes (students: no deformable
convolution, fewer 3D conv layers, halved feature maps for S and M, fewer Res-Mamba blocks, a single transformer
block; L keeps MAMAT's widths and is deeper than S / M in both stages). Depths and widths are our choice, matched
to those totals (all within 3 %):

================  =============  ===  ======  =========  ==========  =======  ===============================
name              widths C0/1/2  3D   deform  Res-Mamba  parameters  seed     use
================  =============  ===  ======  =========  ==========  =======  ===============================
``teacher``       48 / 96 / 192  4    yes     2 / 4 / 3  2.755 M     2.8 M    MAMAT-like teacher
``large``         48 / 96 / 192  3    no      2 / 4 / 2  2.539 M     2.5 M    JDATT-L student
``medium``        24 / 48 / 96   2    no      2 / 4 / 2  0.685 M     0.7 M    JDATT-M student
``small``         24 / 48 / 96   2    no      2 / 3 / 2  0.604 M     0.6 M    JDATT-S student
``tiny``          8 / 16 / 32    1    no      1 / 1 / 0  0.038 M     --       CPU tests, training in minutes
``tiny_teacher``  16 / 32 / 64   2    yes     1 / 1 / 0  0.153 M     --       teacher for ``tiny`` on CPU
================  =============  ===  ======  =========  ==========  =======  ===============================

("3D": 3D conv layers including the stem; "Res-Mamba": blocks at H/2 encoder / H/4 bottleneck / H/2 decoder.)
Every variant has one transformer layer (feed-forward width 4 x C2; 2 x C2 for the tiny ones). The seed's
"a single Transformer module" for the students could suggest more in MAMAT, but the 0.3 M gap between MAMAT and
L leaves no room for a second 0.44 M layer at width 192 next to the deformable alignment, the extra 3D conv and
the extra Res-Mamba block, so the teacher has one too. All Res-Mamba blocks scan bidirectionally (raster and
reversed raster) with ``d_state = 16`` (8 for the tiny ones), ``expand = 2``, ``d_conv = 4``. The counts come from
``count_parameters`` (``turbjax.models.detector``) and are checked by the tests. Feature widths of ``large`` equal
the teacher's; ``small`` / ``medium`` taps are half as wide, so CWD / MGD need their 1x1 align convs there.

Cost: on CPU the selective scans dominate compile time (about a second per block) and the full-resolution 3D
convolutions and the H/2 scans dominate run time.

Output range: ``image`` is the base frame plus a learned residual and is **not clipped**, so the Charbonnier loss
keeps gradients at the [0, 1] bounds; clip it for display and metrics. The RGB head starts near zero, so a fresh
model returns (nearly) its base frame.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from turbjax.models.layers import ConvNormAct, ResidualBlock, TransformerEncoderLayer, sine_position_embedding
from turbjax.models.mamba import SCAN_METHODS, SCANS, ResMambaBlock
from turbjax.physics.warp import warp

VARIANTS: tuple[str, ...] = ("tiny", "tiny_teacher", "small", "medium", "large", "teacher")
FEATURE_NAMES: tuple[str, ...] = ("registration", "enhance1", "enhance2", "decoder")
STRIDE: int = 4  # total downsampling of the enhancement UNet; H and W must be multiples of it


@dataclasses.dataclass(frozen=True)
class RestorerConfig:
    """Hyper-parameters of :class:`Restorer`; the defaults are the MAMAT-like ``teacher`` (2.75 M parameters).

    Attributes:
      num_frames: T, frames in the input window (odd; the centre frame is restored). The fusion layer's width
        depends on it, so a model runs on windows of exactly this length.
      widths: ``(C0, C1, C2)`` channels at full, 1/2 and 1/4 resolution.
      conv3d_layers: 3D (T, H, W) conv layers in the registration stage, the stem included (>= 1).
      deformable: align neighbour features to the centre frame with predicted offsets (the teacher's deformable
        alignment); False for the students, whose 3D convolutions must absorb the shifts.
      deform_groups: G, channel groups with their own offsets in the deformable alignment (divides C0).
      tilt_head: predict the centre frame's registration field (``RestorerOutput.tilt_field``) and register the
        fused features and the base frame with it; needs ``deformable`` (the field is built from its offsets).
      mamba_blocks: Res-Mamba blocks ``(encoder at H/2, bottleneck at H/4, decoder at H/2)``.
      transformer_layers: transformer encoder layers over the H/4 tokens (the refinement block), >= 1.
      num_heads: attention heads (divides C2).
      ffn_ratio: transformer feed-forward width = ``ffn_ratio * C2``.
      d_state, expand, d_conv: Mamba state size N, inner expansion E / C, causal conv width.
      scans: image scan orders of every Res-Mamba block (see ``turbjax.models.mamba.SCANS``).
      scan_method: ``"associative"`` (parallel prefix scan, for accelerators) or ``"sequential"`` (``lax.scan``,
        several times faster on CPU); same parameters and results, so it can be switched for a trained model.
    """

    num_frames: int = 5
    widths: tuple[int, int, int] = (48, 96, 192)
    conv3d_layers: int = 4
    deformable: bool = True
    deform_groups: int = 8
    tilt_head: bool = True
    mamba_blocks: tuple[int, int, int] = (2, 4, 3)
    transformer_layers: int = 1
    num_heads: int = 6
    ffn_ratio: int = 4
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    scans: tuple[str, ...] = ("raster", "raster_reverse")
    scan_method: str = "associative"

    def __post_init__(self):
        if self.num_frames < 1 or self.num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd (a window of 2N+1 frames), got {self.num_frames}")
        if len(self.widths) != 3 or len(self.mamba_blocks) != 3:
            raise ValueError(f"widths and mamba_blocks need 3 entries, got {self.widths} and {self.mamba_blocks}")
        if self.conv3d_layers < 1 or self.transformer_layers < 1:
            raise ValueError("a restorer needs at least one 3D conv layer and one transformer layer")
        if self.deformable and self.widths[0] % self.deform_groups:
            raise ValueError(f"deform_groups {self.deform_groups} must divide C0 = {self.widths[0]}")
        if self.tilt_head and not self.deformable:
            raise ValueError("tilt_head needs deformable=True: the field is built from the alignment offsets")
        if self.widths[2] % self.num_heads or self.widths[2] % 4:
            raise ValueError(f"C2 = {self.widths[2]} must be divisible by num_heads and by 4")
        if any(s not in SCANS for s in self.scans) or not self.scans:
            raise ValueError(f"scans must be a non-empty subset of {SCANS}, got {self.scans}")
        if self.scan_method not in SCAN_METHODS:
            raise ValueError(f"scan_method must be one of {SCAN_METHODS}, got {self.scan_method!r}")


_VARIANT_CONFIGS: dict[str, dict] = {
    "tiny": dict(
        widths=(8, 16, 32), conv3d_layers=1, deformable=False, tilt_head=False, mamba_blocks=(1, 1, 0), num_heads=2,
        ffn_ratio=2, d_state=8,
    ),
    "tiny_teacher": dict(
        widths=(16, 32, 64), conv3d_layers=2, deformable=True, deform_groups=4, tilt_head=True,
        mamba_blocks=(1, 1, 0), num_heads=2, ffn_ratio=2, d_state=8,
    ),
    "small": dict(
        widths=(24, 48, 96), conv3d_layers=2, deformable=False, tilt_head=False, mamba_blocks=(2, 3, 2), num_heads=3,
    ),
    "medium": dict(
        widths=(24, 48, 96), conv3d_layers=2, deformable=False, tilt_head=False, mamba_blocks=(2, 4, 2), num_heads=3,
    ),
    "large": dict(
        widths=(48, 96, 192), conv3d_layers=3, deformable=False, tilt_head=False, mamba_blocks=(2, 4, 2), num_heads=6,
    ),
    "teacher": dict(
        widths=(48, 96, 192), conv3d_layers=4, deformable=True, deform_groups=8, tilt_head=True,
        mamba_blocks=(2, 4, 3), num_heads=6,
    ),
}  # fmt: skip


def restorer_config(name: str, **overrides) -> RestorerConfig:
    """The named variant ``name`` in :data:`VARIANTS` with any field overridden (e.g. ``num_frames=7``)."""
    if name not in _VARIANT_CONFIGS:
        raise ValueError(f"unknown restorer variant {name!r}; choose one of {VARIANTS}")
    return RestorerConfig(**{**_VARIANT_CONFIGS[name], **overrides})


@struct.dataclass
class RestorerOutput:
    """Restorer predictions (a pytree: passes through ``jax.jit`` and sharding unchanged).

    Attributes:
      image: ``[B, H, W, 3]`` restored centre frame (not clipped; see the module docstring).
      features: named NHWC maps for feature distillation (see :data:`FEATURE_NAMES`).
      tilt_field: ``[B, H, W, 2]`` predicted registration (inverse-tilt) field of the centre frame in pixels,
        ``warp(centre, tilt_field) ~ clean``; ``None`` for variants without a tilt head (the students).
    """

    image: jax.Array
    features: dict[str, jax.Array]
    tilt_field: jax.Array | None = None


def _upsample2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of ``[B, H, W, C]``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


class DeformableAlignment(nnx.Module):
    """Align neighbour features to the centre frame by sampling them at predicted per-group offsets.

    ``(neighbour [N, H, W, C], centre [N, H, W, C]) -> (aligned [N, H, W, C], offsets [N, H, W, G, 2])`` with
    ``offsets[..., g, :] = (dx, dy)`` pixels: ``aligned`` channel group ``g`` reads the neighbour at ``p + offsets``.
    Offsets come from a small conv net on the concatenated pair at half resolution (twice the receptive field for
    shifts of several pixels at the same cost), bilinearly upsampled; the last conv is zero-initialised so alignment
    starts as the identity. Sampling is the gather-based bilinear ``warp`` (border-clamped), then a 1x1 conv mixes
    the groups: together a deformable convolution with a 1x1 kernel and G offset groups. Per-group offsets let
    different feature channels (e.g. edges at different scales) follow different motions.
    """

    def __init__(self, channels: int, groups: int, *, rngs: nnx.Rngs):
        self.groups = groups
        self.down = ConvNormAct(2 * channels, channels, 3, stride=2, norm=False, rngs=rngs)
        self.body = ConvNormAct(channels, channels, 3, norm=False, rngs=rngs)
        self.offset = nnx.Conv(
            channels,
            2 * groups,
            (3, 3),
            kernel_init=nnx.initializers.zeros,
            bias_init=nnx.initializers.zeros,
            rngs=rngs,
        )
        self.project = nnx.Conv(channels, channels, (1, 1), rngs=rngs)

    def __call__(self, neighbour: jax.Array, centre: jax.Array) -> tuple[jax.Array, jax.Array]:
        n, h, w, c = neighbour.shape
        g = self.groups
        x = self.body(self.down(jnp.concatenate([neighbour, centre], axis=-1)))
        offsets = self.offset(x)  # [N, H/2, W/2, 2G], full-resolution pixels
        offsets = jax.image.resize(offsets, (n, h, w, 2 * g), "bilinear").reshape(n, h, w, g, 2)
        grouped = jnp.moveaxis(neighbour.reshape(n, h, w, g, c // g), 3, 1)  # [N, G, H, W, C/G]
        sampled = warp(grouped, jnp.moveaxis(offsets, 3, 1))  # [N, G, H, W, C/G]
        sampled = jnp.moveaxis(sampled, 1, 3).reshape(n, h, w, c)
        return self.project(sampled), offsets


class Registration(nnx.Module):
    """Stage 1: ``clip [B, T, H, W, 3]`` (in [-1, 1]) -> ``(registered [B, H, W, C0], field [B, H, W, 2] | None)``."""

    def __init__(self, config: RestorerConfig, *, rngs: nnx.Rngs):
        c0 = config.widths[0]
        t = config.num_frames
        self.stem = nnx.Conv(3, c0, (3, 3, 3), rngs=rngs)  # over (T, H, W) of [B, T, H, W, C]
        self.convs3d = nnx.List([nnx.Conv(c0, c0, (3, 3, 3), rngs=rngs) for _ in range(config.conv3d_layers - 1)])
        self.align = DeformableAlignment(c0, config.deform_groups, rngs=rngs) if config.deformable else None
        self.fuse = ConvNormAct(t * c0, c0, 1, norm=False, rngs=rngs)
        self.fuse_block = ResidualBlock(c0, norm=False, rngs=rngs)
        self.tilt_refine = (
            nnx.Conv(c0, 2, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs) if config.tilt_head else None
        )

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        b, t, h, w, _ = x.shape
        mid = t // 2
        f = self.stem(x)
        for conv in self.convs3d:
            f = f + conv(nnx.silu(f))
        f = nnx.silu(f)  # [B, T, H, W, C0]
        c = f.shape[-1]
        offsets = None
        if self.align is not None and t > 1:
            centre = f[:, mid]
            neighbours = jnp.concatenate([f[:, :mid], f[:, mid + 1 :]], axis=1)  # [B, T-1, H, W, C0]
            pairs = (neighbours.reshape(b * (t - 1), h, w, c), jnp.repeat(centre, t - 1, axis=0))
            aligned, offsets = self.align(*pairs)
            aligned = aligned.reshape(b, t - 1, h, w, c)
            offsets = offsets.reshape(b, t - 1, h, w, -1, 2)
            f = jnp.concatenate([aligned[:, :mid], centre[:, None], aligned[:, mid:]], axis=1)
        stacked = jnp.moveaxis(f, 1, 3).reshape(b, h, w, t * c)  # frames side by side in channels
        fused = self.fuse_block(self.fuse(stacked))
        field = None
        if self.tilt_refine is not None:
            mean_offset = jnp.zeros((b, h, w, 2), fused.dtype) if offsets is None else offsets.mean(axis=4).sum(1) / t
            field = -mean_offset + self.tilt_refine(fused)
            fused = warp(fused, field)
        return fused, field


class Enhancement(nnx.Module):
    """Stage 2, a small UNet: ``registered [B, H, W, C0]`` -> ``(residual [B, H, W, 3], features)``."""

    def __init__(self, config: RestorerConfig, *, rngs: nnx.Rngs):
        c0, c1, c2 = config.widths
        n_enc, n_mid, n_dec = config.mamba_blocks

        def mamba(dim: int, n: int) -> nnx.List:
            return nnx.List(
                [
                    ResMambaBlock(
                        dim, d_state=config.d_state, expand=config.expand, d_conv=config.d_conv,
                        scans=config.scans, scan_method=config.scan_method, rngs=rngs,
                    )
                    for _ in range(n)
                ]
            )  # fmt: skip

        self.down1 = ConvNormAct(c0, c1, 3, stride=2, norm=False, rngs=rngs)
        self.enc1 = mamba(c1, n_enc)
        self.down2 = ConvNormAct(c1, c2, 3, stride=2, norm=False, rngs=rngs)
        self.mid = mamba(c2, n_mid)
        self.transformer = nnx.List(
            [
                TransformerEncoderLayer(c2, config.num_heads, config.ffn_ratio * c2, rngs=rngs)
                for _ in range(config.transformer_layers)
            ]
        )
        self.mid_norm = nnx.LayerNorm(c2, rngs=rngs)
        self.up2 = ConvNormAct(c2, c1, 3, norm=False, rngs=rngs)
        self.dec1 = mamba(c1, n_dec)
        self.up1 = ConvNormAct(c1, c0, 3, norm=False, rngs=rngs)
        self.dec0 = ResidualBlock(c0, norm=False, rngs=rngs)
        self.head = nnx.Conv(c0, 3, (3, 3), kernel_init=nnx.initializers.normal(1e-3), rngs=rngs)

    def __call__(self, registered: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        e1 = self.down1(registered)
        for block in self.enc1:
            e1 = block(e1)
        x = self.down2(e1)
        for block in self.mid:
            x = block(x)
        b, h4, w4, c2 = x.shape
        pos = sine_position_embedding(h4, w4, c2, dtype=x.dtype).reshape(h4 * w4, c2)
        tokens = x.reshape(b, h4 * w4, c2)
        for layer in self.transformer:
            tokens = layer(tokens, pos)
        e2 = self.mid_norm(tokens).reshape(b, h4, w4, c2)
        x = self.up2(_upsample2(e2)) + e1
        for block in self.dec1:
            x = block(x)
        decoder = self.dec0(self.up1(_upsample2(x)) + registered)
        features = {"registration": registered, "enhance1": e1, "enhance2": e2, "decoder": decoder}
        return self.head(decoder), features


class Restorer(nnx.Module):
    """JDATT restorer (teacher or student, by config); see the module docstring for the architecture.

    ``Restorer(config, rngs=nnx.Rngs(0))(clip [B, T, H, W, 3] in [0, 1]) -> RestorerOutput`` restoring the centre
    frame ``clip[:, T // 2]``; ``T == config.num_frames`` (odd), ``H`` and ``W`` divisible by 4 (:data:`STRIDE`).
    """

    def __init__(self, config: RestorerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.registration = Registration(config, rngs=rngs)
        self.enhancement = Enhancement(config, rngs=rngs)

    def __call__(self, clip: jax.Array) -> RestorerOutput:
        if clip.ndim != 5 or clip.shape[-1] != 3:
            raise ValueError(f"expected a clip [B, T, H, W, 3], got shape {clip.shape}")
        _, t, h, w, _ = clip.shape
        if t % 2 == 0:
            raise ValueError(f"the window must have an odd number of frames (2N+1), got T = {t}")
        if t != self.config.num_frames:
            raise ValueError(f"this restorer was built for T = {self.config.num_frames} frames, got {t}")
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"frame size {h}x{w} must be divisible by {STRIDE}")
        registered, field = self.registration(clip * 2.0 - 1.0)
        residual, features = self.enhancement(registered)
        centre = clip[:, t // 2]
        base = centre if field is None else warp(centre, field)
        return RestorerOutput(image=base + residual, features=features, tilt_field=field)
