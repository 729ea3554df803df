"""Embedded detection scenes: determinism, class coverage, exact boxes, clips, turbulence, DETR targets."""

import jax
import numpy as np
import pytest

from turbjax.data import detection_scenes as ds
from turbjax.losses.boxes import cxcywh_to_xyxy

SIZE = 64


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Independent reference: pixel-edge xyxy box of mask > 0.5."""
    ys = np.flatnonzero((mask > 0.5).any(axis=1))
    xs = np.flatnonzero((mask > 0.5).any(axis=0))
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float32)


def test_scene_is_deterministic_in_seed_and_index():
    a, b = ds.detection_scene(3, size=SIZE), ds.detection_scene(3, size=SIZE)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not np.array_equal(a["image"], ds.detection_scene(4, size=SIZE)["image"])
    assert not np.array_equal(a["image"], ds.detection_scene(3, size=SIZE, seed=1)["image"])


def test_scenes_cover_the_classes_with_valid_boxes_and_images():
    seen = set()
    for index in range(50):
        scene = ds.detection_scene(index, size=SIZE, max_objects=6)
        image, boxes, labels = scene["image"], scene["boxes"], scene["labels"]
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert boxes.shape == (len(labels), 4) and boxes.dtype == np.float32 and labels.dtype == np.int32
        assert 1 <= len(labels) <= 6
        assert np.all((labels >= 0) & (labels < len(ds.DETECTION_CLASSES)))
        assert np.all(boxes >= 0) and np.all(boxes <= SIZE)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        seen.update(labels.tolist())
    assert len(seen) >= 6, f"classes seen over 50 scenes: {sorted(seen)}"


def test_boxes_are_tight_boxes_of_the_masks():
    checked_alone = 0
    for index in range(8):
        scene = ds.detection_scene(index, size=SIZE, return_masks=True)
        masks, visible = scene["masks"], scene["visible_masks"]
        for k, obj in enumerate(scene["objects"]):
            alone, _ = ds.render_object(obj, SIZE)  # the object rendered alone, from its description
            np.testing.assert_array_equal(alone, masks[k])
            over = np.prod(1.0 - masks[k + 1 :], axis=0) if k + 1 < len(masks) else 1.0
            np.testing.assert_allclose(visible[k], masks[k] * over, atol=1e-6)
            np.testing.assert_array_equal(scene["boxes"][k], tight_box(visible[k]))
            assert visible[k].sum() >= ds.MIN_VISIBLE_FRACTION * masks[k].sum()  # the occlusion rule
            own = tight_box(masks[k])
            assert np.all(scene["boxes"][k][:2] >= own[:2]) and np.all(scene["boxes"][k][2:] <= own[2:])
            if k + 1 == len(masks) or not np.any(masks[k + 1 :] * masks[k] > 0):
                np.testing.assert_array_equal(scene["boxes"][k], own)  # unoccluded: the box of the mask alone
                checked_alone += 1
    assert checked_alone > 10


def test_class_drawings_stay_inside_the_unit_square():
    grid = np.linspace(-1.3, 1.3, 261)
    v, u = np.meshgrid(grid, grid, indexing="ij")
    outside = (np.abs(u) > 1.0) | (np.abs(v) > 1.0)
    for name in ds.DETECTION_CLASSES:
        for p in (np.zeros(4), np.full(4, 0.999), np.full(4, 0.5)):
            part = ds._CLASSES[name].draw(u, v, p)
            assert part.any() and not part[outside].any(), name


def test_clip_boxes_follow_slow_motion():
    clip = ds.detection_clip(5, num_frames=5, size=SIZE, max_object_px=1.0, return_masks=True)
    frames, boxes, centre = clip["frames"], clip["boxes"], clip["centre"]
    assert frames.shape == (5, SIZE, SIZE, 3) and centre == 2
    assert boxes.shape == (5, len(clip["labels"]), 4)
    for t in range(5):
        for k in range(len(clip["labels"])):
            np.testing.assert_array_equal(boxes[t, k], tight_box(clip["visible_masks"][t, k]))
        # Translation at <= 1 px/frame per axis (+1 px of rasterisation), occlusion may only shrink boxes.
        grow = np.abs(t - centre) * 1.0 + 1.0
        assert np.all(boxes[t, :, :2] >= boxes[centre, :, :2] - grow)
        assert np.all(boxes[t, :, 2:] <= boxes[centre, :, 2:] + grow)
    assert not np.array_equal(frames[0], frames[-1])
    # The centre frame is the still scene whenever motion removed no object.
    same = 0
    for index in range(4):
        still = ds.detection_scene(index, size=SIZE)
        moving = ds.detection_clip(index, num_frames=3, size=SIZE)
        if np.array_equal(still["labels"], moving["labels"]):
            np.testing.assert_allclose(moving["frames"][1], still["image"], atol=1e-6)
            np.testing.assert_array_equal(moving["boxes"][1], still["boxes"])
            same += 1
    assert same >= 2


def test_splits_use_disjoint_scenes():
    assert set(ds._split_scenes("train", None)).isdisjoint(ds._split_scenes("test", None))
    train, test = ds.detection_scene(0, size=SIZE), ds.detection_scene(0, size=SIZE, split="test")
    assert not np.array_equal(train["image"], test["image"])
    with pytest.raises(ValueError, match="split"):
        ds.detection_scene(0, size=SIZE, split="val")


def test_dataset_degrades_clips_batched_and_reproducibly():
    n, frames = 3, 3
    data = ds.detection_dataset(n, size=SIZE, num_frames=frames, seed=0, max_objects=4, batch_size=2)
    assert data["clean"].shape == (n, SIZE, SIZE, 3)
    assert data["degraded"].shape == (n, frames, SIZE, SIZE, 3) and data["degraded"].dtype == np.float32
    assert data["boxes"].shape == (n, 4, 4) and data["labels"].shape == (n, 4) and data["num_boxes"].shape == (n,)
    assert data["tilt_std_px"].shape == (n,) and np.all(data["tilt_std_px"] > 0)
    assert np.all(np.isfinite(data["degraded"])) and data["degraded"].min() >= 0 and data["degraded"].max() <= 1
    for i in range(n):
        m = data["num_boxes"][i]
        clip = ds.detection_clip(i, num_frames=frames, size=SIZE, max_objects=4)
        np.testing.assert_array_equal(data["clean"][i], clip["frames"][1])
        np.testing.assert_array_equal(data["boxes"][i, :m], clip["boxes"][1])
        np.testing.assert_array_equal(data["labels"][i, :m], clip["labels"])
        assert np.all(data["labels"][i, m:] == -1) and np.all(data["boxes"][i, m:] == 0)
        degraded = data["degraded"][i, 1]
        assert np.abs(degraded - data["clean"][i]).mean() > 1e-3
        assert np.corrcoef(degraded.ravel(), data["clean"][i].ravel())[0, 1] > 0.3
    # Example 2 was generated padded in its own batch; regenerated beside example 0, it is the same.
    keys = ds.example_keys(0, "train", np.array([2, 0]))
    clips = np.stack([ds.detection_clip(i, num_frames=frames, size=SIZE, max_objects=4)["frames"] for i in (2, 0)])
    again = ds.degrade_scenes(keys, clips)
    np.testing.assert_allclose(np.asarray(again["degraded"][0]), data["degraded"][2], atol=1e-5)
    # One typed key is split per clip and reuses the compiled program.
    single = ds.degrade_scenes(jax.random.key(1), clips)
    assert single["degraded"].shape == clips.shape


def test_to_detr_targets_round_trips_to_pixel_boxes():
    boxes = np.array([[[2, 4, 10, 20], [30, 1, 64, 9], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[3, 0, -1]], np.int32)
    targets = ds.to_detr_targets(boxes, labels, np.array([2]), SIZE)
    assert set(targets) == {"labels", "boxes", "num_boxes"}
    assert targets["boxes"].dtype == np.float32 and targets["labels"].dtype == np.int32
    np.testing.assert_array_equal(targets["labels"], [[3, 0, 0]])
    np.testing.assert_allclose(targets["boxes"][0, 0], [6 / 64, 12 / 64, 8 / 64, 16 / 64])
    back = np.asarray(cxcywh_to_xyxy(targets["boxes"])) * SIZE
    np.testing.assert_allclose(back[0, :2], boxes[0, :2], atol=1e-4)
    assert np.all((targets["boxes"] >= 0) & (targets["boxes"] <= 1))
