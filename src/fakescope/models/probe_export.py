"""A probe detector as one ONNX file: its tower (tuned deltas written in), its features and its head.

A probe runs its ONNX tower in onnxruntime and its head (a dot product) in numpy. The exported
file does all of it in one graph: the tower's outputs, the pooling of the probe's ``pool``
(``embed``: the projected embedding; ``layers``: every block's CLS token, each L2-normalised,
concatenated and scaled), the probe's own L2 normalisation and standardisation, and the head,
with one output, ``logits [B, 1]``. It carries the detector's spec (calibration, threshold,
preprocessing) in its metadata, so ``load_detector(file.onnx)`` and ``--detector file.onnx``
need nothing else and no torch network. The out-of-depth guard is not in the graph: rows scored
with the file carry no ``novelty``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.models.detector import Detector

#: The graph's input and output (the same as every fakescope export).
INPUT, OUTPUT = "pixel_values", "logits"


def export_probe_onnx(det: Detector, out: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``det`` (a probe on an ONNX tower) as one ONNX file with ``meta`` in its metadata.

    Raises:
        ValueError: not a probe on an ONNX tower, or a pool this export does not know.
    """
    import onnx
    from onnx import helper, numpy_helper

    from fakescope.embed.backbones import add_block_outputs, edited_model

    net = det.net
    bb = net.backbone
    if det.spec.kind != "probe" or getattr(bb, "path", None) is None or bb.spec()["type"] != "onnx":
        raise ValueError("this export needs a probe detector on an ONNX image tower")
    if bb.pool not in ("embed", "layers"):
        raise ValueError(f"exporting a probe with pool {bb.pool!r} is not supported")
    model = edited_model(Path(bb.path), getattr(bb, "deltas", None), getattr(bb, "ranges", None))
    graph = model.graph
    if bb.pool == "layers":
        _, names = add_block_outputs(model, Path(bb.path), bb.layers, bb.hidden_output)
        feats = _layer_cls_nodes(graph, names, helper, numpy_helper)
    else:
        feats = bb.embed_output
    logits = _head_nodes(graph, feats, net, helper, numpy_helper)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, ["B", 1]))
    _rename_input(graph, bb)
    import json

    entry = model.metadata_props.add()
    entry.key, entry.value = "fakescope", json.dumps(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx", delete=False) as tmp:
        onnx.save(model, tmp.name)
    os.replace(tmp.name, out)
    return out


def _const(graph: Any, name: str, value: np.ndarray, numpy_helper: Any) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name


def _unit_rows(graph: Any, x: str, tag: str, helper: Any, numpy_helper: Any) -> str:
    """``x / max(||x||, 1e-12)`` over axis 1 (``ReduceL2`` with an ``axes`` attribute: opset < 18,
    as the towers fakescope knows are exported)."""
    eps = _const(graph, f"{tag}/eps", np.array(1e-12), numpy_helper)
    graph.node.extend(
        [
            helper.make_node("ReduceL2", [x], [f"{tag}/norm"], axes=[1], keepdims=1),
            helper.make_node("Max", [f"{tag}/norm", eps], [f"{tag}/safe"]),
            helper.make_node("Div", [x, f"{tag}/safe"], [f"{tag}/unit"]),
        ]
    )
    return f"{tag}/unit"


def _layer_cls_nodes(graph: Any, names: list[str], helper: Any, numpy_helper: Any) -> str:
    """Each block's CLS token, L2-normalised, concatenated, divided by sqrt(blocks)."""
    zero = "probe/cls_index"
    graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int64), zero))
    units = []
    for k, name in enumerate(names):
        tag = f"probe/block{k}"
        graph.node.append(helper.make_node("Gather", [name, zero], [f"{tag}/cls"], axis=1))
        units.append(_unit_rows(graph, f"{tag}/cls", tag, helper, numpy_helper))
    scale = _const(graph, "probe/scale_blocks", np.array(1 / np.sqrt(len(names))), numpy_helper)
    graph.node.extend(
        [
            helper.make_node("Concat", units, ["probe/cat"], axis=1),
            helper.make_node("Mul", ["probe/cat", scale], ["probe/features"]),
        ]
    )
    return "probe/features"


def _head_nodes(graph: Any, feats: str, net: Any, helper: Any, numpy_helper: Any) -> str:
    """The probe's head: (L2-normalise), standardise, dot with the weights, add the bias."""
    x = _unit_rows(graph, feats, "probe/l2", helper, numpy_helper) if net.l2 else feats
    mean = _const(graph, "probe/mean", net.mean, numpy_helper)
    scale = _const(graph, "probe/std", net.scale, numpy_helper)
    w = _const(graph, "probe/w", net.weight.reshape(-1, 1), numpy_helper)
    b = _const(graph, "probe/b", net.bias.reshape(1), numpy_helper)
    graph.node.extend(
        [
            helper.make_node("Sub", [x, mean], ["probe/centred"]),
            helper.make_node("Div", ["probe/centred", scale], ["probe/z"]),
            helper.make_node("MatMul", ["probe/z", w], ["probe/zw"]),
            helper.make_node("Add", ["probe/zw", b], [OUTPUT]),
        ]
    )
    return OUTPUT


def _rename_input(graph: Any, bb: Any) -> None:
    """Name the image input ``pixel_values``, as every fakescope export does."""
    old = graph.input[0].name
    if old == INPUT:
        return
    graph.input[0].name = INPUT
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = INPUT
