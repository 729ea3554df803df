"""COCO detection metrics: ``evaluate`` gives pycocotools' COCOeval numbers on randomised hard cases."""

import contextlib
import io
import json

import numpy as np
import pytest

from turbjax.metrics import evaluate, to_coco_results, write_coco_results

coco = pytest.importorskip("pycocotools.coco")
cocoeval = pytest.importorskip("pycocotools.cocoeval")

STAT_KEYS = (
    "map",
    "ap50",
    "ap75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar",
    "mar_small",
    "mar_medium",
    "mar_large",
)  # the order of COCOeval.stats


def _random_boxes(rng, n, size):
    """[n, 4] xyxy boxes inside a size x size image, sides 3..0.75*size px (small, medium and large)."""
    wh = np.exp(rng.uniform(np.log(3.0), np.log(0.75 * size), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def _random_case(seed, num_images=7, num_classes=4, size=200.0, ties=False, explicit_area=False):
    """GT and predictions covering: crowded images, no GT, no predictions, crowd GT, classes predicted
    but absent from GT (label ``num_classes``), duplicate and mislabelled detections, >100 detections."""
    rng = np.random.default_rng(seed)
    ground_truth, predictions = [], []
    for i in range(num_images):
        kind = ("crowded", "no_gt", "no_pred", "many_dets")[i] if i < 4 else "normal"
        num_gt = {"crowded": 30, "no_gt": 0}.get(kind, int(rng.integers(1, 8)))
        gt_boxes = _random_boxes(rng, num_gt, size)
        if kind == "crowded":  # many heavily overlapping objects around a few centres
            centres = rng.uniform(40, 160, (3, 2))[rng.integers(0, 3, num_gt)]
            half = rng.uniform(5, 40, (num_gt, 2))
            gt_boxes = np.concatenate([centres - half, centres + half], axis=1)
        gt_labels = rng.integers(0, num_classes, num_gt)
        gt = {"boxes": gt_boxes, "labels": gt_labels, "iscrowd": rng.uniform(size=num_gt) < 0.12}
        if explicit_area:  # COCO areas are mask areas: smaller than the box
            gt["area"] = (
                (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]) * rng.uniform(0.3, 1, num_gt)
            )
        ground_truth.append(gt)

        boxes, labels = [], []
        if kind != "no_pred":
            for box, label in zip(gt_boxes, gt_labels, strict=True):
                for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):  # missed, found, duplicated
                    side = box[2:] - box[:2]
                    jitter = rng.normal(0, 0.12, 4) * np.concatenate([side, side])
                    boxes.append(box + jitter)
                    labels.append(label if rng.uniform() < 0.85 else rng.integers(0, num_classes + 1))
            num_fp = 130 if kind == "many_dets" else int(rng.integers(0, 6))
            boxes.extend(_random_boxes(rng, num_fp, size))
            fp_labels = np.full(num_fp, 1) if kind == "many_dets" else rng.integers(0, num_classes + 1, num_fp)
            labels.extend(fp_labels)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        scores = rng.uniform(size=len(boxes))
        if ties:
            scores = np.round(scores, 1)
        predictions.append({"boxes": boxes, "scores": scores, "labels": np.asarray(labels, np.int64)})
    return ground_truth, predictions


