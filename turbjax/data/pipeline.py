"""Input pipelines: batches of frame windows from the dataset (grain) or synthesized online.

A training sample is a window of 2N+1 consecutive frames of one clip around a centre frame
(JDATT restores the centre of 5; TMTS recurs over the window). Every batch is a dict:

  clean, degraded, tilt_only, blur_only   [B, 2N+1, h, w, 3] float32 in [0, 1]
  tilt_field                              [B, 2N+1, h, w, 2] px
  blur_width                              [B, 2N+1, h, w]   px
  example_id, centre                      [B] int32 (the clip and its centre frame)
  <physical parameters>                   [B] float32, SI (turbjax.data.generate.PARAM_KEYS)

``config.fields`` selects a subset. Records mode ('records') reads the built dataset through
grain: the samples of an epoch are all (clip, centre) pairs, split between processes by
``jax.process_index()`` (shard i takes samples i, i + P, ...), shuffled per epoch, cropped at
random (one crop for the whole window) and batched; reading is threaded. Online mode
('online') synthesizes each batch on the local devices (jitted, sharded) from the clean source
and yields device arrays: no disk, unlimited data, the same dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from turbjax.data.builder import clean_clips, dataset_dir, open_split, video_spec
from turbjax.data.generate import IMAGE_KEYS, PARAM_KEYS, batch_synthesizer, example_keys, local_mesh

FIELD_KEYS = ("tilt_field", "blur_width")
ALL_KEYS = (*IMAGE_KEYS, *FIELD_KEYS, "example_id", "centre", *PARAM_KEYS)
MODES = ("records", "online")


def window_count(num_frames: int, half_window: int) -> int:
    """Centres per clip with a full window of 2 N + 1 frames."""
    return num_frames - 2 * half_window


def sample_indices(num_clips: int, num_frames: int, half_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip, centre) of every sample, sample i = clip i // W, centre N + i % W."""
    per_clip = window_count(num_frames, half_window)
    i = np.arange(num_clips * per_clip)
    return i // per_clip, half_window + i % per_clip


def crop_window(example: dict, centre: int, half_window: int, crop: int | None, top: int, left: int) -> dict:
    """Frames centre-N..centre+N of every per-frame array, cropped to [top:top+crop, left:left+crop]."""
    frames = slice(centre - half_window, centre + half_window + 1)
    out = {}
    for name, value in example.items():
        value = np.asarray(value)
        if value.ndim >= 3:  # per-frame arrays [T, S, S, ...]
            value = value[frames]
            if crop is not None:
                value = value[:, top : top + crop, left : left + crop]
        out[name] = value
    return out


def check_pipeline_config(config: ml_collections.ConfigDict, num_frames: int, image_size: int) -> None:
    """ValueError naming the bad field, before any data is read or synthesized."""
    if config.mode not in MODES:
        raise ValueError(f"pipeline mode must be one of {MODES}; got {config.mode!r}.")
    if config.half_window < 0 or window_count(num_frames, config.half_window) < 1:
        raise ValueError(
            f"half_window must be in [0, {(num_frames - 1) // 2}] for clips of {num_frames} frames; "
            f"got {config.half_window}."
        )
    if config.crop_size is not None and not 1 <= config.crop_size <= image_size:
        raise ValueError(f"crop_size must be in [1, {image_size}] (the frame size) or None; got {config.crop_size}.")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {config.batch_size}.")
    unknown = set(config.fields or ()) - set(ALL_KEYS)
    if unknown:
        raise ValueError(f"fields must be among {ALL_KEYS}; unknown {sorted(unknown)}.")


