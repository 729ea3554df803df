"""COCO-style box detection metrics (mAP, AP50, AP75, size buckets, AR) in pure NumPy.

``evaluate`` reproduces the numbers of pycocotools' ``COCOeval(gt, dt, "bbox")`` so that results
written in papers can be compared, without going through JSON files and global COCO ids:

- per image and category, detections are sorted by score (stable sort, so ties keep input order)
  and only the first ``max_detections`` are kept: the cap applies per image *per category*;
- greedy matching at every IoU threshold, in score order: a detection takes the still-unmatched
  ground truth (GT) of largest IoU (>= threshold; on equal IoU the later GT wins), preferring
  GT that counts over GT that is ignored. Crowd GT is always ignored, may absorb any number of
  detections, and its "IoU" is intersection / detection area;
- a detection matched to ignored GT, or unmatched and outside the area range, is ignored
  (neither true nor false positive); GT outside the area range is ignored;
- precision is made monotone (running max from high recall down) and read at the 101 recall
  points 0, 0.01, ..., 1 (0 beyond the highest recall reached);
- a category with no counted GT gets AP = -1 and is left out of the mean; a mean over nothing is -1.

Boxes come in as xyxy pixels. Widths and areas follow COCO's continuous convention (w = x2 - x1,
area = w * h, no "+1"). Area ranges (pixels^2) are COCO's: small < 32^2 <= medium <= 96^2 < large.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e5**2), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e5**2)}


def box_iou(detections: np.ndarray, ground_truth: np.ndarray, iscrowd: np.ndarray | None = None) -> np.ndarray:
    """IoU [D, G] between xyxy boxes (pixels); for crowd GT, intersection / detection area.

    The crowd variant measures how much of a detection lies inside a crowd region, so any number
    of detections of people in a crowd can be explained by (ignored on) that one region.
    """
    d = np.asarray(detections, np.float64).reshape(-1, 4)
    g = np.asarray(ground_truth, np.float64).reshape(-1, 4)
    crowd = np.zeros(len(g), bool) if iscrowd is None else np.asarray(iscrowd, bool).reshape(-1)
    d_area = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    g_area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    iw = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    ih = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    union = np.where(crowd[None, :], d_area[:, None], d_area[:, None] + g_area[None, :] - inter)
    return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _as_image(entry: Mapping[str, Any], kind: str, index: int) -> dict[str, np.ndarray]:
    """Validated float64/int arrays of one image's boxes, labels (and scores / crowd / area)."""
    try:
        boxes = np.asarray(entry["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(entry["labels"]).reshape(-1).astype(np.int64)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{kind}[{index}] needs 'boxes' [N, 4] xyxy and 'labels' [N]: {error}") from error
    n = len(boxes)
    if len(labels) != n:
        raise ValueError(f"{kind}[{index}]: {n} boxes but {len(labels)} labels.")
    out = {"boxes": boxes, "labels": labels}
    if kind == "predictions":
        if "scores" not in entry:
            raise ValueError(f"predictions[{index}] needs 'scores' [N].")
        out["scores"] = np.asarray(entry["scores"], np.float64).reshape(-1)
        if len(out["scores"]) != n:
            raise ValueError(f"predictions[{index}]: {n} boxes but {len(out['scores'])} scores.")
    else:
        crowd = entry.get("iscrowd")
        out["iscrowd"] = np.zeros(n, bool) if crowd is None else np.asarray(crowd).reshape(-1).astype(bool)
        area = entry.get("area")
        box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        out["area"] = box_area if area is None else np.asarray(area, np.float64).reshape(-1)
        if len(out["iscrowd"]) != n or len(out["area"]) != n:
            raise ValueError(f"ground_truth[{index}]: 'iscrowd' and 'area' must have one entry per box ({n}).")
    return out


def _match_image(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of score-sorted detections, for all area ranges and thresholds at once.

    Args:
      ious: [D, G] IoU of detections (sorted by score, descending) and GT.
      gt_ignore: [A, G] bool, GT ignored in each area range (crowd or out of range).
      gt_crowd: [G] bool, crowd GT (may be matched repeatedly).
      thresholds: [T] IoU thresholds.
    Returns:
      matched [A, T, D] bool (detection matched some GT) and matched_ignored [A, T, D] bool
      (the GT it matched is ignored).
    """
    num_det, num_gt = ious.shape
    num_area, num_thr = gt_ignore.shape[0], len(thresholds)
    matched = np.zeros((num_area, num_thr, num_det), bool)
    matched_ignored = np.zeros((num_area, num_thr, num_det), bool)
    if num_det == 0 or num_gt == 0:
        return matched, matched_ignored
    # COCOeval caps the threshold just below 1 so that IoU == 1 still matches at threshold 1.
    thr = np.minimum(thresholds, 1 - 1e-10)[None, :, None]  # [1, T, 1]
    gt_taken = np.zeros((num_area, num_thr, num_gt), bool)
    counted = ~gt_ignore[:, None, :]  # [A, 1, G]
    last = num_gt - 1
    for d in range(num_det):
        row = ious[d][None, None, :]  # [1, 1, G]
        ok = (~gt_taken | gt_crowd) & (row >= thr)  # [A, T, G]
        # Counted GT is preferred; ignored GT only catches detections that match no counted GT.
        ok_counted = ok & counted
        use = np.where(ok_counted.any(-1, keepdims=True), ok_counted, ok)
        any_match = use.any(-1)  # [A, T]
        if not any_match.any():
            continue
        # Largest IoU; on ties the last GT (COCOeval replaces its best on >=).
        score = np.where(use, row, -1.0)[..., ::-1]
        best = last - np.argmax(score, axis=-1)  # [A, T]
        a_idx, t_idx = np.nonzero(any_match)
        g_idx = best[a_idx, t_idx]
        gt_taken[a_idx, t_idx, g_idx] = True
        matched[a_idx, t_idx, d] = True
        matched_ignored[a_idx, t_idx, d] = gt_ignore[a_idx, g_idx]
    return matched, matched_ignored


def _precision_recall(
    scores: np.ndarray, true_pos: np.ndarray, false_pos: np.ndarray, num_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """101-point interpolated precision [T, R] and final recall [T] for one category / area / cap.

    ``true_pos`` and ``false_pos`` are [T, D] bool over all images' detections (ignored ones are
    neither); they are re-sorted here by score, stably, so ties keep image order then input order.
    """
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(true_pos[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(false_pos[:, order], axis=1, dtype=np.float64)
    num_thr, num_det = tp.shape
    if num_det == 0:
        return np.zeros((num_thr, len(RECALL_POINTS))), np.zeros(num_thr)
    recall = tp / num_gt
    precision = tp / (fp + tp + np.spacing(1))
    # Monotone envelope: precision at recall r is the best precision at any recall >= r.
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((num_thr, len(RECALL_POINTS)))
    for t in range(num_thr):
        idx = np.searchsorted(recall[t], RECALL_POINTS, side="left")
        valid = idx < num_det
        out[t, valid] = precision[t, idx[valid]]
    return out, recall[:, -1]


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def evaluate(
    ground_truth: Sequence[Mapping[str, Any]],
    predictions: Sequence[Mapping[str, Any]],
    *,
    max_detections: int = 100,
    iou_thresholds: np.ndarray | Sequence[float] = COCO_IOU_THRESHOLDS,
) -> dict[str, Any]:
    """COCO box AP/AR of ``predictions`` against ``ground_truth`` (same numbers as pycocotools' COCOeval).

    Args:
      ground_truth: one dict per image: ``boxes`` [M, 4] xyxy pixels, ``labels`` [M] int, optional
        ``iscrowd`` [M] bool (crowd regions: ignored, absorb detections), optional ``area`` [M]
        pixels^2 used for the small/medium/large buckets (COCO annotations give the mask area;
        default: box area).
      predictions: one dict per image, in the same order: ``boxes`` [P, 4] xyxy pixels,
        ``scores`` [P], ``labels`` [P] int.
      max_detections: detections kept per image and category (highest scores), COCO's 100.
      iou_thresholds: [T] IoU thresholds averaged over for ``map`` (COCO: 0.50:0.05:0.95).

    Returns:
      ``map`` (AP over thresholds), ``ap50``, ``ap75`` (-1 if that threshold is not among
      ``iou_thresholds``), ``map_small``, ``map_medium``, ``map_large``, ``mar_1``, ``mar_10``,
      ``mar`` (recall with at most 1, 10, ``max_detections`` detections per image and category),
      ``mar_small``, ``mar_medium``, ``mar_large`` as floats, -1 where nothing can be measured;
      and ``map_per_class``: {label: AP} for every label seen in GT or predictions (-1: no GT).
    """
    if len(ground_truth) != len(predictions):
        raise ValueError(f"one prediction dict per image: {len(ground_truth)} GT images, {len(predictions)} predicted.")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1; got {max_detections}.")
    thresholds = np.asarray(iou_thresholds, np.float64).reshape(-1)
    caps = sorted({min(1, max_detections), min(10, max_detections), max_detections})
    area_ranges = np.array(list(AREA_RANGES.values()))  # [A, 2]
    num_area, num_thr = len(area_ranges), len(thresholds)

    gts = [_as_image(g, "ground_truth", i) for i, g in enumerate(ground_truth)]
    dts = [_as_image(p, "predictions", i) for i, p in enumerate(predictions)]
    classes = np.unique(np.concatenate([x["labels"] for x in gts + dts] + [np.zeros(0, np.int64)]))

    # Per class: lists over images of scores [D], true/false positives [A, T, D], counted GT [A].
    per_class: dict[int, dict[str, list]] = {int(c): {"scores": [], "tp": [], "fp": [], "ngt": []} for c in classes}
    for gt, dt in zip(gts, dts, strict=True):
        for c in np.union1d(gt["labels"], dt["labels"]):
            g_sel = gt["labels"] == c
            g_boxes, g_crowd, g_area = gt["boxes"][g_sel], gt["iscrowd"][g_sel], gt["area"][g_sel]
            d_sel = np.flatnonzero(dt["labels"] == c)
            d_sel = d_sel[np.argsort(-dt["scores"][d_sel], kind="mergesort")][:max_detections]
            d_boxes, d_scores = dt["boxes"][d_sel], dt["scores"][d_sel]
            out_of_range = (g_area[None] < area_ranges[:, :1]) | (g_area[None] > area_ranges[:, 1:])
            gt_ignore = g_crowd[None] | out_of_range  # [A, G]
            matched, matched_ignored = _match_image(box_iou(d_boxes, g_boxes, g_crowd), gt_ignore, g_crowd, thresholds)
            d_area = (d_boxes[:, 2] - d_boxes[:, 0]) * (d_boxes[:, 3] - d_boxes[:, 1])
            d_out = (d_area[None] < area_ranges[:, :1]) | (d_area[None] > area_ranges[:, 1:])  # [A, D]
            ignored = matched_ignored | (~matched & d_out[:, None, :])
            entry = per_class[int(c)]
            entry["scores"].append(d_scores)
            entry["tp"].append(matched & ~ignored)
            entry["fp"].append(~matched & ~ignored)
            entry["ngt"].append((~gt_ignore).sum(-1))

    # precision [T, R, K, A, M] and recall [T, K, A, M], -1 where a class has no counted GT.
    num_class, num_cap = len(classes), len(caps)
    precision = -np.ones((num_thr, len(RECALL_POINTS), num_class, num_area, num_cap))
    recall = -np.ones((num_thr, num_class, num_area, num_cap))
    for k, c in enumerate(classes):
        entry = per_class[int(c)]
        num_gt = np.sum(entry["ngt"], axis=0) if entry["ngt"] else np.zeros(num_area, int)
        for m, cap in enumerate(caps):
            scores = np.concatenate([s[:cap] for s in entry["scores"]])
            tp = np.concatenate([x[..., :cap] for x in entry["tp"]], axis=-1)
            fp = np.concatenate([x[..., :cap] for x in entry["fp"]], axis=-1)
            for a in range(num_area):
                if num_gt[a] == 0:
                    continue
                precision[:, :, k, a, m], recall[:, k, a, m] = _precision_recall(scores, tp[a], fp[a], int(num_gt[a]))

    def threshold_index(value: float) -> np.ndarray:
        return np.flatnonzero(np.isclose(thresholds, value, rtol=0, atol=1e-9))

    last = caps.index(max_detections)
    result: dict[str, Any] = {
        "map": _mean_valid(precision[:, :, :, 0, last]),
        "ap50": _mean_valid(precision[threshold_index(0.5), :, :, 0, last]),
        "ap75": _mean_valid(precision[threshold_index(0.75), :, :, 0, last]),
    }
    for a, name in enumerate(AREA_RANGES):
        if name != "all":
            result[f"map_{name}"] = _mean_valid(precision[:, :, :, a, last])
    result["mar_1"] = _mean_valid(recall[:, :, 0, caps.index(min(1, max_detections))])
    result["mar_10"] = _mean_valid(recall[:, :, 0, caps.index(min(10, max_detections))])
    result["mar"] = _mean_valid(recall[:, :, 0, last])
    for a, name in enumerate(AREA_RANGES):
        if name != "all":
            result[f"mar_{name}"] = _mean_valid(recall[:, :, a, last])
    result["map_per_class"] = {int(c): _mean_valid(precision[:, :, k, 0, last]) for k, c in enumerate(classes)}
    return result


def to_coco_results(
    predictions: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Predictions as a COCO results list (the format of ``COCO.loadRes`` and the COCO server).

    Args:
      predictions: one dict per image: ``boxes`` [P, 4] xyxy pixels (of the original image, for
        official numbers), ``scores`` [P], ``labels`` [P] int.
      image_ids: COCO image id of each entry of ``predictions``.
      category_ids: label -> COCO category id (a sequence indexed by label, or a mapping), e.g. the
        loader's ``category_ids``; None keeps labels as ids.
    Returns:
      [{"image_id": int, "category_id": int, "bbox": [x, y, w, h] floats (pixels), "score": float}, ...]
    """
    if len(predictions) != len(image_ids):
        raise ValueError(f"one image id per prediction dict: {len(predictions)} dicts, {len(image_ids)} ids.")
    results = []
    for index, (pred, image_id) in enumerate(zip(predictions, image_ids, strict=True)):
        p = _as_image(pred, "predictions", index)
        xywh = np.concatenate([p["boxes"][:, :2], p["boxes"][:, 2:] - p["boxes"][:, :2]], axis=1)
        for box, score, label in zip(xywh.tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            category = int(label) if category_ids is None else int(category_ids[int(label)])
            results.append({"image_id": int(image_id), "category_id": category, "bbox": box, "score": float(score)})
    return results


def write_coco_results(
    path: str | os.PathLike,
    predictions: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int] | Mapping[int, int] | None = None,
) -> Path:
    """Write ``to_coco_results(...)`` as JSON to ``path``, atomically; returns the path.

    The JSON is written to a temporary file in the same folder and then renamed over ``path``, so
    a reader (or a resumed run) never sees a half-written file.
    """
    path = Path(path)
    results = to_coco_results(predictions, image_ids, category_ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(results, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
