"""The one door to open a detector for scoring: :class:`DetectorRef` and :func:`open_detector`.

A reference says which detector (a checkpoint, an exported ``.onnx`` or ``builtin:NAME``) and how
it runs: torch (fp32 or bf16 autocast) or onnxruntime (fp32 or int8), and where a probe's frozen
backbone file is. Every command, the server, the Ray actors and :func:`fakescope.predict` open
detectors here.

On the onnx backend, fine-tuned networks are exported on first use and cached; a fusion detector
has its fine-tuned members exported the same way, and probes keep their backbone as stored (the
CLIP tower the probes use is already an onnxruntime model).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a detector is opened, so the CLI's parser stays light
    from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def onnx_path_for(checkpoint: str | Path, precision: str, member: int | None = None) -> Path:
    """Where the exported ONNX file for a checkpoint (or one fusion member) is cached.

    Beside the checkpoint (``<stem>.<precision>.onnx``, ``<stem>.member<i>.<precision>.onnx``)
    when that folder is writable; for built-in detectors and read-only folders, under
    ``$FAKESCOPE_CACHE/onnx`` (default ``~/.cache/fakescope/onnx``), named with a hash of the
    checkpoint's path.
    """
    from fakescope.utils import cache_dir

    p = Path(checkpoint)
    name = f"{p.stem}{'' if member is None else f'.member{member}'}.{precision}.onnx"
    resolved = p.resolve()
    in_package = _PACKAGE_DIR in resolved.parents
    if not in_package and os.access(resolved.parent, os.W_OK):
        return p.with_name(name)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    return cache_dir("onnx") / f"{digest}-{name}"


@dataclass(frozen=True)
class DetectorRef:
    """Which detector to open, and how it runs.

    Attributes:
        ref: a ``.safetensors`` checkpoint, an exported ``.onnx`` file or ``builtin:NAME``.
        backend: ``torch`` or ``onnx`` (fine-tuned networks are exported on first use and cached).
        precision: ``auto`` (bf16 autocast where the CPU has it, on torch), ``fp32``, ``bf16``
            (torch) or ``int8`` (onnx).
        backbone_path: for probe detectors, where the frozen backbone file is now.
    """

    ref: str
    backend: str = "torch"
    precision: str = "auto"
    backbone_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", str(self.ref))
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if Path(self.ref).suffix.lower() == ".onnx":
            return  # an exported file runs as it was exported
        if self.backend == "torch" and self.precision == "int8":
            raise ValueError("int8 runs on the onnx backend: use --backend onnx --precision int8")
        if self.backend == "onnx" and self.precision == "bf16":
            raise ValueError(
                "onnxruntime's CPU provider has no bf16 kernels: use --backend torch --precision bf16"
            )

    @property
    def amp(self) -> str:
        """The autocast mode a :class:`~fakescope.infer.predictor.Predictor` should use."""
        if self.backend == "onnx" or Path(self.ref).suffix.lower() == ".onnx":
            return "off"
        return {"auto": "auto", "fp32": "off", "bf16": "bf16"}[self.precision]


@dataclass(frozen=True)
class ResolvedDetector:
    """A :class:`DetectorRef` resolved once: its file, its validated header and its backbone file.

    Attributes:
        ref: what was asked for (``ref.ref`` as the user wrote it).
        file: the checkpoint or exported ``.onnx`` file behind it (a built-in's file in the
            package).
        meta: the checkpoint's header, its spec checked (None for an exported ``.onnx``, which
            carries its own).
        backbone_path: a probe's frozen backbone file as found here (or fetched), else
            ``ref.backbone_path``.
    """

    ref: DetectorRef
    file: Path
    meta: dict[str, Any] | None
    backbone_path: str | None


def as_ref(
    detector: DetectorRef | str | Path,
    backend: str = "torch",
    precision: str = "auto",
    backbone_path: str | None = None,
) -> DetectorRef:
    """A :class:`DetectorRef` as it is, or one made from a path or ``builtin:NAME`` and the run
    options (the one place a string becomes a reference)."""
    if isinstance(detector, DetectorRef):
        return detector
    return DetectorRef(str(detector), backend, precision, backbone_path)


def resolve(ref: DetectorRef | str | Path) -> ResolvedDetector:
    """Resolve a detector reference once: ``builtin:NAME`` to its file, the header read and its
    spec checked, a probe's backbone file found (or fetched). Nothing here imports torch, so a
    missing or malformed file is reported in well under a second.

    Raises:
        CheckpointError: the file is missing, unreadable or malformed (the message names it).
        FileNotFoundError: an unknown built-in, or a backbone file that is nowhere here.
    """
    from fakescope.models.header import read_meta
    from fakescope.models.probe import backbone_file
    from fakescope.zoo import detector_file

    ref = as_ref(ref)
    file = detector_file(ref.ref)
    if file.suffix.lower() == ".onnx":
        return ResolvedDetector(ref, file, None, ref.backbone_path)
    meta = read_meta(file)
    backbone = meta["spec"].get("model_kwargs", {}).get("backbone")
    if not isinstance(backbone, dict) or backbone.get("type") != "onnx":
        return ResolvedDetector(ref, file, meta, ref.backbone_path)  # found when it is built
    return ResolvedDetector(ref, file, meta, backbone_file(backbone, ref.backbone_path))


def open_detector(ref: DetectorRef | ResolvedDetector | str | Path) -> Detector:
    """Open a detector for scoring, on the backend and at the precision ``ref`` asks for.

    ``ref`` is resolved first (:func:`resolve`) unless it already is. ONNX files are exported on
    first use and cached (see :func:`onnx_path_for`); a cached file older than the checkpoint, or
    from an older exporter, is exported again. Static int8 is calibrated on training images of the
    run that made the checkpoint (its ``splits.csv``); when they are gone, export with
    ``fakescope export --int8 --calibration DATA`` and pass the ``.onnx``. Fusion members without
    calibration images run as fp32 ONNX, with a warning. The detector is in eval mode; run it with
    ``amp=ref.amp``. Its ``source`` is ``ref.ref``, so its
    :attr:`~fakescope.models.detector.Detector.display_name` is what the user named.
    """
    from fakescope.models.checkpoint import load_detector

    r = ref if isinstance(ref, ResolvedDetector) else resolve(ref)
    if r.meta is None:
        det = load_detector(r.file)
    else:
        det = _on_backend(
            load_detector(r.file, backbone_path=r.backbone_path, meta=r.meta), r.ref, r.file
        )
    det.source = r.ref.ref  # named as the user named it, not by the file behind it or its export
    return det


def _on_backend(det: Detector, ref: DetectorRef, checkpoint: Path) -> Detector:
    """A loaded checkpoint's detector on the backend ``ref`` asks for (fine-tuned networks and
    fusion members exported to ONNX; probes keep their backbone as stored)."""
    if ref.backend == "torch":
        return det
    prec = "int8" if ref.precision == "int8" else "fp32"
    if det.torch_network:
        return _onnx_member(det, checkpoint, prec, None, strict=True)
    for i, m in enumerate(det.members):
        if m.torch_network:
            m.meta = m.meta or det.meta  # the fusion's run names its calibration images
            det.set_member(i, _onnx_member(m, checkpoint, prec, i, strict=False))
    if not det.members:
        logger.info("%s: its backbone runs as stored on the onnx backend", det.spec.arch)
    return det


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
    from fakescope.models.checkpoint import load_detector

    return load_detector(path)


def _stale(onnx_file: Path, checkpoint: Path) -> bool:
    """Whether a cached export is missing, older than its checkpoint or from an older exporter."""
    from fakescope.models.onnx_net import EXPORT_VERSION, onnx_export_version

    if not onnx_file.is_file():
        return True
    if onnx_file.stat().st_mtime < checkpoint.stat().st_mtime:
        return True
    try:
        return onnx_export_version(onnx_file) != EXPORT_VERSION
    except Exception:  # an unreadable cache is redone, not trusted
        return True
