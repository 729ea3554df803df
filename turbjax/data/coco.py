"""COCO-format detection folders (e.g. COCO 2017) read as lazy, random-access examples.

Expected layout (that of the official COCO 2017 archives)::

    ROOT/annotations/instances_val2017.json
    ROOT/val2017/000000000139.jpg ...

``coco_detection(ROOT)`` returns a ``CocoDetection`` sequence: ``len`` and ``[i]`` read one
image on demand (COCO train2017 does not fit in memory as float32), so it can also serve as a
grain random-access data source. Every failure to find or parse the data raises
``DataSourceError`` saying what was expected and how to prepare it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from turbjax.data.sources import DataSourceError

COCO_URL = "https://cocodataset.org/#download"


def _how_to_prepare(root: Path, split: str) -> str:
    return (
        f"Expected {root}/annotations/instances_{split}.json and the images in {root}/{split}/. "
        f"To prepare it, download {split}.zip and annotations_trainval2017.zip (COCO 2017) from {COCO_URL} "
        f"and unzip both into {root}, so that {root}/annotations/instances_{split}.json exists."
    )


class CocoDetection(Sequence):
    """Examples of one COCO split; ``dataset[i]`` is a dict (pixels of the returned image):

    - ``image``: float32 [H, W, 3] in [0, 1] (grey images are repeated to RGB);
    - ``boxes``: float32 [M, 4] xyxy pixels, converted from COCO's xywh and scaled with the image;
    - ``labels``: int32 [M] contiguous labels 0..K-1 (``category_ids[label]`` is the COCO id);
    - ``iscrowd``: bool [M]. Crowd regions are kept because COCO evaluation needs them (they
      are ignored and absorb detections); drop them for training with ``boxes[~iscrowd]``;
    - ``area``: float32 [M] COCO's annotated (mask) area in pixels^2, scaled with the image; it
      decides the small/medium/large buckets of ``turbjax.metrics.evaluate``;
    - ``image_id``: int, the COCO image id; ``orig_size``: int32 [2] (height, width) on disk.

    An example holds at most ``max_boxes`` annotations (the first ones in file order; COCO 2017
    images have fewer than 100). Images without annotations are kept (COCO evaluates them too),
    with ``boxes`` of shape [0, 4]. Boxes are taken as annotated: not clipped, none dropped.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val2017",
        *,
        image_size: int | tuple[int, int] | None = None,
        max_boxes: int = 100,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.max_boxes = int(max_boxes)
        if image_size is None or isinstance(image_size, tuple | list):
            self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        else:
            self.image_size = (int(image_size), int(image_size))
        if not self.root.is_dir():
            raise DataSourceError(f"COCO folder {str(self.root)!r} does not exist. {_how_to_prepare(self.root, split)}")
        annotation_file = self.root / "annotations" / f"instances_{split}.json"
        if not annotation_file.is_file():
            raise DataSourceError(
                f"COCO annotations {str(annotation_file)!r} not found. {_how_to_prepare(self.root, split)}"
            )
        self.image_dir = self.root / split
        if not self.image_dir.is_dir():
            raise DataSourceError(
                f"COCO image folder {str(self.image_dir)!r} not found. {_how_to_prepare(self.root, split)}"
            )
        try:
            with open(annotation_file) as f:
                data = json.load(f)
            self._index(data)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise DataSourceError(
                f"COCO annotations {str(annotation_file)!r} are malformed ({type(error).__name__}: {error}); expected "
                "a JSON object with 'images' [{id, file_name}], 'categories' [{id, name}] and 'annotations' "
                f"[{{image_id, category_id, bbox: [x, y, w, h]}}] as in COCO 2017. {_how_to_prepare(self.root, split)}"
            ) from error
        present = {p.name for p in self.image_dir.iterdir()}
        missing = [info["file_name"] for info in self._images if info["file_name"] not in present]
        if missing:
            raise DataSourceError(
                f"{len(missing)} image(s) listed in {annotation_file.name} are missing from {str(self.image_dir)!r}, "
                f"e.g. {missing[:3]}. {_how_to_prepare(self.root, split)}"
            )

    def _index(self, data: dict[str, Any]) -> None:
        """Category mapping, images in file order, and per-image annotation arrays."""
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        self.category_ids: tuple[int, ...] = tuple(int(c["id"]) for c in categories)
        self.category_names: tuple[str, ...] = tuple(str(c.get("name", c["id"])) for c in categories)
        self.label_of: dict[int, int] = {cid: label for label, cid in enumerate(self.category_ids)}
        self._images = [{"id": int(im["id"]), "file_name": str(im["file_name"])} for im in data["images"]]
        per_image: dict[int, list] = {im["id"]: [] for im in self._images}
        for ann in data["annotations"]:
            image_id, category = int(ann["image_id"]), int(ann["category_id"])
            if image_id not in per_image:
                raise ValueError(f"annotation {ann.get('id')} refers to unknown image_id {image_id}")
            if category not in self.label_of:
                raise ValueError(f"annotation {ann.get('id')} refers to unknown category_id {category}")
            x, y, w, h = (float(v) for v in ann["bbox"])
            area = float(ann.get("area", w * h))
            per_image[image_id].append((x, y, x + w, y + h, self.label_of[category], bool(ann.get("iscrowd", 0)), area))
        self._targets = {}
        for image_id, rows in per_image.items():
            table = np.asarray(rows[: self.max_boxes], np.float64).reshape(-1, 7)
            self._targets[image_id] = {
                "boxes": table[:, :4].astype(np.float32),
                "labels": table[:, 4].astype(np.int32),
                "iscrowd": table[:, 5].astype(bool),
                "area": table[:, 6].astype(np.float32),
            }

    @property
    def num_classes(self) -> int:
        """K, the number of categories (labels are 0..K-1)."""
        return len(self.category_ids)

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids in example order (the order of the annotation file)."""
        return [im["id"] for im in self._images]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        from PIL import Image

        info = self._images[index]  # raises IndexError past the end, which ends iteration
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
                width, height = pil.size
                if self.image_size is not None:
                    pil = pil.resize((self.image_size[1], self.image_size[0]), Image.Resampling.BILINEAR)
                image = np.asarray(pil, np.float32) / 255.0
        except (OSError, ValueError) as error:
            raise DataSourceError(
                f"could not read COCO image {str(path)!r} ({type(error).__name__}: {error}). "
                f"{_how_to_prepare(self.root, self.split)}"
            ) from error
        target = self._targets[info["id"]]
        boxes, area = target["boxes"], target["area"]
        if self.image_size is not None:
            sy, sx = self.image_size[0] / height, self.image_size[1] / width
            boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
            area = area * np.float32(sx * sy)
        return {
            "image": image,
            "boxes": boxes,
            "labels": target["labels"].copy(),
            "iscrowd": target["iscrowd"].copy(),
            "area": area.copy(),
            "image_id": info["id"],
            "orig_size": np.array([height, width], np.int32),
        }


def coco_detection(
    root: str | Path,
    split: str = "val2017",
    *,
    image_size: int | tuple[int, int] | None = None,
    max_boxes: int = 100,
) -> CocoDetection:
    """COCO-format detection examples of ``ROOT/{split}`` with ``ROOT/annotations/instances_{split}.json``.

    Args:
      root: folder holding ``annotations/`` and the image folder ``{split}/``.
      split: COCO split name, e.g. "val2017" or "train2017".
      image_size: None keeps each image's size; an int S or (H, W) resizes every image to that size
        (bilinear, aspect ratio not kept) and scales boxes and areas by the same per-axis factors,
        so fixed-size batches can be stacked. For official numbers, map predictions back to
        ``orig_size`` before ``turbjax.metrics.evaluate`` / ``write_coco_results``.
      max_boxes: annotations kept per image (DETR-style models predict a fixed number of queries).

    Returns:
      A lazy ``CocoDetection`` sequence of example dicts (see its docstring), with the label map
      ``category_ids`` (label -> COCO id), ``label_of`` (COCO id -> label), ``category_names``.

    Raises:
      DataSourceError: missing folder, annotation file or image, or malformed annotations; the
        message gives the expected layout and where to download COCO.
    """
    return CocoDetection(root, split, image_size=image_size, max_boxes=max_boxes)
