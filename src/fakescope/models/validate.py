"""Checks on checkpoint metadata before anything is built from it: a checkpoint is untrusted input.

A checkpoint's JSON says which network to build and with which arguments. Unchecked, a hostile or
corrupt file could pass ``checkpoint_path`` to ``timm.create_model`` (which loads the file it
names), ask for a network of tens of gigabytes, point a probe at any file on the machine, or
crash the loader with a raw ``KeyError``. Every check here raises
:class:`~fakescope.models.errors.CheckpointError` naming the file and the reason, and runs on the
JSON alone: before any other file is opened or any tensor allocated.

* Structure: the metadata is a JSON object nested at most :data:`MAX_NESTING` deep; the spec and
  every field the loader reads have the right types and finite, bounded values
  (:func:`check_spec`).
* Allow-lists of what metadata may pass to constructors, per kind: :data:`TIMM_KWARGS` (what
  fakescope itself writes: ``img_size`` for transformers), :data:`PROBE_KWARGS`,
  :data:`FUSION_KWARGS` (members checked recursively, at most :data:`MAX_FUSION_DEPTH` deep).
* Size: :func:`spec_elements` counts the parameters and buffers a spec would build (timm networks
  are built on torch's ``meta`` device, which allocates nothing); loading refuses more than
  :data:`MAX_PARAMS`.
* Probe backbones: the stored file is only a name to look up as documented (as stored, else by
  file name in ``$FAKESCOPE_WEIGHTS`` and the user cache), with the extension of its type
  (:data:`BACKBONE_SUFFIXES`); timm backbones must be timm's own model names (no hub downloads
  named by a checkpoint).

This module imports neither torch nor timm, so :func:`fakescope.models.header.read_meta` stays
cheap; the timm count is passed in by the caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from fakescope.models.errors import CheckpointError

#: Most parameters plus buffers a checkpoint may make fakescope build (8 GB in float32): twice
#: the largest network in timm's ordinary catalogue (~1B, e.g. EVA giant), far below the 7B ones.
MAX_PARAMS = 2_000_000_000
#: Deepest nesting of lists and objects accepted in the metadata JSON.
MAX_NESTING = 64
#: Largest input size (pixels per side) for preprocessing and transformer ``img_size``.
MAX_IMG_SIZE = 2048
#: Largest probe embedding width.
MAX_DIM = 1 << 20
#: Most members in one fusion, and most levels of fusions inside fusions.
MAX_MEMBERS = 64
MAX_FUSION_DEPTH = 4

KINDS = ("timm", "probe", "fusion")
INPUT_FILTERS = ("npr",)
RESIZE_MODES = ("resize", "crop")
#: What checkpoint metadata may pass to each constructor (``model_kwargs`` keys).
TIMM_KWARGS = frozenset({"img_size"})
PROBE_KWARGS = frozenset({"backbone", "dim", "l2", "novelty", "tuning"})
#: A tuned probe's ``tuning``: the method, its rank, and each delta's ``[rank, in, out]``.
TUNING_KEYS = frozenset({"method", "rank", "deltas"})
#: At most this many tuned matrices, each of rank at most MAX_DELTA_RANK.
MAX_DELTAS = 512
MAX_DELTA_RANK = 4096
FUSION_KWARGS = frozenset({"method", "members"})
NOVELTY_KEYS = frozenset({"n", "dim", "k", "threshold", "dims"})
#: File name endings a probe's backbone file may have, per backbone type.
BACKBONE_SUFFIXES = {"onnx": (".onnx",), "timm": (".safetensors", ".pth", ".pt", ".bin")}

TimmCounter = Callable[[str, Mapping[str, Any], int], int]


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


class _Checker:
    """Field checks that raise :class:`CheckpointError` prefixed with the file's name."""

    def __init__(self, where: Any) -> None:
        self.where = where

    def fail(self, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: invalid fakescope metadata: {msg}")

    def obj(self, v: Any, field: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(f"{field} must be an object, not {_type(v)}")
        return v

    def integer(self, v: Any, field: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(f"{field} must be an integer, not {_type(v)}")
        if not lo <= v <= hi:
            raise self.fail(f"{field} = {v} is outside [{lo}, {hi}]")
        return v

    def number(self, v: Any, field: str, lo: float, hi: float, allow_inf: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(f"{field} must be a number, not {_type(v)}")
        try:
            x = float(v)
        except OverflowError:
            raise self.fail(f"{field} is too large") from None
        if math.isnan(x) or (math.isinf(x) and not allow_inf):
            raise self.fail(f"{field} must be finite, not {x}")
        if not (lo <= x <= hi or (allow_inf and math.isinf(x))):
            raise self.fail(f"{field} = {x} is outside [{lo}, {hi}]")
        return x

    def text(self, v: Any, field: str, optional: bool = False, max_len: int = 1000) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise self.fail(f"{field} must be a non-empty string, not {_type(v)}")
        if len(v) > max_len or "\x00" in v:
            raise self.fail(f"{field} is too long or holds a NUL character")
        return v

    def boolean(self, v: Any, field: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(f"{field} must be true or false, not {_type(v)}")
        return v

    def int_list(self, v: Any, field: str, max_len: int = 4096) -> list[int]:
        if not isinstance(v, list) or len(v) > max_len:
            raise self.fail(f"{field} must be a list of at most {max_len} integers")
        return [self.integer(x, f"{field}[{i}]", -MAX_DIM, MAX_DIM) for i, x in enumerate(v)]

    def str_list(self, v: Any, field: str, max_len: int = 4096) -> list[str]:
        if not isinstance(v, list) or len(v) > max_len:
            raise self.fail(f"{field} must be a list of at most {max_len} strings")
        return [self.text(x, f"{field}[{i}]") or "" for i, x in enumerate(v)]

    def keys(self, d: dict[str, Any], allowed: frozenset[str], field: str) -> None:
        extra = sorted(set(d) - allowed)
        if extra:
            shown = ", ".join(repr(k)[:60] for k in extra[:5])
            raise self.fail(
                f"{field} holds {shown}, which fakescope never writes (allowed: "
                f"{', '.join(sorted(allowed))})"
            )


def _nesting(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            items = list(v.values())
        elif isinstance(v, list):
            items = v
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((x, depth + 1) for x in items)
    return deepest


def parse_meta(text: Any, where: Any) -> dict[str, Any]:
    """The metadata JSON as an object, or a :class:`CheckpointError` saying why it is not one."""
    if not isinstance(text, str):
        raise CheckpointError(f"{where}: its fakescope metadata is not text")
    try:
        meta = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{where}: its fakescope metadata is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers too long to convert
        raise CheckpointError(f"{where}: its fakescope metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{where}: its fakescope metadata is a JSON {_type(meta)}, not an object"
        )
    if _nesting(meta) > MAX_NESTING:
        raise CheckpointError(
            f"{where}: its fakescope metadata is nested more than {MAX_NESTING} levels deep"
        )
    return meta


def check_preprocessing(v: Any, c: _Checker, field: str) -> None:
    """Types and bounds of a stored :class:`~fakescope.data.transforms.Preprocessing`."""
    d = c.obj(v, field)
    if "size" in d:
        c.integer(d["size"], f"{field}.size", 1, MAX_IMG_SIZE)
    if "interpolation" in d:
        c.text(d["interpolation"], f"{field}.interpolation", max_len=32)
    for key in ("mean", "std"):
        if key in d:
            vals = d[key]
            if not isinstance(vals, list) or len(vals) != 3:
                raise c.fail(f"{field}.{key} must be a list of 3 numbers")
            lo = 1e-6 if key == "std" else -1e6
            for i, x in enumerate(vals):
                c.number(x, f"{field}.{key}[{i}]", lo, 1e6)
    if "crop_pct" in d:
        c.number(d["crop_pct"], f"{field}.crop_pct", 0.1, 2.0)
    if "resize_mode" in d and d["resize_mode"] not in RESIZE_MODES:
        raise c.fail(f"{field}.resize_mode must be one of {RESIZE_MODES}")


def check_spec(spec: Any, where: Any, kinds: tuple[str, ...] = KINDS, depth: int = 0) -> None:
    """Check a stored :class:`~fakescope.models.detector.DetectorSpec` dict, members included.

    Raises:
        CheckpointError: a field of the wrong type or out of bounds, an unknown kind, or
            ``model_kwargs`` outside the kind's allow-list.
    """
    c = _Checker(where)
    field = "spec" if depth == 0 else f"member spec (level {depth})"
    s = c.obj(spec, field)
    kind = s.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise c.fail(f"{field}.kind = {str(kind)[:60]!r} is not one of {kinds}")
    c.text(s.get("arch"), f"{field}.arch", max_len=4000)
    c.number(s.get("threshold", 0.5), f"{field}.threshold", 0.0, 1.0)
    c.number(s.get("uncertain_band", 0.1), f"{field}.uncertain_band", 0.0, 1.0)
    cal = s.get("calibration")
    if cal is not None:
        c.obj(cal, f"{field}.calibration")
        for key in ("a", "b"):
            if key not in cal:
                raise c.fail(f"{field}.calibration has no {key!r}")
            c.number(cal[key], f"{field}.calibration.{key}", -1e6, 1e6)
    filt = s.get("input_filter")
    if filt is not None and filt not in INPUT_FILTERS:
        raise c.fail(f"{field}.input_filter = {str(filt)[:60]!r} is not one of {INPUT_FILTERS}")
    check_preprocessing(s.get("preprocessing", {}), c, f"{field}.preprocessing")
    kw = c.obj(s.get("model_kwargs", {}), f"{field}.model_kwargs")
    if kind == "timm":
        c.text(s["arch"], f"{field}.arch", max_len=200)
        c.keys(kw, TIMM_KWARGS, f"{field}.model_kwargs")
        if "img_size" in kw:
            c.integer(kw["img_size"], f"{field}.model_kwargs.img_size", 1, MAX_IMG_SIZE)
    elif kind == "probe":
        _check_probe_kwargs(kw, c, f"{field}.model_kwargs")
    elif kind == "fusion":
        c.keys(kw, FUSION_KWARGS, f"{field}.model_kwargs")
        c.text(kw.get("method"), f"{field}.model_kwargs.method", max_len=100)
        members = kw.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
            raise c.fail(f"{field}.model_kwargs.members must be a list of 1 to {MAX_MEMBERS} specs")
        if depth + 1 > MAX_FUSION_DEPTH:
            raise c.fail(f"fusions nest more than {MAX_FUSION_DEPTH} levels deep")
        for m in members:
            check_spec(m, where, KINDS, depth + 1)


def _check_probe_kwargs(kw: dict[str, Any], c: _Checker, field: str) -> None:
    c.keys(kw, PROBE_KWARGS, field)
    for key in ("backbone", "dim"):
        if key not in kw:
            raise c.fail(f"{field} has no {key!r}")
    dim = c.integer(kw["dim"], f"{field}.dim", 1, MAX_DIM)
    if "l2" in kw:
        c.boolean(kw["l2"], f"{field}.l2")
    _check_backbone(kw["backbone"], c, f"{field}.backbone")
    if kw.get("tuning") is not None:
        _check_tuning(kw["tuning"], kw["backbone"], c, f"{field}.tuning")
    nov = kw.get("novelty")
    if nov is None or nov == {}:
        return
    c.obj(nov, f"{field}.novelty")
    c.keys(nov, NOVELTY_KEYS, f"{field}.novelty")
    for key in ("n", "dim", "k", "threshold"):
        if key not in nov:
            raise c.fail(f"{field}.novelty has no {key!r}")
    c.integer(nov["n"], f"{field}.novelty.n", 1, MAX_PARAMS)
    ndim = c.integer(nov["dim"], f"{field}.novelty.dim", 1, MAX_DIM)
    c.integer(nov["k"], f"{field}.novelty.k", 1, 100_000)
    c.number(nov["threshold"], f"{field}.novelty.threshold", -10.0, 10.0, allow_inf=True)
    dims = nov.get("dims")
    if dims is None:
        if ndim != dim:
            raise c.fail(f"{field}.novelty.dim = {ndim} differs from the probe's dim = {dim}")
        return
    lo, hi = (c.int_list(dims, f"{field}.novelty.dims") + [0, 0])[:2]
    if len(dims) != 2 or not 0 <= lo < hi <= dim or hi - lo != ndim:
        raise c.fail(
            f"{field}.novelty.dims must be [start, stop] within the embedding, {ndim} wide"
        )


def _check_tuning(v: Any, backbone: dict[str, Any], c: _Checker, field: str) -> None:
    """A tuned probe: its method and rank, and a ``[rank, in, out]`` per delta (by module name)."""
    t = c.obj(v, field)
    c.keys(t, TUNING_KEYS, field)
    c.text(t.get("method"), f"{field}.method", max_len=32)
    c.integer(t.get("rank"), f"{field}.rank", 1, MAX_DELTA_RANK)
    deltas = c.obj(t.get("deltas"), f"{field}.deltas")
    if not 1 <= len(deltas) <= MAX_DELTAS:
        raise c.fail(f"{field}.deltas must name 1 to {MAX_DELTAS} matrices")
    for name, shape in deltas.items():
        c.text(name, f"{field}.deltas key", max_len=200)
        dims = c.int_list(shape, f"{field}.deltas[{name!r}]", max_len=3)
        if len(dims) != 3 or not 1 <= dims[0] <= MAX_DELTA_RANK or min(dims[1:]) < 1:
            raise c.fail(f"{field}.deltas[{name!r}] must be [rank, in, out] with positive sizes")
        if max(dims[1:]) > MAX_DIM:
            raise c.fail(f"{field}.deltas[{name!r}] is wider than {MAX_DIM}")
    if not backbone.get("deltas_sha256"):
        raise c.fail(f"{field} needs the backbone's deltas_sha256")


def _check_backbone(v: Any, c: _Checker, field: str) -> None:
    bb = c.obj(v, field)
    kind = bb.get("type")
    if not isinstance(kind, str) or kind not in BACKBONE_SUFFIXES:
        raise c.fail(f"{field}.type = {str(kind)[:60]!r} is not 'onnx' or 'timm'")
    file_key = "path" if kind == "onnx" else "weights"
    where = c.text(bb.get(file_key), f"{field}.{file_key}", optional=kind == "timm", max_len=4096)
    if where is not None and not where.lower().endswith(BACKBONE_SUFFIXES[kind]):
        raise c.fail(f"{field}.{file_key} must name a {' or '.join(BACKBONE_SUFFIXES[kind])} file")
    c.text(bb.get("sha256"), f"{field}.sha256", optional=True, max_len=128)
    c.text(bb.get("deltas_sha256"), f"{field}.deltas_sha256", optional=True, max_len=128)
    activations = c.text(bb.get("activations"), f"{field}.activations", optional=True, max_len=64)
    if activations is not None and not activations.startswith("fixed:"):
        raise c.fail(f"{field}.activations must be 'fixed:<ranges digest>'")
    c.text(bb.get("pool", "embed"), f"{field}.pool", max_len=32)
    for key in ("embed_output", "hidden_output"):
        c.text(bb.get(key), f"{field}.{key}", optional=True)
    for key in ("outputs", "layer_outputs"):
        if bb.get(key) is not None:
            c.str_list(bb[key], f"{field}.{key}")
    layers = bb.get("layers")
    if isinstance(layers, int) and not isinstance(layers, bool):
        c.integer(layers, f"{field}.layers", 1, 4096)
    elif layers is not None:
        c.int_list(layers, f"{field}.layers")
    if bb.get("batch_size") is not None:
        c.integer(bb["batch_size"], f"{field}.batch_size", 1, 4096)
    if bb.get("preprocessing") is not None:
        check_preprocessing(bb["preprocessing"], c, f"{field}.preprocessing")
    if kind == "timm":
        name = c.text(bb.get("name"), f"{field}.name", max_len=200) or ""
        if ":" in name or "/" in name:
            raise c.fail(f"{field}.name must be a timm model name (no hub references)")
        c.boolean(bb.get("pretrained", False), f"{field}.pretrained")
        if bb.get("img_size") is not None:
            c.integer(bb["img_size"], f"{field}.img_size", 1, MAX_IMG_SIZE)
        if bb.get("init_seed") is not None:
            c.integer(bb["init_seed"], f"{field}.init_seed", 0, 2**63 - 1)


def spec_elements(spec: dict[str, Any], count_timm: TimmCounter) -> int:
    """Parameters plus buffers a checked spec would build (``count_timm(name, kwargs, classes)``
    sizes a timm network without allocating it)."""
    kind, kw = spec["kind"], spec.get("model_kwargs", {})
    if kind == "timm":
        return count_timm(spec["arch"], kw, 1)
    if kind == "fusion":
        return len(kw["members"]) + 1 + sum(spec_elements(m, count_timm) for m in kw["members"])
    total = 3 * int(kw["dim"]) + 1  # probe: mean, scale, head weight, head bias
    for rank, n_in, n_out in ((kw.get("tuning") or {}).get("deltas") or {}).values():
        total += int(rank) * (int(n_in) + int(n_out))
    nov = kw.get("novelty")
    if nov:
        total += int(nov["n"]) * int(nov["dim"])
    bb = kw["backbone"]
    if bb["type"] == "timm":
        size = bb.get("img_size")
        total += count_timm(bb["name"], {} if size is None else {"img_size": size}, 0)
    return total


def check_size(spec: dict[str, Any], where: Any, count_timm: TimmCounter) -> int:
    """:func:`spec_elements`, refused above :data:`MAX_PARAMS`."""
    n = spec_elements(spec, count_timm)
    if n > MAX_PARAMS:
        raise CheckpointError(
            f"{where}: its spec would build {n:,} parameters, more than the limit of "
            f"{MAX_PARAMS:,} (fakescope.models.validate.MAX_PARAMS); refusing to allocate it"
        )
    return n
