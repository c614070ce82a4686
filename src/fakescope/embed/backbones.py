"""Frozen feature extractors (ONNX files or timm networks) that turn image batches into vectors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.data.transforms import Preprocessing
from fakescope.embed.base import (
    ONNX_POOLS,
    Backbone,
    _as_batch,
    _check_pool,
    _chunks,
    _pool_tokens,
)
from fakescope.embed.deltas import Delta, deltas_digest
from fakescope.embed.quant import Ranges, RangesError, find_ranges, fix_scales, ranges_digest
from fakescope.utils import cpu_count, file_digest

logger = logging.getLogger(__name__)

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
CLIP_PREPROCESSING = Preprocessing(
    size=224,
    interpolation="bicubic",
    mean=CLIP_MEAN,
    std=CLIP_STD,
    crop_pct=1.0,
    resize_mode="resize",
)

# A transformer block's input is what its first LayerNorm reads: HF-exported ViTs (CLIP
# included) name that node ".../layers.<k>/layer_norm1/ReduceMean", timm ViTs exported with
# opset 14 (the rebuilt CLIP tower, see fakescope.embed.weights) ".../blocks.<k>/norm1/ReduceMean".
_BLOCK_INPUT = re.compile(r"(?:layers|blocks)\.(\d+)/(?:layer_norm1|norm1)/ReduceMean$")


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


class OnnxBackbone(Backbone):
    """An ONNX image encoder run with onnxruntime on the CPU.

    Args:
        path: the ``.onnx`` file.
        pool: ``embed`` (the ``embed_output`` vector) or ``cls``, ``patch_mean``, ``cls_patch``
            (from the hidden-state output, index 0 taken as CLS and the rest as patches), or
            ``layers``: the CLS token after each transformer block in ``layers``, each
            L2-normalised, concatenated and scaled to unit length (intermediate blocks keep the
            low-level evidence that the last one abstracts away; RINE, Koutlis & Papadopoulos,
            ECCV 2024). The graph is given those tensors as extra outputs when it is opened.
            ``tokens``: every token after the one block in ``layers``, flattened to
            ``T * C`` numbers: the input of the blocks after it, cached once when only those
            blocks are tuned (:mod:`fakescope.train.tune`).
        embed_output: the output holding the final embedding.
        hidden_output: the ``[B, T, C]`` hidden-state output; None picks the only 3-D output.
        layers: for ``layers``, block indices from 0 (default: every block).
        preprocessing: how images are prepared for this model (CLIP's by default).
        batch_size: images per ``session.run``; incoming batches are split into chunks of it.
        threads: onnxruntime intra-op threads (default: all CPU cores).
        deltas: low-rank weight deltas of a tuned tower, written into the graph when it is
            opened (:mod:`fakescope.embed.deltas`); part of what the embedding is.
        activations: for an int8 file with dynamically quantised activations, ``dynamic`` runs
            it as exported (one image per run, since its scales depend on the batch);
            ``fixed`` uses the activation ranges calibrated for this file
            (:mod:`fakescope.embed.quant`, a RangesError when there are none); ``auto`` uses
            them where they exist. Given ranges are used as they are. With fixed ranges an
            embedding does not depend on its batch, and ``batch_size`` is honoured.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a loadable ONNX model, lacks the outputs the pool needs, or
            a delta does not fit it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        pool: str = "embed",
        embed_output: str = "image_embeds",
        hidden_output: str | None = None,
        preprocessing: Preprocessing = CLIP_PREPROCESSING,
        batch_size: int = 1,
        threads: int | None = None,
        layers: Sequence[int] | None = None,
        deltas: Mapping[str, Delta] | None = None,
        activations: str | Mapping[str, tuple[float, float]] = "dynamic",
    ) -> None:
        _check_pool(pool, ONNX_POOLS, "ONNX")
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        self.pool = pool
        self.preprocessing = preprocessing
        self.sha256 = file_digest(self.path)
        dynamic = quantises_per_batch(self.path)
        self.ranges = _activation_ranges(activations, self.path, self.sha256, dynamic)
        self.ranges_sha256 = ranges_digest(self.ranges) if self.ranges else None
        self.per_batch_quantised = dynamic and not self.ranges
        # Activations quantised per run make an image's embedding depend on its batch mates.
        self.batch_size = 1 if self.per_batch_quantised else max(1, int(batch_size))
        self.layers: list[int] | None = None
        self.layer_outputs: list[str] = []
        self.deltas = dict(deltas) if deltas else None
        self.deltas_sha256 = deltas_digest(self.deltas) if self.deltas else None
        taps = pool in ("layers", "tokens")
        if pool == "tokens" and (layers is None or len(layers) != 1):
            raise ValueError("pool 'tokens' takes exactly one block index in layers")
        if taps or self.deltas or self.ranges:
            self._session, self.layers, self.layer_outputs = _open_edited(
                self.path,
                self.deltas,
                layers if taps else None,
                hidden_output,
                threads,
                taps,
                self.ranges,
                self.sha256,
            )
        else:
            self._session = _open_session(self.path, threads)
        self._input = _single_input_name(self._session, self.path)
        shapes = {o.name: o.shape for o in self._session.get_outputs()}
        self.embed_output = embed_output
        self.hidden_output = hidden_output
        if taps:
            self._fetch = self.layer_outputs
        elif pool == "embed":
            _require_output(shapes, embed_output, self.path)
            self._fetch = embed_output
        else:
            self.hidden_output = hidden_output or _pick_hidden_output(shapes, self.path)
            _require_output(shapes, self.hidden_output, self.path)
            self._fetch = self.hidden_output
        logger.debug("opened %s (pool=%s, output=%s)", self.path, pool, self._fetch)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embed a normalised batch, ``batch_size`` images per run; returns float32 ``[B, D]``."""
        arr = _as_batch(x)
        parts = [self._embed_chunk(chunk) for chunk in _chunks(arr, self.batch_size)]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    def _embed_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Run the session on one chunk and pool its output."""
        if self.pool == "layers":
            outs = self._session.run(self.layer_outputs, {self._input: chunk})
            return _layer_cls(outs, str(self.path))
        if self.pool == "tokens":
            (out,) = self._session.run(self.layer_outputs, {self._input: chunk})
            return np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1)
        (out,) = self._session.run([self._fetch], {self._input: chunk})
        out = np.asarray(out, dtype=np.float32)
        if self.pool == "embed":
            return out.reshape(out.shape[0], -1)
        return _pool_tokens(out, self.pool, num_prefix=1, source=str(self.path))

    def spec(self) -> dict[str, Any]:
        """Type, path, sha256, pool, output names, preprocessing and batch size."""
        return {
            "type": "onnx",
            "path": str(self.path),
            "sha256": self.sha256,
            "pool": self.pool,
            "embed_output": self.embed_output,
            "hidden_output": self.hidden_output,
            "outputs": self._fetch if isinstance(self._fetch, list) else [self._fetch],
            "layers": self.layers,
            "layer_outputs": self.layer_outputs or None,
            "preprocessing": self.preprocessing.to_dict(),
            "batch_size": self.batch_size,
            **({"deltas_sha256": self.deltas_sha256} if self.deltas_sha256 else {}),
            **({"activations": f"fixed:{self.ranges_sha256}"} if self.ranges_sha256 else {}),
        }


