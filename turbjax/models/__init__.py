"""Flax NNX networks: shared blocks (``layers``), the DETR-style detector (``detector``), the JDATT
restorers with their Mamba blocks (``restorers``, ``mamba``) and the distillation heads / student
bundle (``distill_heads``, ``jdatt``)."""

from turbjax.models.detector import (
    FEATURE_NAMES,
    VARIANTS,
    Detector,
    DetectorConfig,
    DetectorOutput,
    count_parameters,
    detector_config,
)
from turbjax.models.restorers import Restorer, RestorerConfig, RestorerOutput, restorer_config

__all__ = [
    "FEATURE_NAMES",
    "VARIANTS",
    "Detector",
    "DetectorConfig",
    "DetectorOutput",
    "Restorer",
    "RestorerConfig",
    "RestorerOutput",
    "count_parameters",
    "detector_config",
    "restorer_config",
]

# TMTS (turbulence-signature-guided mitigation network) and its SpyNet flow.
from turbjax.models.spynet import SpyNet  # noqa: E402
from turbjax.models.tmts import TMTS, TMTSConfig, TSSwitches, module_parameters, tmts_config  # noqa: E402

__all__ += ["TMTS", "SpyNet", "TMTSConfig", "TSSwitches", "module_parameters", "tmts_config"]
