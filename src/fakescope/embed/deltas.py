"""Low-rank weight deltas written into an ONNX image tower: a fine-tuned tower without torch.

A tower tuned with Effort or LoRA (:mod:`fakescope.models.adapters`) differs from the frozen
one by ``W' = W + B @ A`` in a few matrices, with ``A [k, in]`` and ``B [out, k]`` of rank ``k``
of one to a few dozen. :func:`apply_deltas` writes those deltas into the graph of the int8 file
the built-ins already use, so the tuned tower runs in onnxruntime like the frozen one and a
detector stores kilobytes instead of a second 90 MB file:

* an fp32 ``MatMul`` with a constant weight gets the delta folded into the weight (exact);
* an int8 ``MatMulInteger`` (dynamic quantisation) keeps its int8 weight and gains an fp32 side
  branch ``x @ Aᵀ @ Bᵀ`` added to its output before the bias, so the delta is not rounded away
  by the weight's quantisation step.

Deltas are keyed by timm's module names (``blocks.10.attn.qkv``, ``blocks.10.attn.proj``,
``blocks.10.mlp.fc1``). Graphs exported from Hugging Face's CLIP name the same matrices
``layers.10.self_attn.{q,k,v}_proj`` (a fused ``qkv`` delta is split by rows) and
``layers.10.self_attn.out_proj``; both exporters are understood.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

Delta = tuple[np.ndarray, np.ndarray]  # (A [k, in], B [out, k])

_TIMM_KEY = re.compile(r"^blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)$")
_HF_NAMES = {"attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


class DeltaError(ValueError):
    """A delta that does not fit the graph: an unknown matrix, or the wrong shape."""


def module_path(node_name: str) -> str:
    """The module a node belongs to: ``/vision_model/.../q_proj/MatMul_quant`` -> ``...q_proj``."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def deltas_digest(deltas: Mapping[str, Delta]) -> str:
    """A sha256 over the keys and the values (float32, C order): what the deltas are."""
    h = hashlib.sha256()
    for key in sorted(deltas):
        a, b = deltas[key]
        h.update(key.encode("utf-8"))
        for arr in (a, b):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            h.update(str(arr.shape).encode("utf-8"))
            h.update(arr.tobytes())
    return h.hexdigest()


def _targets(key: str, a: np.ndarray, b: np.ndarray) -> list[tuple[re.Pattern[str], Delta]]:
    """Node-path patterns for a timm key, each with its share of the delta (both exporters)."""
    m = _TIMM_KEY.match(key)
    if m is None:
        raise DeltaError(f"unknown delta target {key!r} (expected e.g. 'blocks.11.attn.qkv')")
    k, name = m.group(1), m.group(2)
    timm_pat = re.compile(rf"(?:^|\.)blocks\.{k}\.{re.escape(name)}$")
    if name == "attn.qkv":
        rows = b.shape[0] // 3
        hf = [
            (
                re.compile(rf"(?:^|\.)layers\.{k}\.self_attn\.{c}_proj$"),
                (a, b[i * rows : (i + 1) * rows]),
            )
            for i, c in enumerate("qkv")
        ]
    else:
        hf = [(re.compile(rf"(?:^|\.)layers\.{k}\.{re.escape(_HF_NAMES[name])}$"), (a, b))]
    return [(timm_pat, (a, b)), *hf]


def apply_deltas(model: Any, deltas: Mapping[str, Delta]) -> Any:
    """Write ``deltas`` into an ONNX ``ModelProto`` in place (see the module); return it.

    Raises:
        DeltaError: a key that matches no matrix of the graph, or a delta of the wrong shape.
    """
    from onnx import numpy_helper

    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "MatMulInteger")]
    inits = {i.name: i for i in model.graph.initializer}
    for key, (a, b) in deltas.items():
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise DeltaError(f"{key}: A {a.shape} and B {b.shape} are not a low-rank pair")
        done = 0
        for pattern, (aa, bb) in _targets(key, a, b):
            for node in nodes:
                if node.input[1] not in inits or not pattern.search(module_path(node.name)):
                    continue
                if node.op_type == "MatMul":
                    _fold(inits[node.input[1]], aa, bb, key, numpy_helper)
                else:
                    _branch(model, node, aa, bb, f"{key}.{done}", numpy_helper)
                done += 1
            if done:
                break  # one exporter's names matched; do not look for the other's
        if not done:
            raise DeltaError(f"{key}: no such matrix in this ONNX graph")
    _sort_topologically(model.graph)
    return model


def _fold(init: Any, a: np.ndarray, b: np.ndarray, key: str, numpy_helper: Any) -> None:
    """``W [in, out] += (B A)ᵀ`` for an fp32 weight."""
    w = numpy_helper.to_array(init).astype(np.float32)
    if w.shape != (a.shape[1], b.shape[0]):
        raise DeltaError(f"{key}: a delta of {b.shape[0]}x{a.shape[1]} for a {w.shape} weight")
    init.CopyFrom(numpy_helper.from_array((w + (b @ a).T).astype(np.float32), init.name))


def _branch(
    model: Any, node: Any, a: np.ndarray, b: np.ndarray, tag: str, numpy_helper: Any
) -> None:
    """Add ``x @ Aᵀ @ Bᵀ`` to an int8 matmul's fp32 output (before its bias)."""
    from onnx import helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    quant = producers.get(node.input[0])
    if quant is None or quant.op_type != "DynamicQuantizeLinear":
        raise DeltaError(f"{tag}: {node.name} does not read a dynamically quantised input")
    x = quant.input[0]
    out = _scaled_output(graph, node)
    prefix = f"fakescope_delta/{tag}"
    inits = {i.name: i for i in graph.initializer}
    w_shape = tuple(numpy_helper.to_array(inits[node.input[1]]).shape)
    if w_shape != (a.shape[1], b.shape[0]):
        raise DeltaError(f"{tag}: a delta of {b.shape[0]}x{a.shape[1]} for a {w_shape} weight")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.ascontiguousarray(a.T), f"{prefix}/At"),
            numpy_helper.from_array(np.ascontiguousarray(b.T), f"{prefix}/Bt"),
        ]
    )
    new_out = f"{prefix}/out"
    for consumer in graph.node:
        for i, name in enumerate(consumer.input):
            if name == out:
                consumer.input[i] = new_out
    graph.node.extend(
        [
            helper.make_node("MatMul", [x, f"{prefix}/At"], [f"{prefix}/xa"], name=f"{prefix}/xa"),
            helper.make_node(
                "MatMul", [f"{prefix}/xa", f"{prefix}/Bt"], [f"{prefix}/d"], name=f"{prefix}/d"
            ),
            helper.make_node("Add", [out, f"{prefix}/d"], [new_out], name=f"{prefix}/add"),
        ]
    )
    _sort_topologically(graph)


def _scaled_output(graph: Any, node: Any) -> str:
    """The fp32 output of an int8 matmul: ``MatMulInteger -> Cast -> Mul(scale)``."""
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    cast = [n for n in consumers.get(node.output[0], []) if n.op_type == "Cast"]
    muls = [n for n in consumers.get(cast[0].output[0], []) if n.op_type == "Mul"] if cast else []
    if len(muls) != 1:
        raise DeltaError(f"{node.name}: not the MatMulInteger -> Cast -> Mul pattern")
    return muls[0].output[0]


def _sort_topologically(graph: Any) -> None:
    """Reorder nodes so each comes after the producers of its inputs (ONNX requires it)."""
    produced = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(not i or i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise DeltaError("the graph has a cycle or an input nobody produces")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
