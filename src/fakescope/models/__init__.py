"""Detectors: one interface, built by name, saved as self-describing checkpoints.

Names are imported on first use, so ``import fakescope.models.header`` (``fakescope info``) does
not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CheckpointError": "fakescope.models.header",
    "Detector": "fakescope.models.detector",
    "DetectorSpec": "fakescope.models.detector",
    "Preprocessing": "fakescope.data.transforms",
    "WeightsError": "fakescope.models.registry",
    "create_detector": "fakescope.models.registry",
    "list_models": "fakescope.models.registry",
    "MissingBackboneError": "fakescope.models.checkpoint",
    "load_detector": "fakescope.models.checkpoint",
    "register_detector": "fakescope.models.registry",
    "save_checkpoint": "fakescope.models.checkpoint",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fakescope.models' has no attribute {name!r}")
