"""Detectors: one interface, built by name, saved as self-describing checkpoints."""

from fakescope.models.checkpoint import CheckpointError, load_detector, save_checkpoint
from fakescope.models.detector import Detector, DetectorSpec, Preprocessing
from fakescope.models.registry import (
    WeightsError,
    create_detector,
    list_models,
    register_detector,
)

__all__ = [
    "CheckpointError",
    "Detector",
    "DetectorSpec",
    "Preprocessing",
    "WeightsError",
    "create_detector",
    "list_models",
    "load_detector",
    "register_detector",
    "save_checkpoint",
]