def _activation_ranges(
    activations: str | Mapping[str, tuple[float, float]], path: Path, sha256: str, dynamic: bool
) -> Ranges | None:
    """The fixed activation ranges an :class:`OnnxBackbone` runs with, or None (as exported)."""
    if not isinstance(activations, str):
        return dict(activations) if dynamic else None
    if activations not in ("dynamic", "fixed", "auto"):
        raise ValueError(f"activations must be dynamic, fixed or auto, not {activations!r}")
    if activations == "dynamic" or not dynamic:
        return None
    found = find_ranges(path, sha256)
    if found is None and activations == "fixed":
        raise RangesError(
            f"{path}: no calibrated activation ranges for this file (sha256 {sha256[:12]}...); "
            "make them with fakescope.embed.quant.calibrate, or use activations='dynamic'"
        )
    return found


def quantises_per_batch(path: Path) -> bool:
    """Whether an ONNX file quantises activations at run time (``DynamicQuantizeLinear``).

    Such a model computes one scale per ``session.run``, so it is run one image at a time to make
    every embedding independent of the other images in the batch. The op name is looked for in
    the file's bytes, which needs no ``onnx`` package.
    """
    needle, tail = b"DynamicQuantizeLinear", b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
    return False


def _open_session(path: Path, threads: int | None, model: bytes | None = None) -> Any:
    """An onnxruntime CPU session (of ``model`` bytes when given), or a ValueError naming the file
    when it is not ONNX."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or cpu_count())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        source = model if model is not None else str(path)
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc


def block_outputs(model: Any, hidden_output: str | None = None) -> list[str]:
    """Names of the tensors leaving each transformer block of an ONNX ViT, in block order.

    Block ``k``'s output is block ``k + 1``'s input, found by its first LayerNorm's node name
    (:data:`_BLOCK_INPUT`); the last block's output is the model's 3-D hidden-state output.
    """
    inputs = {}
    for node in model.graph.node:
        m = _BLOCK_INPUT.search(node.name)
        if m:
            inputs[int(m.group(1))] = node.input[0]
    if not inputs:
        raise ValueError("no transformer blocks found (no '.../layers.<k>/layer_norm1' nodes)")
    names = [inputs[k] for k in sorted(inputs) if k > 0]
    if hidden_output is None:
        three_d = [o.name for o in model.graph.output if len(o.type.tensor_type.shape.dim) == 3]
        if len(three_d) != 1:
            raise ValueError(f"cannot tell the last block's output among outputs {three_d}")
        hidden_output = three_d[0]
    return [*names, hidden_output]


def edited_model(
    path: Path,
    deltas: Mapping[str, Delta] | None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Any:
    """The ONNX ``ModelProto`` of ``path`` with ``deltas`` written in and its activations fixed
    to ``ranges`` (a ValueError naming the file when it is not ONNX or an edit does not fit)."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a core dependency
        raise RuntimeError("pool 'layers' and tuned towers need the onnx package") from exc
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    if deltas:
        from fakescope.embed.deltas import DeltaError, apply_deltas

        try:
            apply_deltas(model, deltas)
        except DeltaError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    if ranges:
        try:
            fix_scales(model, ranges)
        except RangesError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    return model


