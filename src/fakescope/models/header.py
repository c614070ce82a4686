"""A checkpoint's JSON metadata, read without torch: ``fakescope info`` answers in well under a second.

A checkpoint is one ``.safetensors`` file whose header metadata holds a ``fakescope`` key with a
JSON document (spec, config, data summary, history, package version); see
:mod:`fakescope.models.checkpoint`, which writes and loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import safe_open

from fakescope.models.errors import CheckpointError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_KEY",
    "CheckpointError",
    "checked_meta",
    "missing_checkpoint",
    "read_meta",
]

FORMAT = "fakescope-checkpoint"
FORMAT_VERSION = 1
META_KEY = "fakescope"


def read_meta(path: str | Path, spec: bool = True) -> dict[str, Any]:
    """Only the JSON metadata of a checkpoint or ``builtin:NAME`` (cheap: reads the header).

    The one place a safetensors file's header is read: opening a detector reads it once
    (:func:`fakescope.infer.backends.resolve`) and hands the result on.

    Args:
        path: a ``.safetensors`` file or ``builtin:NAME``.
        spec: check the detector spec field by field (see :mod:`fakescope.models.validate`);
            False for files that hold tensors and JSON but no detector (a run's training state).

    Raises:
        CheckpointError: the file is not a safetensors file with well-formed fakescope metadata
            (the message names the file and the reason).
        FileNotFoundError: an unknown or missing built-in detector.
    """
    from fakescope.models.validate import parse_meta
    from fakescope.zoo import detector_file

    path = detector_file(path)
    if not path.is_file():
        raise missing_checkpoint(path)
    try:
        with safe_open(str(path), framework="numpy") as f:  # numpy: no torch import
            header = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({e})") from e
    if META_KEY not in header:
        raise CheckpointError(f"{path}: safetensors file without fakescope metadata")
    return checked_meta(header[META_KEY], path) if spec else parse_meta(header[META_KEY], path)


def missing_checkpoint(path: str | Path) -> CheckpointError:
    """The error for a checkpoint that is not there; when its name is a built-in detector's
    (``--detector clip-layers``), it says to write ``builtin:NAME``."""
    from fakescope.zoo import builtin_named

    builtin = builtin_named(path)
    hint = f"; for the built-in detector of that name, pass {builtin}" if builtin else ""
    return CheckpointError(f"{path}: checkpoint file not found{hint}")


def checked_meta(
    text: str, where: str | Path, kinds: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Parse a checkpoint's (or an export's) metadata JSON and check its spec's structure (see
    :mod:`fakescope.models.validate`; ``kinds``: the detector kinds allowed, default all);
    raise :class:`CheckpointError` naming ``where`` if bad."""
    from fakescope.models.validate import KINDS, check_spec, parse_meta

    meta = parse_meta(text, where)
    if "spec" not in meta:
        raise CheckpointError(f"{where}: its fakescope metadata has no detector spec")
    check_spec(meta["spec"], where, kinds=kinds or KINDS)
    return meta
