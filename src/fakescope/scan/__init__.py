"""Distributed scoring on Ray Data: ``fakescope scan`` writes predict's rows as Parquet parts.

The work is in :mod:`fakescope.scan.ray_scan`; its public names are re-exported here lazily, so
building the command line (:mod:`fakescope.cli.scan`) imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ScanResult", "list_inputs", "read_scan", "read_scan_rows", "scan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("fakescope.scan.ray_scan"), name)
    raise AttributeError(f"module 'fakescope.scan' has no attribute {name!r}")
