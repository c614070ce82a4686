"""Fixed activation scales for an int8 ONNX encoder: the same embedding alone or in a batch.

An int8 file exported with dynamic quantisation puts a ``DynamicQuantizeLinear`` before each
int8 matmul: one activation scale per ``session.run``, computed from the whole batch, so an
image's embedding depends on its batch mates and such a file is run one image at a time.
:func:`fix_scales` replaces each of those nodes by a ``QuantizeLinear`` whose scale and zero point
were calibrated once (:func:`calibrate`: the mean over images of many sources of each tensor's
per-image minimum and maximum, the range the dynamic node would have used for one image). Every
image's embedding is then independent of the batch, and the encoder can run in batches.

The ranges belong to the encoder file: they are stored as JSON beside it or in the package
(``<file stem>.ranges.json``) with the file's sha256, and found by :func:`find_ranges`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.utils import cpu_count

#: tensor name -> (low, high) of the activations entering an int8 matmul
Ranges = dict[str, tuple[float, float]]
RANGES_FORMAT = "fakescope.activation-ranges/1"
_DYNAMIC = "DynamicQuantizeLinear"


class RangesError(ValueError):
    """A ranges file that cannot be read or does not fit the encoder."""


def dynamic_inputs(model: Any) -> list[str]:
    """Names of the tensors a ``DynamicQuantizeLinear`` quantises, in graph order."""
    return [n.input[0] for n in model.graph.node if n.op_type == _DYNAMIC]


def calibrate(
    path: str | Path, batches: Iterable[np.ndarray], threads: int | None = None
) -> Ranges:
    """Each dynamically quantised tensor's range in an int8 ONNX file: the mean of its
    per-image minimum and maximum.

    Args:
        path: the encoder file.
        batches: normalised image batches ``[B, 3, H, W]``; each image is run alone.
        threads: onnxruntime intra-op threads.

    Raises:
        RangesError: the model has no dynamically quantised tensors, or no image was given.
        ValueError: the file is not a loadable ONNX model (naming it).
    """
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    names = dynamic_inputs(model)
    if not names:
        raise RangesError(f"{path} has no DynamicQuantizeLinear nodes: nothing to calibrate")
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = _session(model.SerializeToString(), threads)
    feed = session.get_inputs()[0].name
    lows: list[list[float]] = []
    highs: list[list[float]] = []
    for batch in batches:
        for image in np.asarray(batch, dtype=np.float32):
            outs = session.run(names, {feed: image[None]})
            lows.append([float(o.min()) for o in outs])
            highs.append([float(o.max()) for o in outs])
    if not lows:
        raise RangesError("no calibration images")
    lo, hi = np.mean(lows, axis=0), np.mean(highs, axis=0)
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi, strict=True)}


def fix_scales(model: Any, ranges: Mapping[str, tuple[float, float]]) -> None:
    """Replace every ``DynamicQuantizeLinear`` of ``model`` (in place) by a ``QuantizeLinear``
    with the scale and zero point of its calibrated range (uint8, as the dynamic node computes:
    the range widened to hold 0, 256 levels).

    Raises:
        RangesError: a quantised tensor has no range (the ranges are for another file).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    missing = [n for n in dynamic_inputs(model) if n not in ranges]
    if missing:
        raise RangesError(f"no calibrated range for {len(missing)} tensor(s), e.g. {missing[0]}")
    nodes = []
    for node in graph.node:
        if node.op_type != _DYNAMIC:
            nodes.append(node)
            continue
        scale, zero = scale_and_zero_point(*ranges[node.input[0]])
        _, scale_name, zero_name = node.output
        graph.initializer.append(numpy_helper.from_array(np.float32(scale), scale_name))
        graph.initializer.append(numpy_helper.from_array(np.uint8(zero), zero_name))
        nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [node.input[0], scale_name, zero_name],
                [node.output[0]],
                name=node.name,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)


def scale_and_zero_point(low: float, high: float) -> tuple[float, int]:
    """uint8 affine quantisation of ``[low, high]`` widened to hold 0 (ONNX's
    ``DynamicQuantizeLinear`` rule)."""
    f32 = np.float32
    low, high = f32(min(0.0, float(low))), f32(max(0.0, float(high)))
    scale = f32((high - low) / f32(255.0)) or f32(1.0)  # float32 throughout, as onnxruntime
    return float(scale), int(np.clip(np.round(-low / scale), 0, 255))


def ranges_digest(ranges: Mapping[str, tuple[float, float]]) -> str:
    """A short stable hash of the ranges (part of what an embedding is)."""
    blob = json.dumps({k: [float(a), float(b)] for k, (a, b) in sorted(ranges.items())})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def save_ranges(
    path: str | Path, ranges: Mapping[str, tuple[float, float]], meta: dict[str, Any]
) -> Path:
    """Write ranges as JSON with ``meta`` (which must name the encoder's ``sha256``)."""
    from fakescope.utils import atomic_write_text

    if "sha256" not in meta:
        raise RangesError("ranges need the encoder file's sha256 in meta")
    doc = {"format": RANGES_FORMAT, **meta, "ranges": {k: list(v) for k, v in ranges.items()}}
    atomic_write_text(Path(path), json.dumps(doc, indent=1) + "\n")
    return Path(path)


def read_ranges(path: str | Path) -> tuple[Ranges, dict[str, Any]]:
    """Ranges and their metadata from a file written by :func:`save_ranges`.

    Raises:
        RangesError: naming the file, when it is not such a file.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("format") != RANGES_FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {RANGES_FORMAT!r}")
        ranges = {str(k): (float(v[0]), float(v[1])) for k, v in doc.pop("ranges").items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise RangesError(f"{path}: not an activation-ranges file: {exc}") from exc
    return ranges, doc


def ranges_file(encoder: Path) -> Path:
    """Where an encoder's ranges live in the package (``zoo/<stem>.ranges.json``)."""
    return Path(__file__).resolve().parent.parent / "zoo" / f"{encoder.stem}.ranges.json"


def find_ranges(encoder: Path, sha256: str) -> Ranges | None:
    """The calibrated ranges for an encoder file, beside it or in the package, when their
    recorded sha256 matches the file's; None when there are none."""
    for candidate in (encoder.with_name(f"{encoder.stem}.ranges.json"), ranges_file(encoder)):
        if candidate.is_file():
            ranges, meta = read_ranges(candidate)
            if meta.get("sha256") == sha256:
                return ranges
    return None


def _session(model: bytes, threads: int | None) -> Any:
    """An onnxruntime CPU session on serialised model bytes (this module sits below
    :mod:`fakescope.embed.backbones`, whose sessions add the file name to errors)."""

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or cpu_count())
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
