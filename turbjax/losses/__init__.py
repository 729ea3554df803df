"""Losses: pure functions of arrays (no parameters); losses return ``(scalar, dict_of_named_terms)``.

``boxes`` holds box conversions and (G)IoU, ``matching`` the DETR Hungarian matcher (optax, jit/vmap-able),
``detection`` the JDATT detection loss (matched L1 + GIoU + IoU-aware BCE, seed eq. 2).
"""

from turbjax.losses.boxes import (
    box_area,
    cxcywh_to_xyxy,
    giou,
    iou,
    pairwise_giou,
    pairwise_iou,
    xyxy_to_cxcywh,
)
from turbjax.losses.detection import DetectionLossWeights, detection_loss
from turbjax.losses.matching import detr_cost, hungarian_match, match_batch

__all__ = [
    "DetectionLossWeights",
    "box_area",
    "cxcywh_to_xyxy",
    "detection_loss",
    "detr_cost",
    "giou",
    "hungarian_match",
    "iou",
    "match_batch",
    "pairwise_giou",
    "pairwise_iou",
    "xyxy_to_cxcywh",
]
