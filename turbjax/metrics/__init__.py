"""Metrics that read model outputs: COCO-style detection AP/AR (``evaluate``) and its JSON export."""

from turbjax.metrics.detection import evaluate, to_coco_results, write_coco_results

__all__ = ["evaluate", "to_coco_results", "write_coco_results"]
