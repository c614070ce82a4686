"""ONNX export (fp32, or int8 through onnxruntime quantisation) and an ONNX-backed detector.

The exported file carries the checkpoint's JSON (preprocessing, calibration, threshold) in its
``metadata_props`` under ``fakescope``, so ``load_detector(model.onnx)`` needs nothing else.
"""

from __future__ import annotations

import copy
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

from fakescope.models.detector import Detector
from fakescope.models.onnx_net import EXPORT_VERSION, INPUT, ONNX_FORMAT, OUTPUT

logger = logging.getLogger(__name__)


class _Logits(nn.Module):
    """Detector forward (input filter included) with a ``[B]`` output, for tracing."""

    def __init__(self, det: Detector) -> None:
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.det(x)


class _StaticPadConv(nn.Module):
    """A TF-"same" convolution with its padding fixed for one input size (no shape ops in ONNX)."""

    def __init__(self, conv: nn.Conv2d, pad: list[int]) -> None:
        super().__init__()
        self.conv, self.pad = conv, [int(p) for p in pad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        x = nn.functional.pad(x, self.pad)
        return nn.functional.conv2d(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def freeze_same_padding(det: Detector, size: int) -> Detector:
    """A copy of ``det`` whose dynamic "same"-padding convs (timm ``tf_*`` models) use fixed pads.

    timm computes that padding from the input's shape at run time, which exports as a chain of
    Shape/Ceil/Pad ops per conv: slower, and it breaks onnxruntime's static quantiser. The input
    size is fixed at export, so the pads are constants.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    det = copy.deepcopy(det).float().eval().cpu()
    convs = {n: m for n, m in det.named_modules() if isinstance(m, Conv2dSame)}
    if not convs:
        return det
    sizes: dict[str, list[int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: sizes.__setitem__(n, list(a[0].shape[-2:])))
        for n, m in convs.items()
    ]
    with torch.no_grad():
        det(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, conv in convs.items():
        pad = pad_same_arg(sizes[name], conv.weight.shape[-2:], conv.stride, conv.dilation)
        parent, _, leaf = name.rpartition(".")
        setattr(det.get_submodule(parent) if parent else det, leaf, _StaticPadConv(conv, pad))
    return det


def _export_fp32(det: Detector, path: Path, opset: int) -> None:
    size = det.spec.preprocessing.size
    det = freeze_same_padding(det, size)
    with torch.no_grad():
        torch.onnx.export(
            _Logits(det).eval(),
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
    """Feeds preprocessed calibration images, one at a time, to onnxruntime's static quantiser.

    Unreadable files are skipped with a warning; they must not stop an export.
    """

    def __init__(self, det: Detector, paths: Sequence[str]) -> None:
        self.det, self.paths, self.used = det, list(paths), 0
        self.first_error: str | None = None
        self.items = self._iter()

    def _iter(self) -> Any:
        from fakescope.data.images import ImageLoadError, load_image
        from fakescope.data.transforms import eval_transform

        tf = eval_transform(self.det.spec.preprocessing)
        for p in self.paths:
            try:
                x = tf(load_image(p)).unsqueeze(0).numpy()
            except ImageLoadError as e:
                logger.warning("calibration: skipping %s", e)
                self.first_error = self.first_error or str(e)
                continue
            self.used += 1
            yield {INPUT: x}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def _keep_fp32(model_path: Path) -> list[str]:
    """Nodes left in fp32: the first conv (raw pixels) and the classifier head.

    They hold a sliver of the compute and most of the quantisation error (measured on the dev
    set: AUC change -0.0009 with them in int8, -0.0005 without, at about the same speed).
    """
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    first_conv = [n.name for n in nodes if n.op_type == "Conv"][:1]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    return first_conv + head


def _quantise(src: Path, dst: Path, det: Detector, calib: Sequence[str] | None) -> str:
    """int8 with onnxruntime: static (calibrated, fast on VNNI CPUs) or, without images, dynamic.

    Static quantisation uses the QOperator format (QLinearConv and friends, which onnxruntime runs
    on its int8 kernels), per-channel int8 weights and uint8 activations with MinMax ranges.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = src.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    try:
        if calib:
            reader = _CalibrationReader(det, calib)
            try:
                quantize_static(
                    str(pre),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QOperator,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=_keep_fp32(pre),
                )
            except Exception as e:
                if reader.used == 0:
                    raise ValueError(
                        f"no calibration image could be read (of {len(reader.paths)} given; "
                        f"first: {reader.first_error})"
                    ) from e
                raise
            return f"static int8 (QOperator, per-channel), calibrated on {reader.used} images"
        logger.warning(
            "int8 without calibration images: dynamic quantisation, which is slow for CNNs; "
            "give calibration images (fakescope export --int8 --calibration DATA) for static int8"
        )
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
    """Export a detector to ONNX: a fine-tuned network (``int8`` quantises it with onnxruntime),
    or a probe on an ONNX tower as one file (:mod:`fakescope.models.probe_export`)."""
    if det.spec.kind == "probe":
        if int8:
            raise ValueError("a probe's tower is exported as it is stored (int8): drop --int8")
        from fakescope.models.probe_export import export_probe_onnx

        meta = {k: v for k, v in det.meta.items() if k in ("bench", "fakescope_version")}
        meta.update(
            {"format": ONNX_FORMAT, "spec": det.spec.to_dict(), "export_version": EXPORT_VERSION}
        )
        return export_probe_onnx(det, out, meta)
    if det.spec.kind != "timm":
        raise ValueError(
            f"ONNX export supports fine-tuned networks and probes, not {det.spec.kind!r} detectors"
        )
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=out.parent).cleanup()
    except OSError as e:
        raise ValueError(f"{out}: cannot write here ({e.strerror or e})") from None
    meta = {
        k: v
        for k, v in det.meta.items()
        if k in ("config", "data", "best_epoch", "fakescope_version")
    }
    meta.update(
        {
            "format": ONNX_FORMAT,
            "spec": det.spec.to_dict(),
            "precision": "int8" if int8 else "fp32",
            "export_version": EXPORT_VERSION,
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


def calibration_images(det: Detector, n: int = 128, seed: int = 0) -> list[str]:
    """Up to ``n`` training-split images of the run that made ``det``, if they are still on disk.

    Static int8 needs images like the ones the model will see; the run's own ``splits.csv``
    (written by ``fakescope train``) names them. Returns ``[]`` when the run or files are gone.
    """
    import pandas as pd

    out = (det.meta.get("config") or {}).get("out")
    splits = Path(out) / "splits.csv" if out else None
    if splits is None or not splits.is_file():
        return []
    try:
        df = pd.read_csv(splits)
        df = df[df["split"] == "train"] if "split" in df else df
        paths = [p for p in df["path"].astype(str) if Path(p).is_file()]
    except (OSError, ValueError, KeyError) as e:
        logger.warning("%s: cannot read calibration images: %s", splits, e)
        return []
    return sample_paths(paths, n, seed)


def sample_paths(paths: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """A seeded sample of up to ``n`` of ``paths``, kept in their original order."""
    picked = np.random.default_rng(seed).permutation(len(paths))[:n]
    return [paths[i] for i in sorted(picked)]
