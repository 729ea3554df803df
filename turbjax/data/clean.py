"""Random access to clean clips, deterministic in (seed, index): the input of every simulator run.

A clip is [T, size, size, 3] float32 in [0, 1]. Stills (embedded scenes, an image folder, a TFDS
image dataset) become clips with synthetic camera motion (pan and slow zoom) and a moving object
(an elliptical patch of another image crossing the view); a folder of frame sequences gives
windows of T consecutive real frames. ``CleanClips(...)[i]`` never depends on which other clips
were read before, so dataset builds, resumed builds and sharded builds agree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from turbjax.data.samples import EMBEDDED_SCENES, _load
from turbjax.data.sources import (
    DataSourceError,
    _image_files,
    _resize_square,
    folder_sequences,
    read_image,
    tfds_source,
)

CLIP_KINDS = ("embedded", "images", "sequences", "tfds")


def _resample(image: np.ndarray, dy: float, dx: float, zoom: float = 1.0) -> np.ndarray:
    """Resample [H, W, C] at (y, x) -> centre + zoom * (y, x - centre) + (dy, dx), edges clamped."""
    h, w, _ = image.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    coords = [cy + zoom * (yy - cy) + dy, cx + zoom * (xx - cx) + dx]
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)


def motion_margin(num_frames: int, max_camera_px: float) -> int:
    """Border (px) a still needs around the view so that the camera pan stays inside it."""
    return int(np.ceil(max_camera_px * num_frames)) + 4


def moving_clip(
    rng: np.random.Generator,
    background: np.ndarray,
    sprite: np.ndarray,
    num_frames: int,
    size: int,
    max_camera_px: float = 1.5,
    max_object_px: float = 3.0,
) -> np.ndarray:
    """A clip [num_frames, size, size, 3] from two square stills of side size + 2 * margin.

    Camera: a pan at a random velocity (up to ``max_camera_px`` px/frame, each axis) with a slow
    random zoom (+-0.5% per frame). Object: an ellipse cut from ``sprite`` crossing the view at up
    to ``max_object_px`` px/frame, composited with a soft edge.
    """
    margin = (background.shape[0] - size) // 2
    camera = rng.uniform(-max_camera_px, max_camera_px, 2)
    zoom_rate = rng.uniform(-0.005, 0.005)
    radius = rng.uniform(0.08, 0.2, 2) * size
    start = rng.uniform(0.2, 0.8, 2) * size
    velocity = rng.uniform(-max_object_px, max_object_px, 2)
    origin = rng.uniform(0.2, 0.6, 2) * size
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    clip = np.empty((num_frames, size, size, 3), np.float32)
    for t in range(num_frames):
        view = _resample(background, camera[0] * t, camera[1] * t, zoom=1.0 + zoom_rate * t)
        view = view[margin : margin + size, margin : margin + size]
        centre = start + velocity * t
        dist = ((yy - centre[0]) / radius[0]) ** 2 + ((xx - centre[1]) / radius[1]) ** 2
        alpha = np.clip((1.0 - dist) * 4.0, 0.0, 1.0)[..., None]
        patch = _resample(sprite, origin[0] - centre[0] + margin, origin[1] - centre[1] + margin)[:size, :size]
        clip[t] = np.clip((1 - alpha) * view + alpha * patch, 0.0, 1.0)
    return clip


class _Stills:
    """Lazily loaded, cached square stills of one side length."""

    def __init__(self, count: int, load: Callable[[int], np.ndarray], cache_size: int = 64):
        if count < 1:
            raise DataSourceError("the clean-image source holds no images.")
        self.count = count
        self.get = functools.lru_cache(maxsize=cache_size)(load)


class CleanClips:
    """Clean clips by index: ``clips[i]`` -> [num_frames, size, size, 3] float32 in [0, 1].

    Args:
      kind: 'embedded' (scikit-image scenes ``scenes``), 'images' (a folder of stills at
        ``path``), 'tfds' (a locally prepared TFDS image dataset ``tfds_name`` / ``tfds_split`` in
        ``data_dir``) or 'sequences' (a folder with one sub-folder of frames per clip).
      num_frames, size: clip length and side (pixels).
      seed: with the index, fixes everything random about a clip.
      max_camera_px, max_object_px: synthetic motion of stills, px/frame.
      max_images: read at most this many stills (TFDS and folders), None for all.
    """

    def __init__(
        self,
        kind: str = "embedded",
        num_frames: int = 8,
        size: int = 256,
        seed: int = 0,
        *,
        scenes: Sequence[str] = EMBEDDED_SCENES,
        path: str | Path | None = None,
        tfds_name: str | None = None,
        tfds_split: str = "train",
        data_dir: str | Path | None = None,
        image_key: str = "image",
        max_camera_px: float = 1.5,
        max_object_px: float = 3.0,
        max_images: int | None = None,
    ):
        if kind not in CLIP_KINDS:
            raise ValueError(f"clean source kind must be one of {CLIP_KINDS}; got {kind!r}.")
        if num_frames < 1 or size < 8:
            raise ValueError(f"num_frames must be >= 1 and size >= 8 px; got {num_frames}, {size}.")
        if kind in ("images", "sequences") and path is None:
            raise DataSourceError(f"clean source {kind!r} needs a folder: set its path.")
        if kind == "tfds" and not tfds_name:
            raise DataSourceError("clean source 'tfds' needs a dataset name, e.g. tfds_name='coco/2017'.")
        self.kind, self.num_frames, self.size, self.seed = kind, num_frames, size, seed
        self.max_camera_px, self.max_object_px = max_camera_px, max_object_px
        side = size + 2 * motion_margin(num_frames, max_camera_px)
        if kind == "embedded":
            names = tuple(scenes)
            for name in names:
                if name not in EMBEDDED_SCENES:
                    raise ValueError(f"embedded scene must be one of {EMBEDDED_SCENES}; got {name!r}.")
            self._stills = _Stills(len(names), lambda i: _resize_square(_load(names[i]), side))
        elif kind == "images":
            folder = Path(path)
            if not folder.is_dir():
                raise DataSourceError(f"image folder {str(folder)!r} does not exist: expected a directory of images.")
            files = _image_files(folder)[:max_images]
            if not files:
                raise DataSourceError(f"image folder {str(folder)!r} holds no images (.png, .jpg, ...).")
            self._stills = _Stills(len(files), lambda i: read_image(files[i], side))
        elif kind == "tfds":
            source = tfds_source(tfds_name, tfds_split, data_dir)
            count = len(source) if max_images is None else min(len(source), max_images)

            def load(i: int) -> np.ndarray:
                example = source[i]
                if image_key not in example:
                    keys = sorted(example)
                    raise DataSourceError(f"TFDS examples of {tfds_name!r} have no {image_key!r}; keys: {keys}.")
                return _resize_square(example[image_key], side)

            self._stills = _Stills(count, load)
        else:
            self._sequences = folder_sequences(path, size, min_frames=num_frames)

    def __getitem__(self, index: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, int(index)))
        if self.kind == "sequences":
            sequence = self._sequences[rng.integers(len(self._sequences))]
            start = rng.integers(len(sequence) - self.num_frames + 1)
            return np.ascontiguousarray(sequence[start : start + self.num_frames])
        count = self._stills.count
        background = self._stills.get(int(rng.integers(count)))
        sprite = self._stills.get(int(rng.integers(count)))
        return moving_clip(rng, background, sprite, self.num_frames, self.size, self.max_camera_px, self.max_object_px)

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """Clips [len(indices), T, size, size, 3]."""
        return np.stack([self[i] for i in indices])