def _coco_ground_truth(ground_truth, category_ids=None, extra_labels=()):
    """A pycocotools COCO object built in memory; image ids 1..N, annotation ids from 1."""
    ids = (lambda label: int(label)) if category_ids is None else (lambda label: int(category_ids[int(label)]))
    labels = set(extra_labels).union(*[set(np.asarray(g["labels"]).tolist()) for g in ground_truth])
    dataset = {"images": [], "annotations": [], "categories": [{"id": ids(c), "name": str(c)} for c in sorted(labels)]}
    for i, gt in enumerate(ground_truth):
        dataset["images"].append({"id": i + 1, "width": 200, "height": 200})
        boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        areas = gt.get("area", (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        crowd = gt.get("iscrowd", np.zeros(len(boxes), bool))
        for box, label, area, is_crowd in zip(boxes, gt["labels"], areas, crowd, strict=True):
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": ids(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": float(area),
                    "iscrowd": int(is_crowd),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco.COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
    return coco_gt


def _cocoeval(coco_gt, results, max_detections=100, iou_thresholds=None):
    """Run COCOeval (quietly) on a results list or JSON file name; returns the evaluator."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = cocoeval.COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = [1, 10, max_detections]
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _independent_results(predictions):
    """COCO results list written here (not with to_coco_results), so the comparison is independent."""
    results = []
    for i, pred in enumerate(predictions):
        for box, score, label in zip(pred["boxes"], pred["scores"], pred["labels"], strict=True):
            bbox = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            results.append({"image_id": i + 1, "category_id": int(label), "bbox": bbox, "score": float(score)})
    return results


def _assert_matches_cocoeval(ours, evaluator):
    expected = dict(zip(STAT_KEYS, evaluator.stats.tolist(), strict=True))
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", largest cap
    # stats[0] is hard-wired to maxDets=100 (-1 otherwise); read mAP at the largest cap directly.
    expected["map"] = float(np.mean(precision[precision > -1])) if (precision > -1).any() else -1.0
    got = {key: ours[key] for key in STAT_KEYS}
    np.testing.assert_allclose(list(got.values()), list(expected.values()), atol=1e-3, err_msg=f"{got} != {expected}")
    for k, category in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        expected_ap = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
        assert ours["map_per_class"].get(category, -1.0) == pytest.approx(expected_ap, abs=1e-3), category


@pytest.mark.parametrize(
    "seed, ties, explicit_area, max_detections",
    [(0, False, False, 100), (1, False, True, 100), (2, True, False, 100), (3, True, True, 20), (4, False, False, 10)],
)
def test_evaluate_equals_cocoeval_on_random_cases(seed, ties, explicit_area, max_detections):
    ground_truth, predictions = _random_case(seed, ties=ties, explicit_area=explicit_area)
    assert max(len(p["boxes"]) for p in predictions) > 100
    ours = evaluate(ground_truth, predictions, max_detections=max_detections)
    extra = np.concatenate([p["labels"] for p in predictions])
    evaluator = _cocoeval(
        _coco_ground_truth(ground_truth, extra_labels=extra), _independent_results(predictions), max_detections
    )
    _assert_matches_cocoeval(ours, evaluator)
    assert 0.0 < ours["map"] < 1.0
    assert ours["map_per_class"][4] == -1.0  # predicted, never in the GT: excluded from the mean


def test_evaluate_with_custom_iou_thresholds_equals_cocoeval():
    ground_truth, predictions = _random_case(5, num_images=5)
    thresholds = np.array([0.5, 0.6, 0.75])
    ours = evaluate(ground_truth, predictions, iou_thresholds=thresholds)
    evaluator = _cocoeval(_coco_ground_truth(ground_truth), _independent_results(predictions), 100, thresholds)
    _assert_matches_cocoeval(ours, evaluator)
    assert evaluate(ground_truth, predictions, iou_thresholds=[0.6])["ap50"] == -1.0


def test_perfect_predictions_score_one():
    ground_truth, _ = _random_case(6, explicit_area=False)
    predictions = [
        {
            "boxes": g["boxes"][~g["iscrowd"]],
            "labels": g["labels"][~g["iscrowd"]],
            "scores": np.ones((~g["iscrowd"]).sum()),
        }
        for g in ground_truth
    ]
    result = evaluate(ground_truth, predictions)
    for key in ("map", "ap50", "ap75", "mar"):
        assert result[key] == pytest.approx(1.0)
    assert all(result[f"map_{size}"] in (-1.0, pytest.approx(1.0)) for size in ("small", "medium", "large"))


def test_empty_inputs_and_validation():
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    nothing = evaluate([empty], [{**empty, "scores": np.zeros(0)}])
    assert nothing["map"] == -1.0 and nothing["map_per_class"] == {}
    gt = {"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([2])}
    missed = evaluate([gt], [{**empty, "scores": np.zeros(0)}])
    assert missed["map"] == 0.0 and missed["mar"] == 0.0 and missed["map_per_class"] == {2: 0.0}
    with pytest.raises(ValueError, match="one prediction dict per image"):
        evaluate([gt], [])
    with pytest.raises(ValueError, match="scores"):
        evaluate([gt], [gt])


def test_json_export_round_trips_through_loadres(tmp_path):
    ground_truth, predictions = _random_case(7, num_images=5, num_classes=3)
    category_ids = [1, 3, 7, 11]  # contiguous label -> COCO category id
    image_ids = list(range(1, len(predictions) + 1))
    path = write_coco_results(tmp_path / "out" / "results.json", predictions, image_ids, category_ids)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temporary file left behind
    results = json.loads(path.read_text())
    assert results == to_coco_results(predictions, image_ids, dict(enumerate(category_ids)))
    first = results[0]
    assert set(first) == {"image_id", "category_id", "bbox", "score"} and isinstance(first["score"], float)
    np.testing.assert_allclose(first["bbox"][2:], predictions[0]["boxes"][0, 2:] - predictions[0]["boxes"][0, :2])
    coco_gt = _coco_ground_truth(ground_truth, category_ids, extra_labels=range(4))
    evaluator = _cocoeval(coco_gt, str(path))
    ours = evaluate(ground_truth, predictions)
    ours["map_per_class"] = {category_ids[label]: ap for label, ap in ours["map_per_class"].items()}
    _assert_matches_cocoeval(ours, evaluator)
