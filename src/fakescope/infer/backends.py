"""Choose how a checkpoint runs: torch (fp32 or bf16 autocast) or onnxruntime (fp32 or int8).

On the onnx backend, fine-tuned networks are exported on first use and cached; a fusion detector
has its fine-tuned members exported the same way, and probes keep their backbone as stored (the
CLIP tower the probes use is already an onnxruntime model).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from fakescope.models.checkpoint import load_detector
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _user_cache() -> Path:
    env = os.environ.get("FAKESCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fakescope"


def onnx_path_for(checkpoint: str | Path, precision: str, member: int | None = None) -> Path:
    """Where the exported ONNX file for a checkpoint (or one fusion member) is cached.

    Beside the checkpoint (``<stem>.<precision>.onnx``, ``<stem>.member<i>.<precision>.onnx``)
    when that folder is writable; for built-in detectors and read-only folders, under
    ``$FAKESCOPE_CACHE/onnx`` (default ``~/.cache/fakescope/onnx``), named with a hash of the
    checkpoint's path.
    """
    p = Path(checkpoint)
    name = f"{p.stem}{'' if member is None else f'.member{member}'}.{precision}.onnx"
    resolved = p.resolve()
    in_package = _PACKAGE_DIR in resolved.parents
    if not in_package and os.access(resolved.parent, os.W_OK):
        return p.with_name(name)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    return _user_cache() / "onnx" / f"{digest}-{name}"


def load_for_inference(
    checkpoint: str | Path,
    backend: str = "torch",
    precision: str = "auto",
    backbone_path: str | None = None,
) -> tuple[Detector, str]:
    """Load ``checkpoint`` for the backend and precision asked; return it with the amp mode to use.

    ONNX files are exported on first use and cached (see :func:`onnx_path_for`); a cached file
    older than the checkpoint, or from an older exporter, is exported again. Static int8 is
    calibrated on training images of the run that made the checkpoint (its ``splits.csv``); when
    they are gone, export with ``fakescope export --int8 --calibration DATA`` and pass the
    ``.onnx``. Fusion members without calibration images run as fp32 ONNX, with a warning.
    """
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ValueError(f"backend must be one of {BACKENDS} and precision one of {PRECISIONS}")
    from fakescope.zoo import builtin_path, is_builtin

    if is_builtin(checkpoint):
        checkpoint = builtin_path(checkpoint)
    checkpoint = Path(checkpoint)
    if checkpoint.suffix.lower() == ".onnx":
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
    if det.spec.kind == "timm":
        return _onnx_member(det, checkpoint, prec, None, strict=True), "off"
    if det.spec.kind == "fusion":
        members = det.net.members
        for i, m in enumerate(members):
            if m.spec.kind == "timm":
                m.meta = m.meta or det.meta  # the fusion's run names its calibration images
                members[i] = _onnx_member(m, checkpoint, prec, i, strict=False)
        return det, "off"
    logger.info("%s detector: its backbone runs as stored on the onnx backend", det.spec.kind)
    return det, "off"


def _onnx_member(
    det: Detector, checkpoint: Path, prec: str, member: int | None, strict: bool
) -> Detector:
    """The ONNX-backed version of a fine-tuned network, exported now if the cache is stale."""
    from fakescope.models.onnx_export import calibration_images, export_onnx

    calib = calibration_images(det) if prec == "int8" else None
    if prec == "int8" and not calib:
        if strict:
            raise ValueError(
                f"{checkpoint}: int8 needs calibration images and the run's training images "
                "are not on disk; run `fakescope export CHECKPOINT --int8 --calibration DATA` "
                "and pass the .onnx file as --detector"
            )
        logger.warning(
            "%s: no calibration images for member %s; it runs as fp32 ONNX", checkpoint, member
        )
        prec = "fp32"
    path = onnx_path_for(checkpoint, prec, member)
    if _stale(path, checkpoint):
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s to %s", checkpoint, path)
        export_onnx(det, path, int8=prec == "int8", calibration=calib)
    return load_detector(path)


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
