"""The error for files that are not readable fakescope checkpoints (no imports: every module of
:mod:`fakescope.models` may raise it)."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A file is not a readable fakescope checkpoint."""
