"""COCO-format folders: boxes to xyxy, contiguous labels, resizing, clear errors for missing or bad data."""

import json

import numpy as np
import pytest
from PIL import Image

from turbjax.data.coco import coco_detection
from turbjax.data.sources import DataSourceError

CATEGORIES = [{"id": 7, "name": "car"}, {"id": 1, "name": "person"}, {"id": 3, "name": "bus"}]  # unsorted, gaps


def _write_coco(root, split="val2017"):
    """Three images (RGB PNG, grey JPEG, one without annotations) and an instances JSON."""
    rng = np.random.default_rng(0)
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    sizes = {"a.png": (30, 40), "b.jpg": (20, 24), "c.png": (16, 16)}  # (height, width)
    Image.fromarray((rng.uniform(size=(30, 40, 3)) * 255).astype(np.uint8)).save(root / split / "a.png")
    Image.fromarray((rng.uniform(size=(20, 24)) * 255).astype(np.uint8)).save(root / split / "b.jpg")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / split / "c.png")
    images = [
        {"id": 10 + i, "file_name": name, "height": h, "width": w} for i, (name, (h, w)) in enumerate(sizes.items())
    ]
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2.0, 3.0, 10.0, 5.0], "area": 40.0, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [20.0, 10.0, 8.0, 12.0], "area": 90.0, "iscrowd": 1},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0.0, 0.0, 24.0, 20.0], "area": 480.0, "iscrowd": 0},
        {"id": 4, "image_id": 10, "category_id": 3, "bbox": [1.0, 1.0, 2.0, 2.0], "area": 4.0, "iscrowd": 0},
    ]
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_loader_converts_boxes_and_maps_labels(tmp_path):
    dataset = coco_detection(_write_coco(tmp_path / "coco"))
    assert len(dataset) == 3 and dataset.image_ids == [10, 11, 12]
    assert dataset.category_ids == (1, 3, 7) and dataset.category_names == ("person", "bus", "car")
    assert dataset.label_of == {1: 0, 3: 1, 7: 2} and dataset.num_classes == 3
    first = dataset[0]
    assert first["image"].shape == (30, 40, 3) and first["image"].dtype == np.float32
    assert 0.0 <= first["image"].min() and first["image"].max() <= 1.0
    np.testing.assert_allclose(first["boxes"], [[2, 3, 12, 8], [20, 10, 28, 22], [1, 1, 3, 3]])
    assert first["labels"].dtype == np.int32 and first["labels"].tolist() == [2, 0, 1]
    assert first["iscrowd"].tolist() == [False, True, False] and first["area"].tolist() == [40, 90, 4]
    assert first["image_id"] == 10 and first["orig_size"].tolist() == [30, 40]
    grey = dataset[1]
    assert grey["image"].shape == (20, 24, 3) and np.allclose(grey["image"][..., 0], grey["image"][..., 2])
    empty = dataset[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert [example["image_id"] for example in dataset] == [10, 11, 12]  # iteration stops at the end


def test_resize_scales_boxes_and_max_boxes_truncates(tmp_path):
    root = _write_coco(tmp_path / "coco")
    dataset = coco_detection(root, image_size=(15, 80), max_boxes=2)
    first = dataset[0]
    assert first["image"].shape == (15, 80, 3) and first["orig_size"].tolist() == [30, 40]
    np.testing.assert_allclose(first["boxes"], [[4, 1.5, 24, 4], [40, 5, 56, 11]])  # x * 2, y / 2
    np.testing.assert_allclose(first["area"], [40, 90])
    assert first["labels"].tolist() == [2, 0]
    assert coco_detection(root, image_size=12)[1]["image"].shape == (12, 12, 3)


def test_missing_or_malformed_data_says_how_to_prepare(tmp_path):
    with pytest.raises(DataSourceError, match=r"does not exist.*annotations/instances_val2017\.json.*cocodataset\.org"):
        coco_detection(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataSourceError, match=r"annotations .* not found.*unzip"):
        coco_detection(tmp_path / "bare")
    root = _write_coco(tmp_path / "coco")
    with pytest.raises(DataSourceError, match=r"instances_train2017\.json"):
        coco_detection(root, split="train2017")
    annotation_file = root / "annotations" / "instances_val2017.json"
    good = annotation_file.read_text()
    annotation_file.write_text(good[:-20])
    with pytest.raises(DataSourceError, match=r"malformed \(JSONDecodeError.*'images'"):
        coco_detection(root)
    annotation_file.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataSourceError, match=r"malformed \(KeyError.*categories"):
        coco_detection(root)
    annotation_file.write_text(good)
    (root / "val2017" / "b.jpg").unlink()
    with pytest.raises(DataSourceError, match=r"1 image\(s\) .* missing .*b\.jpg"):
        coco_detection(root)
