"""An endless stream of detection scenes composed on device: for detectors that must not memorise.

Why: ``detection_dataset`` renders every scene in NumPy (~15-20 ms a scene), so a CPU run sees a few
thousand scenes and a DETR memorises them (train GIoU falls, held-out mAP does not rise). Here the
expensive part, rasterising objects, is done once: ``sprite_bank`` renders a bank of posed objects
(``render_object`` of ``detection_scenes``: same classes, sizes, poses, colours and textures as the
fixed dataset) into fixed-size patches. ``compose_batch`` then builds every batch inside one jitted
program: a random zoom / pan / mirror / contrast of a train background, one sprite per occupied cell
of a ``grid`` x ``grid`` partition of the frame at a random integer offset (mirrored at random, with a
random brightness gain), and optionally an ET-Turb Table-1 degradation of the frame
(``synthesize_frame``: the marginal of one frame of the frozen-flow videos of the fixed dataset).
The number of distinct scenes is effectively unbounded, and a batch costs milliseconds.

Boxes are exact. A sprite's support (pixels with alpha > 0) is kept inside its cell, so sprites never
overlap and no object is occluded; a sprite's box is its own tight alpha > ``BOX_ALPHA_THRESHOLD`` box
(the rule of ``detection_scenes``) shifted by the integer offset, and mirroring maps it exactly.
What the stream lacks compared with the fixed scenes: occlusions and objects straddling cell borders.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from turbjax import physics as P
from turbjax.data.detection_scenes import (
    _CLASSES,
    ASPECT_RANGE,
    DEFAULT_SETTINGS,
    DETECTION_CLASSES,
    SCALE_RANGE,
    SceneObject,
    _scene_still,
    _split_scenes,
    mask_box,
    render_object,
)


@dataclasses.dataclass(frozen=True)
class SpriteBank:
    """Rendered objects in ``patch`` x ``patch`` patches (NumPy; see ``sprite_bank``).

    Attributes:
      alpha: [N, P, P] float32 coverage in [0, 1].
      premultiplied: [N, P, P, 3] float32 colour x coverage.
      boxes: [N, 4] float32 xyxy px (pixel edges) of alpha > 0.5 inside the patch.
      support: [N, 4] int32 xyxy px of alpha > 0 (the pixels a sprite touches).
      labels: [N] int32 indices into ``DETECTION_CLASSES``.
    """

    alpha: np.ndarray
    premultiplied: np.ndarray
    boxes: np.ndarray
    support: np.ndarray
    labels: np.ndarray

    @property
    def patch(self) -> int:
        return int(self.alpha.shape[1])


def sprite_bank(num_sprites: int, *, patch: int, image_size: int, seed: int = 0, progress: bool = False) -> SpriteBank:
    """``num_sprites`` objects drawn as in ``detection_scenes`` for ``image_size`` frames, each rendered
    alone, centred (with a random sub-pixel offset) in a ``patch`` x ``patch`` patch.

    The half size is drawn log-uniformly in ``SCALE_RANGE`` x ``image_size`` and redrawn (up to 20 times,
    then shrunk) until the posed object fits the patch with a 1 px margin, so sizes are those of the
    fixed dataset truncated at the patch. Deterministic in ``seed``; classes are balanced (i mod K).
    """
    if num_sprites < 1:
        raise ValueError(f"num_sprites must be >= 1; got {num_sprites}.")
    if not 8 <= patch <= image_size:
        raise ValueError(f"patch must be in [8, image_size={image_size}] px; got {patch}.")
    rng = np.random.default_rng((seed, 7919))
    indices = range(num_sprites)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="sprite bank")
    alpha = np.zeros((num_sprites, patch, patch), np.float32)
    premult = np.zeros((num_sprites, patch, patch, 3), np.float32)
    boxes = np.zeros((num_sprites, 4), np.float32)
    support = np.zeros((num_sprites, 4), np.int32)
    labels = np.arange(num_sprites, dtype=np.int32) % len(DETECTION_CLASSES)
    limit = patch / 2 - 1
    for i in indices:
        upright = _CLASSES[DETECTION_CLASSES[labels[i]]].upright
        obj = None
        for _attempt in range(20):
            half = image_size * float(np.exp(rng.uniform(*np.log(SCALE_RANGE))))
            obj = SceneObject(
                label=int(labels[i]),
                centre=tuple(patch / 2 + rng.uniform(-0.5, 0.5, 2)),
                velocity=(0.0, 0.0),
                half_size=half,
                aspect=float(np.exp(rng.uniform(*np.log(ASPECT_RANGE)))),
                angle=float(rng.uniform(-np.pi / 9, np.pi / 9) if upright else rng.uniform(-np.pi, np.pi)),
                mirror=bool(rng.uniform() < 0.5),
                seed=int(rng.integers(2**31)),
            )
            if max(obj.extent()) <= limit:
                break
        reach = max(obj.extent())
        if reach > limit:
            obj = dataclasses.replace(obj, half_size=obj.half_size * limit / reach)
        alpha[i], premult[i] = render_object(obj, patch)
        boxes[i] = mask_box(alpha[i])
        support[i] = mask_box(alpha[i], threshold=0.0).astype(np.int32)
    return SpriteBank(alpha, premult, boxes, support, labels)


def background_bank(size: int, scenes: Sequence[str] | None = None, split: str = "train") -> np.ndarray:
    """The embedded scenes of ``split`` (or ``scenes``) as [S, 2 * size, 2 * size, 3] float32 stills:
    ``compose_batch`` views them at zoom 1-2 (a crop of ``size`` to ``2 * size`` px resized to ``size``)."""
    names = _split_scenes(split, scenes)
    return np.stack([_scene_still(name, 2 * size) for name in names]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """Static description of a stream (hashable: fixes the compiled program).

    Attributes:
      image_size: frame side, px (divisible by ``grid``).
      grid: cells per side; at most grid^2 objects per frame, one per cell.
      occupancy: probability that a cell holds an object (at least one object per frame).
      degrade: apply an ET-Turb Table-1 draw to each frame.
      wavelength, pixel_pitch: m, fixed across draws (as in the ET-Turb dataset).
      settings: synthesis settings of the degradation.
    """

    image_size: int = 64
    grid: int = 2
    occupancy: float = 0.6
    degrade: bool = True
    wavelength: float = 550e-9
    pixel_pitch: float = 5e-6
    settings: P.SynthesisSettings = DEFAULT_SETTINGS

    def __post_init__(self):
        if self.grid < 1 or self.image_size % self.grid:
            raise ValueError(f"grid must be >= 1 and divide image_size={self.image_size}; got {self.grid}.")
        if not 0.0 <= self.occupancy <= 1.0:
            raise ValueError(f"occupancy must be in [0, 1]; got {self.occupancy}.")

    @property
    def cell(self) -> int:
        return self.image_size // self.grid


def _background(key, stills, size: int):
    """A random view of a random still: zoom 1-2, random pan, mirror, contrast and brightness."""
    k_scene, k_zoom, k_pan, k_flip, k_con, k_bri = jax.random.split(key, 6)
    still = stills[jax.random.randint(k_scene, (), 0, stills.shape[0])]
    side = still.shape[0]
    scale = 1.0 / jax.random.uniform(k_zoom, (), minval=1.0, maxval=side / size)  # output px per still px
    room = side * scale - size  # how far the scaled still extends beyond the view, px
    translation = -jax.random.uniform(k_pan, (2,)) * room
    view = jax.image.scale_and_translate(
        still, (size, size, 3), (0, 1), jnp.stack([scale, scale]), translation, method="linear"
    )
    view = jnp.where(jax.random.bernoulli(k_flip), view[:, ::-1], view)
    mean = view.mean()
    contrast = jax.random.uniform(k_con, (), minval=0.6, maxval=1.0)
    brightness = jax.random.uniform(k_bri, (), minval=0.85, maxval=1.15)
    return jnp.clip((view - mean) * contrast + mean * brightness, 0.0, 1.0)


def _compose_one(key, bank: dict, stills, spec: StreamSpec) -> dict:
    size, cell, grid = spec.image_size, spec.cell, spec.grid
    patch = bank["alpha"].shape[1]
    cells = grid * grid
    k_bg, k_occ, k_first, k_sprite, k_y, k_x, k_flip, k_gain = jax.random.split(key, 8)
    image = _background(k_bg, stills, size)
    occupied = jax.random.bernoulli(k_occ, spec.occupancy, (cells,))
    occupied = occupied.at[jax.random.randint(k_first, (), 0, cells)].set(True)
    index = jax.random.randint(k_sprite, (cells,), 0, bank["alpha"].shape[0])
    flip = jax.random.bernoulli(k_flip, 0.5, (cells,))
    gain = jax.random.uniform(k_gain, (cells,), minval=0.8, maxval=1.2)
    alpha, premult = bank["alpha"][index], bank["premultiplied"][index]
    boxes, support = bank["boxes"][index], bank["support"][index]
    # Mirroring a patch maps x to patch - x (pixel edges).
    alpha = jnp.where(flip[:, None, None], alpha[:, :, ::-1], alpha)
    premult = jnp.where(flip[:, None, None, None], premult[:, :, ::-1], premult)
    boxes = jnp.where(
        flip[:, None], jnp.stack([patch - boxes[:, 2], boxes[:, 1], patch - boxes[:, 0], boxes[:, 3]], -1), boxes
    )
    support = jnp.where(
        flip[:, None],
        jnp.stack([patch - support[:, 2], support[:, 1], patch - support[:, 0], support[:, 3]], -1),
        support,
    )
    premult = jnp.minimum(premult * gain[:, None, None, None], alpha[..., None])
    # Integer offset of the patch such that the support stays inside the cell.
    row, col = jnp.arange(cells) // grid * cell, jnp.arange(cells) % grid * cell
    low_y, high_y = row - support[:, 1], row + cell - support[:, 3]
    low_x, high_x = col - support[:, 0], col + cell - support[:, 2]
    dy = low_y + jnp.floor(jax.random.uniform(k_y, (cells,)) * (high_y - low_y + 1)).astype(jnp.int32)
    dx = low_x + jnp.floor(jax.random.uniform(k_x, (cells,)) * (high_x - low_x + 1)).astype(jnp.int32)

    def paste(patch_array, oy, ox):
        canvas = jnp.zeros((size + 2 * patch, size + 2 * patch, *patch_array.shape[2:]), patch_array.dtype)
        canvas = jax.lax.dynamic_update_slice(
            canvas, patch_array, (oy + patch, ox + patch) + (0,) * (patch_array.ndim - 2)
        )
        return canvas[patch : patch + size, patch : patch + size]

    weight = occupied.astype(jnp.float32)
    layer_alpha = (jax.vmap(paste)(alpha, dy, dx) * weight[:, None, None]).sum(0)
    layer_colour = (jax.vmap(paste)(premult, dy, dx) * weight[:, None, None, None]).sum(0)
    image = jnp.clip(image * (1.0 - layer_alpha[..., None]) + layer_colour, 0.0, 1.0)
    shift = jnp.stack([dx, dy, dx, dy], -1).astype(jnp.float32)
    # Occupied cells first (stable), padding after: the layout of ``detection_dataset``'s targets.
    order = jnp.argsort(~occupied, stable=True)
    return {
        "image": image,
        "coverage": layer_alpha,
        "boxes": jnp.where(occupied[:, None], boxes + shift, 0.0)[order],
        "labels": jnp.where(occupied, bank["labels"][index], -1)[order],
        "num_boxes": occupied.sum().astype(jnp.int32),
    }


def _degrade_one(key, image, spec: StreamSpec):
    k_params, k_frame = jax.random.split(key)
    optics, atmosphere, exposure = P.sample_et_turb_params(k_params, spec.wavelength, spec.pixel_pitch)
    frame = P.synthesize_frame(k_frame, image, optics, atmosphere, exposure, spec.settings)
    return jnp.clip(frame.degraded, 0.0, 1.0)


def compose_batch(key: jax.Array, bank: dict, stills: jnp.ndarray, spec: StreamSpec, batch_size: int) -> dict:
    """One batch of ``batch_size`` composed scenes (pure; jit it, or use ``stream_batches``).

    ``bank``: the arrays of a ``SpriteBank`` as a dict (``dataclasses.asdict``), on device.
    Returns ``image`` [B, S, S, 3] float32 in [0, 1] (degraded if ``spec.degrade``; ``clean`` too in that
    case), ``coverage`` [B, S, S] (the objects' alpha; sprites never overlap), ``boxes`` [B, grid^2, 4]
    xyxy px, ``labels`` [B, grid^2] int32 padded with -1 and ``num_boxes`` [B] int32, the layout of
    ``detection_dataset``.
    """
    keys = jax.random.split(key, batch_size)
    scenes = jax.vmap(lambda k: _compose_one(jax.random.fold_in(k, 0), bank, stills, spec))(keys)
    if spec.degrade:
        scenes["clean"] = scenes["image"]
        scenes["image"] = jax.vmap(lambda k, im: _degrade_one(jax.random.fold_in(k, 1), im, spec))(
            keys, scenes["image"]
        )
    return scenes


@functools.lru_cache(maxsize=8)
def _compiled(spec: StreamSpec, batch_size: int, sharding):
    fn = functools.partial(compose_batch, spec=spec, batch_size=batch_size)
    return jax.jit(fn, out_shardings=sharding) if sharding is not None else jax.jit(fn)


def stream_batches(
    bank: SpriteBank,
    stills: np.ndarray,
    spec: StreamSpec,
    batch_size: int,
    seed: int = 0,
    sharding: jax.sharding.Sharding | None = None,
):
    """``batches(start)`` -> iterator over batches ``start, start + 1, ...``; batch n comes from
    fold_in(key(seed), n), so a resumed run sees the same batches. ``sharding`` places the outputs
    (e.g. ``NamedSharding(mesh, PartitionSpec('data'))``: the batch is generated sharded)."""
    arrays = jax.tree.map(jnp.asarray, dataclasses.asdict(bank))
    stills = jnp.asarray(stills, jnp.float32)
    program = _compiled(spec, batch_size, sharding)
    base = jax.random.key(seed)

    def batches(start: int):
        step = start
        while True:
            yield program(jax.random.fold_in(base, step), arrays, stills)
            step += 1

    return batches


__all__ = ["SpriteBank", "StreamSpec", "background_bank", "compose_batch", "sprite_bank", "stream_batches"]
