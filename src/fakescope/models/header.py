"""A checkpoint's JSON metadata, read without torch: ``fakescope info`` answers in well under a second.

A checkpoint is one ``.safetensors`` file whose header metadata holds a ``fakescope`` key with a
JSON document (spec, config, data summary, history, package version); see
:mod:`fakescope.models.checkpoint`, which writes and loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

FORMAT = "fakescope-checkpoint"
FORMAT_VERSION = 1
META_KEY = "fakescope"


class CheckpointError(RuntimeError):
    """A file is not a readable fakescope checkpoint."""


def read_meta(path: str | Path) -> dict[str, Any]:
    """Only the JSON metadata of a checkpoint or ``builtin:NAME`` (cheap: reads the header).

    Raises:
        CheckpointError: the file is not a safetensors file with fakescope metadata.
        FileNotFoundError: an unknown or missing built-in detector.
    """
    from fakescope.zoo import builtin_path, is_builtin

    path = builtin_path(path) if is_builtin(path) else Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="numpy") as f:  # numpy: no torch import
            header = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({e})") from e
    if META_KEY not in header:
        raise CheckpointError(f"{path}: safetensors file without fakescope metadata")
    try:
        return json.loads(header[META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its fakescope metadata is not valid JSON ({e})") from e
