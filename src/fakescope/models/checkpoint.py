"""Self-describing, safe checkpoints: tensors in safetensors, everything else as JSON metadata.

A checkpoint is one ``.safetensors`` file. Its header metadata holds a ``fakescope`` key with a
JSON document (spec, config, data summary, history, package version). A copy of that JSON sits
beside it as ``<name>.json`` for people. Loading reads tensors and JSON only: it never unpickles.
Files are written atomically, so a run killed at any moment leaves the last good file readable.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from fakescope.models.detector import Detector, DetectorSpec
from fakescope.models.header import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    CheckpointError,
    read_meta,
)
from fakescope.models.validate import check_size
from fakescope.utils import atomic_write, atomic_write_text, missing_extra_message
from fakescope.version import __version__

logger = logging.getLogger(__name__)


class MissingBackboneError(CheckpointError, FileNotFoundError):
    """A probe checkpoint is fine but its backbone file is not on this machine."""


def _plain_arrays(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """Contiguous numpy copies of numpy arrays or torch tensors (bf16 is widened to float32)."""
    out = {}
    for k, v in state.items():
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().to("cpu")
            v = v.float() if str(v.dtype) == "torch.bfloat16" else v
            v = v.numpy()
        out[k] = np.ascontiguousarray(v).copy()
    return out


def save_tensors(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (numpy arrays or torch tensors) plus JSON ``meta`` to a safetensors
    file atomically."""
    from safetensors.numpy import save_file

    header = {META_KEY: json.dumps(meta, default=_json_default)}
    plain = _plain_arrays(tensors)
    return atomic_write(path, lambda tmp: save_file(plain, tmp, metadata=header))


def read_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_tensors` as numpy arrays; raise
    :class:`CheckpointError` if it isn't one.

    The metadata is parsed (and must be a JSON object) before any tensor is read.
    """
    meta = read_meta(path, spec=False)
    return _tensors(Path(path)), meta


def _tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a file whose header has been read (:func:`read_meta`)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as e:  # safetensors raises its own error types for bad files
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({e})") from e


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def checkpoint_meta(detector: Detector, **extra: Any) -> dict[str, Any]:
    """The JSON document stored with a detector: format, spec, version, time, plus ``extra``."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fakescope_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "spec": detector.spec.to_dict(),
    }
    meta.update(extra)
    return meta


def save_checkpoint(
    path: str | Path,
    detector: Detector,
    extra_tensors: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Save a detector (weights + spec + ``extra`` metadata) and its readable JSON sidecar.

    ``extra_tensors`` are stored beside the network's, under names that start with ``__`` (data
    that travels with the detector, such as :mod:`fakescope.train.adapt`'s reference rows; loading
    the network ignores them).
    """
    if any(not k.startswith("__") for k in extra_tensors or {}):
        raise ValueError("extra tensors must have names that start with '__'")
    meta = checkpoint_meta(detector, **extra)
    path = save_tensors(path, {**detector.net.state_dict(), **(extra_tensors or {})}, meta)
    atomic_write_text(
        Path(path).with_suffix(".json"), json.dumps(meta, indent=2, default=_json_default)
    )
    return Path(path)


def load_detector(
    path: str | Path,
    device: Any = "cpu",
    backbone_path: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Detector:
    """Rebuild a detector from a checkpoint file alone (no downloads, no unpickling).

    Probe detectors reference their frozen backbone file; pass ``backbone_path`` if it has moved.
    ``meta``: the file's header as :func:`~fakescope.models.header.read_meta` returned it, when
    the caller has read it already (:func:`fakescope.infer.backends.resolve`).
    The returned detector is in eval mode and carries the stored metadata as ``detector.meta``,
    the tensors stored beside the network (names that start with ``__``) as
    ``detector.extra_tensors`` and its file as ``detector.file``.

    The file is untrusted input: its metadata is checked (types, the allow-listed constructor
    arguments, a bound on the network's size; see :mod:`fakescope.models.validate`) before any
    other file is opened or any tensor allocated.

    Raises:
        CheckpointError: the file is missing, unreadable or malformed, or its spec is refused; the
            message names the file and the reason.
        MissingBackboneError: a probe's backbone file is not here (also a FileNotFoundError).
    """
    from fakescope.models.registry import build_from_spec
    from fakescope.zoo import detector_file

    source = str(path)
    path = detector_file(path)
    if path.suffix.lower() == ".onnx":
        from fakescope.models.onnx_net import load_onnx_detector

        exported = load_onnx_detector(path)
        exported.source, exported.file = source, path
        return exported
    meta = meta if meta is not None else read_meta(path)  # its spec checked field by field
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a fakescope checkpoint (format={str(meta.get('format'))[:60]!r})"
        )
    check_size(meta["spec"], path, _count_timm(path))  # before anything is allocated
    spec = DetectorSpec.from_dict(meta["spec"])
    try:
        detector = build_from_spec(spec, backbone_path=backbone_path)
    except FileNotFoundError as e:  # the probe's backbone file is not on this machine
        raise MissingBackboneError(f"{path}: {e}") from e
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot rebuild its {spec.kind!r} detector ({e})") from e
    tensors = _tensors(path)
    net_state = {k: v for k, v in tensors.items() if not k.startswith("__")}
    try:
        missing, unexpected = detector.load_tensors(net_state)
    except ValueError as e:  # shapes that do not fit
        raise CheckpointError(f"{path}: tensors do not fit {spec.arch!r} ({str(e)[:500]})") from e
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match {spec.arch!r} (missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]})"
        )
    detector.meta = meta
    detector.source = source
    detector.file = path
    detector.extra_tensors = {k: v for k, v in tensors.items() if k.startswith("__")}
    return detector.to(device).eval()


def _count_timm(path: str | Path) -> Any:
    """A timm sizer for :func:`~fakescope.models.validate.check_size` whose errors name ``path``."""
    from fakescope.models.registry import count_timm_elements

    def count(name: str, kwargs: Any, num_classes: int) -> int:
        try:
            return count_timm_elements(name, kwargs, num_classes)
        except ModuleNotFoundError as e:  # a core install: no torch or timm
            extra = missing_extra_message(e, f"{path} (a fine-tuned timm network)")
            if extra is None:
                raise
            raise CheckpointError(extra) from e
        except Exception as e:  # timm raises TypeError, ValueError, AssertionError, ...
            raise CheckpointError(
                f"{path}: cannot build timm model {name!r} with {dict(kwargs)} "
                f"({type(e).__name__}: {str(e)[:300]})"
            ) from e

    return count
