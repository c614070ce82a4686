"""Choose how a checkpoint runs: torch (fp32 or bf16 autocast) or onnxruntime (fp32 or int8)."""

from __future__ import annotations

import logging
from pathlib import Path

from fakescope.models.checkpoint import load_detector
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def onnx_path_for(checkpoint: str | Path, precision: str) -> Path:
    """Where the exported ONNX file for a checkpoint and precision is cached (beside it)."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.{precision}.onnx")


def load_for_inference(
    checkpoint: str | Path,
    backend: str = "torch",
    precision: str = "auto",
    backbone_path: str | None = None,
) -> tuple[Detector, str]:
    """Load ``checkpoint`` for the backend and precision asked; return it with the amp mode to use.

    ONNX files are exported on first use and cached beside the checkpoint (``<stem>.<precision>.onnx``).
    """
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ValueError(f"backend must be one of {BACKENDS} and precision one of {PRECISIONS}")
    if Path(checkpoint).suffix.lower() == ".onnx":
        return load_detector(checkpoint), "off"
    det = load_detector(checkpoint, backbone_path=backbone_path)
    if backend == "torch":
        if precision == "int8":
            raise ValueError("int8 runs on the onnx backend: use --backend onnx --precision int8")
        return det, {"auto": "auto", "fp32": "off", "bf16": "bf16"}[precision]
    if precision == "bf16":
        raise ValueError(
            "onnxruntime's CPU provider has no bf16 kernels: use --backend torch --precision bf16"
        )
    prec = "int8" if precision == "int8" else "fp32"
    path = onnx_path_for(checkpoint, prec)
    if not path.exists():
        from fakescope.models.onnx_export import export_onnx

        logger.info("exporting %s to %s", checkpoint, path)
        export_onnx(det, path, int8=prec == "int8")
    return load_detector(path), "off"
