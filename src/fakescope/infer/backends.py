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

    ONNX files are exported on first use and cached beside the checkpoint (``<stem>.<precision>.onnx``);
    a cached file older than the checkpoint, or from an older exporter, is exported again. int8 is
    calibrated on the training images of the run that made the checkpoint when they are on disk;
    otherwise it falls back to dynamic quantisation (run ``fakescope export --int8 --calibration
    DATA`` for static int8 then).
    """
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ValueError(f"backend must be one of {BACKENDS} and precision one of {PRECISIONS}")
    from fakescope.zoo import builtin_path, is_builtin

    if is_builtin(checkpoint):
        checkpoint = builtin_path(checkpoint)
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
    if _stale(path, Path(checkpoint)):
        from fakescope.models.onnx_export import calibration_images, export_onnx

        calib = calibration_images(det) if prec == "int8" else None
        logger.info("exporting %s to %s", checkpoint, path)
        export_onnx(det, path, int8=prec == "int8", calibration=calib)
    return load_detector(path), "off"


def _stale(onnx_file: Path, checkpoint: Path) -> bool:
    """Whether a cached export is missing, older than its checkpoint or from an older exporter."""
    from fakescope.models.onnx_export import EXPORT_VERSION, onnx_export_version

    if not onnx_file.is_file():
        return True
    if onnx_file.stat().st_mtime < checkpoint.stat().st_mtime:
        return True
    try:
        return onnx_export_version(onnx_file) != EXPORT_VERSION
    except Exception:  # an unreadable cache is redone, not trusted
        return True
