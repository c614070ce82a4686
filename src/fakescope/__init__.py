"""fakescope: tell AI-generated images and videos from real ones.

The short public API (label 1 = fake, score = P(fake))::

    from fakescope import predict, explain, Prediction, DetectorRef
    from fakescope import create_detector, load_detector, list_models
    from fakescope import adapt   # teach a detector a new generator from a few examples
"""

from __future__ import annotations

from typing import Any

from fakescope.version import __version__

__all__ = [
    "DetectorRef",
    "adapt",
    "Prediction",
    "__version__",
    "create_detector",
    "explain",
    "list_models",
    "load_detector",
    "predict",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `import fakescope` (and `fakescope --help`) stays fast and imports no torch.
    if name in ("create_detector", "list_models"):
        from fakescope.models import registry

        return getattr(registry, name)
    if name in ("predict", "explain"):
        from fakescope.infer import api

        return getattr(api, name)
    if name == "Prediction":
        from fakescope.infer.row import Prediction

        return Prediction
    if name == "DetectorRef":
        from fakescope.infer.backends import DetectorRef

        return DetectorRef
    if name == "adapt":
        from fakescope.train.adapt import adapt

        return adapt
    if name == "load_detector":
        from fakescope.models.checkpoint import load_detector

        return load_detector
    raise AttributeError(f"module 'fakescope' has no attribute {name!r}")