def _open_edited(
    path: Path,
    deltas: Mapping[str, Delta] | None,
    layers: Sequence[int] | None,
    hidden_output: str | None,
    threads: int | None,
    block_outputs_wanted: bool,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    sha256: str | None = None,
) -> tuple[Any, list[int] | None, list[str]]:
    """A session on an edited graph: ``deltas`` written in, activations fixed to ``ranges``, and
    (for the ``layers`` pool) the chosen blocks' outputs added as outputs; with the block
    indices and output names.

    The edited graph is kept in the user cache (:func:`edited_cache_file`), so that the next
    open needs neither the ``onnx`` package nor the edit: a second of start-up."""
    key = {
        "sha256": sha256 or file_digest(path),
        "deltas": deltas_digest(deltas) if deltas else None,
        "ranges": ranges_digest(ranges) if ranges else None,
        "layers": None if layers is None else [int(k) for k in layers],
        "hidden_output": hidden_output,
        "block_outputs": block_outputs_wanted,
    }
    cached = edited_cache_file(path, key)
    done = _read_edit_record(cached, key)
    if done is not None:
        try:
            return _open_session(cached, threads), done["chosen"], done["wanted"]
        except ValueError:  # a damaged cache file: edit again
            logger.warning("edited graph %s does not load; editing %s again", cached, path)
    model = edited_model(path, deltas, ranges)
    chosen: list[int] | None = None
    wanted: list[str] = []
    if block_outputs_wanted:
        chosen, wanted = add_block_outputs(model, path, layers, hidden_output)
    blob = model.SerializeToString()
    _write_edit_record(cached, blob, {**key, "chosen": chosen, "wanted": wanted})
    return _open_session(path, threads, blob), chosen, wanted


def edited_cache_file(path: Path, key: Mapping[str, Any]) -> Path:
    """Where an edited graph of ``path`` is cached: ``<cache root>/onnx-edited/<stem>.<hash>.onnx``
    (with a ``.json`` record beside it of what the edit was)."""
    from fakescope.utils import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return cache_dir("onnx-edited") / f"{path.stem}.{digest}.onnx"


