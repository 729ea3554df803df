"""Metrics that read model outputs: COCO-style detection AP/AR (``evaluate``) and its JSON export,
no-reference image quality (NIQE, BRISQUE) and, in ``turbjax.metrics.image``, PSNR / SSIM."""

from turbjax.metrics.detection import evaluate, to_coco_results, write_coco_results
from turbjax.metrics.noref import brisque, brisque_batch, niqe, niqe_batch

__all__ = ["brisque", "brisque_batch", "evaluate", "niqe", "niqe_batch", "to_coco_results", "write_coco_results"]
