"""ONNX export (fp32, or int8 through onnxruntime quantisation) and an ONNX-backed detector.

The exported file carries the checkpoint's JSON (preprocessing, calibration, threshold) in its
``metadata_props`` under ``fakescope``, so ``load_detector(model.onnx)`` needs nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec

logger = logging.getLogger(__name__)

INPUT, OUTPUT = "pixel_values", "logits"


class _Logits(nn.Module):
    """Detector forward (input filter included) with a ``[B]`` output, for tracing."""

    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.det(x)


def _export_fp32(det: Detector, path: Path, opset: int) -> None:
    size = det.spec.preprocessing.size
    det = det.float().eval().cpu()
    with torch.no_grad():
        torch.onnx.export(
            _Logits(det),
            (torch.randn(1, 3, size, size),),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def _add_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "fakescope", json.dumps(meta)
    onnx.save(model, str(path))


class _CalibrationReader:
    """Feeds preprocessed calibration images to onnxruntime's static quantiser."""

    def __init__(self, det: Detector, paths: Sequence[str]) -> None:
        from fakescope.data.images import load_image
        from fakescope.data.transforms import eval_transform

        tf = eval_transform(det.spec.preprocessing)
        self.items = iter([{INPUT: tf(load_image(p)).unsqueeze(0).numpy()} for p in paths])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _quantise(src: Path, dst: Path, det: Detector, calib: Sequence[str] | None) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = src.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    try:
        if calib:
            quantize_static(
                str(pre),
                str(dst),
                _CalibrationReader(det, calib),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            return f"static QDQ int8, calibrated on {len(calib)} images"
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
        return "dynamic int8 (weights only; give calibration images for static quantisation)"
    finally:
        pre.unlink(missing_ok=True)


def export_onnx(
    det: Detector,
    out: str | Path,
    int8: bool = False,
    calibration: Sequence[str] | None = None,
    opset: int = 17,
) -> Path:
    """Export a fine-tuned detector to ONNX; ``int8`` quantises it with onnxruntime."""
    if det.spec.kind != "timm":
        raise ValueError(
            f"ONNX export supports fine-tuned networks, not {det.spec.kind!r} detectors"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        k: v
        for k, v in det.meta.items()
        if k in ("config", "data", "best_epoch", "fakescope_version")
    }
    meta.update(
        {
            "format": "fakescope-onnx",
            "spec": det.spec.to_dict(),
            "precision": "int8" if int8 else "fp32",
        }
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _export_fp32(det, fp32, opset)
        final = fp32
        if int8:
            final = Path(tmp) / "int8.onnx"
            meta["quantisation"] = _quantise(fp32, final, det, calibration)
        _add_metadata(final, meta)
        os.replace(final, out)
    return out


class OnnxNet(nn.Module):
    """Runs an exported detector with onnxruntime; same ``[B, 1]`` logits as the torch network."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run([OUTPUT], {INPUT: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).reshape(-1, 1)


def load_onnx_detector(path: str | Path) -> Detector:
    """A detector backed by an exported ``.onnx`` file (kind ``onnx``)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "fakescope" not in props:
        raise ValueError(
            f"{path}: an ONNX file without fakescope metadata (export it with fakescope export)"
        )
    meta = json.loads(props["fakescope"])
    spec = DetectorSpec.from_dict(meta["spec"])
    spec.kind, spec.input_filter = "onnx", None  # the filter is inside the graph
    det = Detector(OnnxNet(path), spec)
    det.meta = meta
    return det.eval()
