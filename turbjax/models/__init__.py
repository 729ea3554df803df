"""Flax NNX networks: shared blocks (``layers``) and the DETR-style detector (``detector``).

Restorers and the TMTS network will live next to them and reuse ``layers``.
"""

from turbjax.models.detector import (
    FEATURE_NAMES,
    VARIANTS,
    Detector,
    DetectorConfig,
    DetectorOutput,
    count_parameters,
    detector_config,
)

__all__ = [
    "FEATURE_NAMES",
    "VARIANTS",
    "Detector",
    "DetectorConfig",
    "DetectorOutput",
    "count_parameters",
    "detector_config",
]
