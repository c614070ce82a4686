"""Detectors exported to ONNX (``fakescope export``), run with onnxruntime alone: no torch.

The exported file carries the checkpoint's JSON (preprocessing, calibration, threshold) in its
``metadata_props`` under ``fakescope``, so ``load_detector(model.onnx)`` needs nothing else.
Exporting is :mod:`fakescope.models.onnx_export` (the ``train`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fakescope.models.detector import Detector, DetectorSpec
from fakescope.models.header import CheckpointError, checked_meta
from fakescope.utils import cpu_count

INPUT, OUTPUT = "pixel_values", "logits"
# Bumped when exports change in a way that makes older cached files worth redoing
# (2: fixed "same" padding, QOperator static int8).
EXPORT_VERSION = 2


class OnnxNet:
    """Runs an exported detector with onnxruntime; the same logits as the torch network."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or cpu_count()
        # Idle threads sleep instead of spinning: the cores are shared with decoding (end to end
        # on 2 cores with 2 decode processes, int8, batch 16: 258 img/s against 241 spinning).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        from fakescope.embed.backbones import quantises_per_batch

        # A file that quantises activations per run (a probe's int8 tower) runs one image at a
        # time, so that an image's score does not depend on its batch mates.
        self.one_at_a_time = quantises_per_batch(Path(path))

    def logits_and_novelty(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        """Logits ``[B]`` of a preprocessed float32 batch (exports carry no guard)."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        chunks = [arr[i : i + 1] for i in range(len(arr))] if self.one_at_a_time else [arr]
        out = [self.session.run([OUTPUT], {INPUT: c})[0] for c in chunks]
        return np.concatenate(out).astype(np.float32).reshape(len(arr)), None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Nothing: the graph is the file."""
        return {}


ONNX_FORMAT = "fakescope-onnx"


def _stored_meta(path: Path) -> dict[str, Any] | None:
    """The ``fakescope`` JSON an export carries in its metadata (None when there is none).

    Raises:
        CheckpointError: the file is not a readable ONNX model, or its JSON is malformed (the
            spec is checked as for checkpoints, see :mod:`fakescope.models.validate`).
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except Exception as e:  # protobuf decode errors come in several types
        raise CheckpointError(f"{path}: not a readable ONNX model ({str(e)[:300]})") from e
    if "fakescope" not in props:
        return None
    meta = checked_meta(props["fakescope"], path, kinds=("timm", "probe"))
    if meta.get("format", ONNX_FORMAT) != ONNX_FORMAT:
        raise CheckpointError(
            f"{path}: not a fakescope export (format={str(meta.get('format'))[:60]!r})"
        )
    version = meta.get("export_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: its export_version is not an integer")
    return meta


def onnx_export_version(path: str | Path) -> int | None:
    """The ``export_version`` stored in an exported file (None: not a fakescope export).

    Raises:
        CheckpointError: an unreadable file or malformed metadata.
    """
    meta = _stored_meta(Path(path))
    return None if meta is None else int(meta.get("export_version", 1))


def load_onnx_detector(path: str | Path) -> Detector:
    """A detector backed by an exported ``.onnx`` file (kind ``onnx``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not an ONNX model, no or malformed fakescope metadata, or a graph that
            onnxruntime cannot load; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    meta = _stored_meta(path)
    if meta is None:
        raise CheckpointError(
            f"{path}: an ONNX file without fakescope metadata (export it with fakescope export)"
        )
    spec = DetectorSpec.from_dict(meta["spec"])
    spec.kind, spec.input_filter = "onnx", None  # the filter is inside the graph
    try:
        net = OnnxNet(path)
    except Exception as e:  # onnxruntime raises its own error types
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({str(e)[:300]})") from e
    det = Detector(net, spec)
    det.meta = meta
    return det
