"""HTTP API and web page for a detector: ``fakescope serve`` (needs the ``serve`` extra).

``create_app(detector, settings)`` builds a FastAPI app; ``ServerSettings`` (also importable as
``ServeSettings``, its earlier name) holds its limits and the CLI's defaults.
Imports are lazy, so ``import fakescope.serve`` works without FastAPI installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from fakescope.serve.app import create_app

        return create_app
    if name in ("ServerSettings", "ServeSettings"):
        from fakescope.serve.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'fakescope.serve' has no attribute {name!r}")
