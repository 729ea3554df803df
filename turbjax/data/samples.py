"""Embedded clean images: scikit-image's sample data, on disk once scikit-image is installed."""

from __future__ import annotations

import numpy as np

# Natural, outdoor-like scenes from ``skimage.data`` (grayscale ones are replicated to RGB).
EMBEDDED_SCENES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "hubble_deep_field",
)


def _load(name: str) -> np.ndarray:
    from skimage import data

    if name not in EMBEDDED_SCENES:
        raise ValueError(f"embedded scene must be one of {EMBEDDED_SCENES}; got {name!r}.")
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3]


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square crop of an [H, W, C] image."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def embedded_images(size: int = 256, names: tuple[str, ...] | None = None) -> np.ndarray:
    """Clean frames [N, size, size, 3] float32 in [0, 1] from the embedded scenes.

    Each scene is centre-cropped to a square and resized with anti-aliasing.
    """
    from skimage import transform

    if size < 8:
        raise ValueError(f"size must be >= 8 pixels; got {size}.")
    frames = []
    for name in names or EMBEDDED_SCENES:
        square = center_square(_load(name)).astype(np.float32) / 255.0
        frame = transform.resize(square, (size, size), anti_aliasing=True, preserve_range=True)
        frames.append(np.clip(frame, 0.0, 1.0).astype(np.float32))
    return np.stack(frames)