def _read_edit_record(cached: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of a cached edit when it is for ``key`` and its graph is there, else None."""
    try:
        record = json.loads(cached.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not cached.is_file() or any(record.get(k) != v for k, v in key.items()):
        return None
    return record


def _write_edit_record(cached: Path, blob: bytes, record: dict[str, Any]) -> None:
    """Cache an edited graph (best effort: a read-only or full disk only costs the next start)."""
    from fakescope.utils import atomic_write, atomic_write_text

    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda tmp: Path(tmp).write_bytes(blob))
        atomic_write_text(cached.with_suffix(".json"), json.dumps(record))
    except OSError as exc:
        logger.info("could not cache the edited graph at %s: %s", cached, exc)


def add_block_outputs(
    model: Any, path: Path, layers: Sequence[int] | None, hidden_output: str | None
) -> tuple[list[int], list[str]]:
    """Add the chosen blocks' outputs (``layers``: indices, None for all) to an ONNX ViT's
    outputs, in place; return the indices and the tensors' names."""
    import onnx

    try:
        names = block_outputs(model, hidden_output)
    except ValueError as exc:
        raise ValueError(
            f"{path}: pool 'layers' needs a ViT exported with block names: {exc}"
        ) from exc
    chosen = list(range(len(names))) if layers is None else [int(k) for k in layers]
    bad = [k for k in chosen if not -len(names) <= k < len(names)]
    if bad or not chosen:
        raise ValueError(f"{path}: layers {bad or chosen} outside the model's {len(names)} blocks")
    chosen = [k % len(names) for k in chosen]
    wanted = [names[k] for k in chosen]
    have = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return chosen, wanted


def _layer_cls(outs: Sequence[np.ndarray], source: str) -> np.ndarray:
    """Per-block CLS tokens, each L2-normalised, concatenated and scaled to unit length."""
    parts = []
    for out in outs:
        arr = np.asarray(out, dtype=np.float32)
        if arr.ndim != 3:
            raise ValueError(f"{source}: expected block outputs [B, T, C], got shape {arr.shape}")
        cls = arr[:, 0]
        parts.append(cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1) / np.sqrt(len(parts))


def _single_input_name(session: Any, path: Path) -> str:
    """The name of the model's only input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"{path}: expected one image input, found {len(inputs)}: {names}")
    return inputs[0].name


def _require_output(shapes: dict[str, Any], name: str, path: Path) -> None:
    """Raise a ValueError naming the file and its outputs when ``name`` is not among them."""
    if name not in shapes:
        raise ValueError(f"{path} has no output {name!r}; its outputs are {sorted(shapes)}")


def _pick_hidden_output(shapes: dict[str, Any], path: Path) -> str:
    """The only output declared 3-D ``[B, T, C]``; a ValueError when there is none or several."""
    three_d = [name for name, shape in shapes.items() if shape is not None and len(shape) == 3]
    if len(three_d) == 1:
        return three_d[0]
    if not three_d:
        raise ValueError(
            f"{path} has no 3-D hidden-state output [B, T, C] for cls/patch pooling; "
            f"its outputs are {sorted(shapes)}"
        )
    raise ValueError(f"{path} has several 3-D outputs {three_d}; choose one with hidden_output")


# --------------------------------------------------------------------------------------------
# Reopening
# --------------------------------------------------------------------------------------------


def open_backbone(
    spec: dict[str, Any],
    path: str | os.PathLike[str] | None = None,
    deltas: Mapping[str, Delta] | None = None,
) -> Backbone:
    """Rebuild a backbone from :meth:`Backbone.spec`.

    Args:
        spec: a stored spec.
        path: where the ONNX or weights file is now (found by
            :func:`fakescope.models.probe.backbone_file`); None: where the spec says.
        deltas: a tuned ONNX tower's deltas (stored with the detector; their sha256 must be the
            spec's ``deltas_sha256``).

    Returns:
        The backbone, checked against the stored sha256.

    Raises:
        FileNotFoundError: the model file is not where the spec (or ``path``) says.
        ValueError: an unknown type, or a file whose sha256 differs from the stored one.
    """
    kind = spec.get("type")
    if bool(deltas) != bool(spec.get("deltas_sha256")) or (
        deltas and deltas_digest(deltas) != spec.get("deltas_sha256")
    ):
        raise ValueError("the tuned tower's deltas are not the ones its spec was made with")
    if kind == "onnx":
        backbone: Backbone = _open_onnx_spec(spec, path, deltas)
    elif kind == "timm":
        backbone = _open_timm_spec(spec, path)
    else:
        raise ValueError(f"unknown backbone type {kind!r} in spec; expected 'onnx' or 'timm'")
    _check_sha(spec, backbone)
    return backbone


def _missing_file_error(spec: dict[str, Any], where: str) -> FileNotFoundError:
    """The error for a spec whose model file is not there."""
    from fakescope.embed.weights import missing_message

    return FileNotFoundError(missing_message(where, spec.get("sha256")))


def _open_onnx_spec(
    spec: dict[str, Any],
    path: str | os.PathLike[str] | None,
    deltas: Mapping[str, Delta] | None = None,
) -> OnnxBackbone:
    """The ONNX half of :func:`open_backbone` (finding a moved or missing file is
    :func:`fakescope.embed.fetch.ensure_file`'s business: callers pass what it found)."""
    where = str(path if path is not None else spec.get("path"))
    if not Path(where).is_file():
        raise _missing_file_error(spec, where)
    fixed = spec.get("activations")
    backbone = OnnxBackbone(
        where,
        pool=spec.get("pool", "embed"),
        embed_output=spec.get("embed_output") or "image_embeds",
        hidden_output=spec.get("hidden_output"),
        preprocessing=Preprocessing.from_dict(spec.get("preprocessing", {})),
        batch_size=int(spec.get("batch_size") or 1),
        layers=spec.get("layers"),
        deltas=deltas,
        activations="fixed" if fixed else "dynamic",
    )
    if fixed and fixed != f"fixed:{backbone.ranges_sha256}":
        raise RangesError(
            f"{where}: the detector was made with activation ranges {fixed[6:]}, but this "
            f"installation's ranges for the file are {backbone.ranges_sha256}"
        )
    return backbone


def _open_timm_spec(spec: dict[str, Any], path: str | os.PathLike[str] | None) -> Backbone:
    """The timm half of :func:`open_backbone`."""
    from fakescope.embed.timm_backbone import TimmBackbone

    weights = path if path is not None else spec.get("weights")
    if weights is not None and not Path(weights).is_file():
        raise _missing_file_error(spec, str(weights))
    backbone = TimmBackbone(
        spec["name"],
        weights=weights,
        pretrained=bool(spec.get("pretrained", False)),
        pool=spec.get("pool", "embed"),
        layers=spec.get("layers"),
        img_size=spec.get("img_size"),
        batch_size=int(spec.get("batch_size") or 32),
    )
    stored = spec.get("preprocessing")
    if stored and Preprocessing.from_dict(stored) != backbone.preprocessing:
        logger.warning(
            "%s: timm now resolves preprocessing %s, the spec stored %s; using the stored one",
            spec["name"],
            backbone.preprocessing.to_dict(),
            stored,
        )
        backbone.preprocessing = Preprocessing.from_dict(stored)
    return backbone


def _check_sha(spec: dict[str, Any], backbone: Backbone) -> None:
    """Raise when the reopened file is not the one the spec was made with."""
    from fakescope.embed.weights import accepted_sha256

    want = spec.get("sha256")
    got = getattr(backbone, "sha256", None)
    where = getattr(backbone, "path", None) or getattr(backbone, "weights", None)
    if want and got and want not in accepted_sha256(where, got):
        raise ValueError(
            f"{where} has sha256 {got}, but the embeddings were made with a file of sha256 {want}"
        )


_HUB_SCHEMES = ("hf-hub", "hf_hub", "local-dir")


def open_backbone_arg(
    arg: str, pool: str = "embed", layers: Sequence[int] | None = None
) -> Backbone:
    """Open a backbone from a command-line value.

    Args:
        arg: a path to an ``.onnx`` file, a timm model name (pretrained weights are downloaded),
            or ``name:weights_path`` such as ``mobilenetv2_100:/path/w.safetensors``.
        pool: the pooling to use.
        layers: for ONNX ``layers`` pooling, the block indices (None: every block).

    Returns:
        An :class:`OnnxBackbone` or a :class:`TimmBackbone`.
    """
    text = arg.strip()
    if text.lower().endswith(".onnx"):
        return OnnxBackbone(text, pool=pool, layers=layers)
    from fakescope.embed.timm_backbone import TimmBackbone

    name, weights = _split_timm_arg(text)
    if weights is None:
        return TimmBackbone(name, pretrained=True, pool=pool)
    return TimmBackbone(name, weights=weights, pool=pool)


def _split_timm_arg(text: str) -> tuple[str, str | None]:
    """Split ``name[:weights]``, keeping hub prefixes such as ``hf-hub:`` in the name."""
    prefix = ""
    scheme, sep, rest = text.partition(":")
    if sep and scheme in _HUB_SCHEMES:
        prefix, text = f"{scheme}:", rest
    name, sep, weights = text.partition(":")
    if not name:
        raise ValueError(f"no model name in backbone argument {text!r}")
    return prefix + name, (weights or None) if sep else None
