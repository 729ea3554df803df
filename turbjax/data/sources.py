"""Clean-image sources: embedded clips with synthetic motion, image folders, frame-sequence
folders and locally prepared TFDS image datasets. All return float32 arrays in [0, 1], channels
last, and fail with a message saying what was expected and how to prepare it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turbjax.data.samples import EMBEDDED_SCENES, center_square

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
    return np.stack([read_image(file, size) for file in files])


def read_image(file: str | Path, size: int) -> np.ndarray:
    """One image file, centre-cropped and resized to [size, size, 3]; DataSourceError if unreadable."""
    from skimage import io

    try:
        return _resize_square(io.imread(file), size)
    except Exception as error:  # unreadable or truncated file: say which
        raise DataSourceError(f"could not read image {str(file)!r}: {error}") from error


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


def tfds_source(name: str, split: str = "train", data_dir: str | Path | None = None):
    """Random access to a locally prepared TFDS dataset (``tfds.data_source``, no download)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:
        raise DataSourceError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir={str(data_dir)!r}: build it first "
            f"with `tfds build {name} --data_dir <dir> --file_format=array_record`. ({type(error).__name__}: {error})"
        ) from error


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
    source = tfds_source(name, split, data_dir)
    count = len(source) if max_examples is None else min(len(source), max_examples)
    frames = []
    for index in range(count):
        example = source[index]
        if image_key not in example:
            raise DataSourceError(f"TFDS examples of {name!r} have no {image_key!r} feature; keys: {sorted(example)}.")
        frames.append(_resize_square(example[image_key], size))
    return np.stack(frames)


def embedded_clips(
    num_clips: int,
    num_frames: int,
    size: int = 256,
    seed: int = 0,
    max_camera_px: float = 1.5,
    max_object_px: float = 3.0,
    scenes: tuple[str, ...] = EMBEDDED_SCENES,
) -> np.ndarray:
    """Clips [num_clips, num_frames, size, size, 3] from the embedded scenes, with synthetic
    camera and object motion (see ``turbjax.data.clean.moving_clip``). Deterministic in ``seed``."""
    from turbjax.data.clean import CleanClips

    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1; got {num_clips}.")
    clips = CleanClips(
        "embedded", num_frames, size, seed, scenes=scenes, max_camera_px=max_camera_px, max_object_px=max_object_px
    )
    return clips.batch(range(num_clips))
