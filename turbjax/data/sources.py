"""Clean-image sources: embedded clips with synthetic motion, image folders, frame-sequence
folders and locally prepared TFDS image datasets. All return float32 arrays in [0, 1], channels
last, and fail with a message saying what was expected and how to prepare it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from turbjax.data.samples import EMBEDDED_SCENES, _load, center_square

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataSourceError(ValueError):
    """A clean-image source is missing or malformed (the message says how to fix it)."""


def _resize_square(image: np.ndarray, size: int) -> np.ndarray:
    from skimage import transform

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    scale = 255.0 if image.dtype == np.uint8 else (65535.0 if image.dtype == np.uint16 else 1.0)
    square = center_square(image.astype(np.float32) / scale)
    out = transform.resize(square, (size, size), anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_images(path: str | Path, size: int = 256) -> np.ndarray:
    """All images of a folder, centre-cropped and resized: [N, size, size, 3]."""
    from skimage import io

    folder = Path(path)
    if not folder.is_dir():
        raise DataSourceError(
            f"image folder {str(folder)!r} does not exist: expected a directory of {'/'.join(IMAGE_SUFFIXES)} files."
        )
    files = _image_files(folder)
    if not files:
        raise DataSourceError(
            f"image folder {str(folder)!r} holds no images: expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        )
    frames = []
    for file in files:
        try:
            frames.append(_resize_square(io.imread(file), size))
        except Exception as error:  # unreadable or truncated file: say which
            raise DataSourceError(f"could not read image {str(file)!r}: {error}") from error
    return np.stack(frames)


def folder_sequences(path: str | Path, size: int = 256, min_frames: int = 1) -> list[np.ndarray]:
    """Frame sequences: each sub-folder of ``path`` is one clip, frames sorted by file name.

    Returns a list of [T_i, size, size, 3] arrays (clips may differ in length).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataSourceError(
            f"sequence folder {str(folder)!r} does not exist: expected one sub-folder of frames per clip."
        )
    clips = [folder_images(sub, size) for sub in sorted(p for p in folder.iterdir() if p.is_dir())]
    if not clips:
        raise DataSourceError(
            f"sequence folder {str(folder)!r} has no sub-folders: put each clip's frames in its own sub-folder."
        )
    short = [len(c) for c in clips if len(c) < min_frames]
    if short:
        raise DataSourceError(f"clips must have at least {min_frames} frames; found clips of {short} frames.")
    return clips


def tfds_images(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    size: int = 256,
    max_examples: int | None = None,
    image_key: str = "image",
) -> np.ndarray:
    """Images of a TFDS dataset the user has prepared locally (e.g. ``coco/2017``), no download.

    Read through ``tfds.data_source`` (random access over array_record files, no TensorFlow
    graph). Prepare the dataset first, e.g. ``tfds build coco/2017 --data_dir DIR
    --file_format=array_record`` (the raw archives must already be in DIR/downloads/manual or
    downloadable from where it is built).
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:
        raise DataSourceError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir={str(data_dir)!r}: build it first "
            f"with `tfds build {name} --data_dir <dir> --file_format=array_record`. ({type(error).__name__}: {error})"
        ) from error
    count = len(source) if max_examples is None else min(len(source), max_examples)
    frames = []
    for index in range(count):
        example = source[index]
        if image_key not in example:
            raise DataSourceError(f"TFDS examples of {name!r} have no {image_key!r} feature; keys: {sorted(example)}.")
        frames.append(_resize_square(example[image_key], size))
    return np.stack(frames)


def _shift(image: np.ndarray, dy: float, dx: float, zoom: float = 1.0) -> np.ndarray:
    """Resample [H, W, C] at (y, x) -> centre + zoom * (y, x - centre) + (dy, dx), edges clamped."""
    h, w, _ = image.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    coords = [cy + zoom * (yy - cy) + dy, cx + zoom * (xx - cx) + dx]
    return np.stack([ndimage.map_coordinates(image[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)


def embedded_clips(
    num_clips: int,
    num_frames: int,
    size: int = 256,
    seed: int = 0,
    max_camera_px: float = 1.5,
    max_object_px: float = 3.0,
    scenes: tuple[str, ...] = EMBEDDED_SCENES,
) -> np.ndarray:
    """Clips [num_clips, num_frames, size, size, 3] from the embedded scenes, with motion.

    Camera motion: the view pans at a random velocity (up to ``max_camera_px`` px/frame) with a
    slow random zoom (+-0.5% per frame). Object motion: an elliptical patch cut from another
    scene crosses the view at up to ``max_object_px`` px/frame, composited with a soft edge.
    Deterministic in ``seed``.
    """
    if num_clips < 1 or num_frames < 1:
        raise ValueError(f"num_clips and num_frames must be >= 1; got {num_clips}, {num_frames}.")
    rng = np.random.default_rng(seed)
    margin = int(np.ceil(max_camera_px * num_frames)) + 4
    base = {}
    clips = np.empty((num_clips, num_frames, size, size, 3), np.float32)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    for i in range(num_clips):
        name = scenes[rng.integers(len(scenes))]
        other = scenes[rng.integers(len(scenes))]
        for scene in (name, other):
            if scene not in base:
                base[scene] = _resize_square(_load(scene), size + 2 * margin)
        background = base[name]
        camera = rng.uniform(-max_camera_px, max_camera_px, 2)
        zoom_rate = rng.uniform(-0.005, 0.005)
        obj_radius = rng.uniform(0.08, 0.2, 2) * size
        obj_start = rng.uniform(0.2, 0.8, 2) * size
        obj_velocity = rng.uniform(-max_object_px, max_object_px, 2)
        sprite_origin = rng.uniform(0.2, 0.6, 2) * size
        for t in range(num_frames):
            view = _shift(background, camera[0] * t, camera[1] * t, zoom=1.0 + zoom_rate * t)
            view = view[margin : margin + size, margin : margin + size]
            centre = obj_start + obj_velocity * t
            dist = ((yy - centre[0]) / obj_radius[0]) ** 2 + ((xx - centre[1]) / obj_radius[1]) ** 2
            alpha = np.clip((1.0 - dist) * 4.0, 0.0, 1.0)[..., None]
            sprite = _shift(base[other], sprite_origin[0] - centre[0] + margin, sprite_origin[1] - centre[1] + margin)
            clips[i, t] = np.clip((1 - alpha) * view + alpha * sprite[:size, :size], 0.0, 1.0)
    return clips