def _process_batch_size(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes ({process_count}).")
    return batch_size // process_count


def _float_images(batch: dict) -> dict:
    for name in IMAGE_KEYS:
        if name in batch and batch[name].dtype == np.uint8:
            batch[name] = batch[name].astype(np.float32) / np.float32(255.0)
    return batch


def records_dataset(
    config: ml_collections.ConfigDict,
    source,
    num_frames: int,
    image_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The grain MapDataset of samples of this process (before batching): dicts per sample."""
    clip_of, centre_of = sample_indices(len(source), num_frames, config.half_window)
    keys = tuple(config.fields or ALL_KEYS)
    crop = config.crop_size if config.crop_size and config.crop_size < image_size else None

    def read(sample: int, rng: np.random.Generator) -> dict:
        example = source[int(clip_of[sample])]
        centre = int(centre_of[sample])
        top, left = rng.integers(0, image_size - crop + 1, 2) if crop else (0, 0)
        out = crop_window(example, centre, config.half_window, crop, int(top), int(left))
        out["centre"] = np.int32(centre)
        out["example_id"] = np.int32(out["example_id"])
        out.update({name: np.float32(out[name]) for name in PARAM_KEYS})
        return {name: out[name] for name in keys}

    # Equal shards (the last len % P samples dropped): processes step in lockstep, and one with an
    # extra batch would wait forever in a collective for the others.
    usable = len(clip_of) - len(clip_of) % process_count
    ds = grain.MapDataset.range(usable)[process_index::process_count]
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds.repeat(config.num_epochs)
    return ds.random_map(lambda sample, rng: read(sample, rng), seed=config.seed + 1)


def _records_pipeline(config, dataset, process_index, process_count) -> Iterator[dict]:
    data_dir = Path(config.data_dir or dataset.data_dir or "")
    source = open_split(dataset_dir(dataset, data_dir), config.split)
    spec = video_spec(dataset)
    ds = records_dataset(
        config, source, spec.num_frames, spec.image_size, process_index=process_index, process_count=process_count
    )
    ds = ds.batch(_process_batch_size(config.batch_size, process_count), drop_remainder=True).map(_float_images)
    options = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch)
    return iter(ds.to_iter_dataset(options))


def _online_pipeline(config, dataset, process_index, process_count) -> Iterator[dict]:
    window = 2 * config.half_window + 1
    spec = video_spec(dataset)
    spec = dataclasses.replace(spec, num_frames=window)
    online = dataset.copy_and_resolve_references()
    online.video.num_frames = window
    clips = clean_clips(online, config.split)
    mesh = local_mesh()
    local_batch = _process_batch_size(config.batch_size, process_count)
    if local_batch % mesh.size:
        raise ValueError(f"online batch_size per process ({local_batch}) must be divisible by {mesh.size} devices.")
    synthesize = batch_synthesizer(spec, mesh, quantize=False)
    keys = tuple(config.fields or ALL_KEYS)
    crop = config.crop_size if config.crop_size and config.crop_size < spec.image_size else None

    @jax.jit
    def crop_batch(out, corners):
        def one(example, corner):
            def cut(v):
                if crop is None or v.ndim < 3:
                    return v
                return jax.lax.dynamic_slice(
                    v, (0, corner[0], corner[1]) + (0,) * (v.ndim - 3), (v.shape[0], crop, crop, *v.shape[3:])
                )

            return {name: cut(v) for name, v in example.items()}

        return jax.vmap(one)(out, corners)

    rng = np.random.default_rng((config.seed, process_index))
    step = 0
    while config.num_steps is None or step < config.num_steps:
        # Online example ids never repeat: global sample g = step * batch + process * local + j.
        start = step * config.batch_size + process_index * local_batch
        indices = np.arange(start, start + local_batch)
        out = synthesize(example_keys(config.seed, config.split, indices), clips.batch(indices))
        corners = jnp.asarray(rng.integers(0, spec.image_size - (crop or spec.image_size) + 1, (local_batch, 2)))
        out = crop_batch(out, corners)
        out["example_id"] = jnp.asarray(indices, jnp.int32)
        out["centre"] = jnp.full((local_batch,), config.half_window, jnp.int32)
        yield {name: out[name] for name in keys}
        step += 1


def make_pipeline(
    config: ml_collections.ConfigDict,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> Iterator[dict]:
    """An iterator of batches (dicts of arrays, see the module docstring) for ``config``.

    ``config`` is a pipeline config (``experiments/configs/et_turb.py:pipeline_config``): mode,
    split, batch_size (global, over all processes), crop_size, half_window, shuffle, seed,
    num_epochs (records) or num_steps (online; None = forever), read_threads, prefetch, fields and
    ``dataset`` (the dataset config). Process index and count default to JAX's; ``shard_options``
    (e.g. ``turbjax.train.distributed.process_shard_options()``) gives them as grain's shard index
    and count instead (records mode always gives the shards equal sizes).
    """
    if shard_options is not None:
        if process_index is not None or process_count is not None:
            raise ValueError("give either shard_options or process_index/process_count, not both.")
        process_index, process_count = shard_options.shard_index, shard_options.shard_count
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    dataset = config.dataset
    spec = video_spec(dataset)
    frames = spec.num_frames if config.mode == "records" else 2 * config.half_window + 1
    check_pipeline_config(config, frames, spec.image_size)
    if config.mode == "records":
        return _records_pipeline(config, dataset, process_index, process_count)
    return _online_pipeline(config, dataset, process_index, process_count)
