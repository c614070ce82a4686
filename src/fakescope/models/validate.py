"""Checks on checkpoint metadata before anything is built from it: a checkpoint is untrusted input.

A checkpoint's JSON says which network to build and with which arguments. Unchecked, a hostile or
corrupt file could pass ``checkpoint_path`` to ``timm.create_model`` (which loads the file it
names), ask for a network of tens of gigabytes, point a probe at any file on the machine, or
crash the loader with a raw ``KeyError``. Every check here raises
:class:`~fakescope.models.errors.CheckpointError` naming the file and the reason, and runs on the
JSON alone: before any other file is opened or any tensor allocated.

* Structure: the metadata is a JSON object nested at most :data:`MAX_NESTING` deep; the spec is
  described by pydantic models in strict mode, :data:`Spec` (keyed on ``kind``: :class:`TimmSpec`,
  :class:`ProbeSpec`, :class:`FusionSpec`, which differ in their ``model_kwargs``), so every field
  the loader reads has the right type and a finite, bounded value (:func:`check_spec`). An error
  names the file and the field: ``FILE: field spec.model_kwargs.dim: must be an integer, not str``.
* Allow-lists of what metadata may pass to constructors, per kind: the fields of
  :class:`TimmKwargs` (what fakescope itself writes: ``img_size`` for transformers),
  :class:`ProbeKwargs`, :class:`FusionKwargs` (members checked as specs, at most
  :data:`MAX_FUSION_DEPTH` fusions deep); any other key is refused.
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

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from fakescope.config import INPUT_FILTERS, RESIZE_MODES  # declared with the training options
from fakescope.models.detector import DetectorSpec
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

#: At most this many tuned matrices, each of rank at most MAX_DELTA_RANK.
MAX_DELTAS = 512
MAX_DELTA_RANK = 4096
#: File name endings a probe's backbone file may have, per backbone type.
BACKBONE_SUFFIXES = {"onnx": (".onnx",), "timm": (".safetensors", ".pth", ".pt", ".bin")}

TimmCounter = Callable[[str, Mapping[str, Any], int], int]


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


# --------------------------------------------------------------------------- field types
# Each raises ValueError with the reason; check_spec prefixes the file and the field's path.


def _bounded(lo: float, hi: float, allow_inf: bool = False) -> Callable[[float], float]:
    def check(x: float) -> float:
        if math.isnan(x) or (math.isinf(x) and not allow_inf):
            raise ValueError(f"must be finite, not {x}")
        if not (lo <= x <= hi or (allow_inf and math.isinf(x))):
            raise ValueError(f"{x} is outside [{lo}, {hi}]")
        return x

    return check


def _text_check(max_len: int) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not v:
            raise ValueError("must be a non-empty string, not an empty one")
        if len(v) > max_len or "\x00" in v:
            raise ValueError("is too long or holds a NUL character")
        return v

    return check


def Int(lo: int, hi: int) -> Any:  # noqa: N802  (a type, read as one)
    """An integer (not a bool) in ``[lo, hi]``."""
    return Annotated[int, Strict(), AfterValidator(_bounded(lo, hi))]


def Number(lo: float, hi: float, allow_inf: bool = False) -> Any:  # noqa: N802
    """A finite number (an integer or a float, not a bool) in ``[lo, hi]`` (``allow_inf``: or
    infinite)."""
    return Annotated[float, Strict(), AfterValidator(_bounded(lo, hi, allow_inf))]


def Text(max_len: int = 1000) -> Any:  # noqa: N802
    """A non-empty string of at most ``max_len`` characters, without NUL."""
    return Annotated[str, Strict(), AfterValidator(_text_check(max_len))]


def _suffix(endings: tuple[str, ...]) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not v.lower().endswith(endings):
            raise ValueError(f"must name a {' or '.join(endings)} file")
        return v

    return check


def _no_hub(name: str) -> str:
    if ":" in name or "/" in name:
        raise ValueError("must be a timm model name (no hub references)")
    return name


def _fixed_activations(v: str) -> str:
    if not v.startswith("fixed:"):
        raise ValueError("must be 'fixed:<ranges digest>'")
    return v


def _layers(v: Any) -> Any:
    """A layer count in [1, 4096] or a list of at most 4096 layer indices."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not 1 <= v <= 4096:
            raise ValueError(f"{v} is outside [1, 4096]")
    elif not (
        isinstance(v, list)
        and len(v) <= 4096
        and all(isinstance(x, int) and not isinstance(x, bool) and abs(x) <= MAX_DIM for x in v)
    ):
        raise ValueError(f"must be an integer or a list of at most 4096 integers, not {_type(v)}")
    return v


def _delta_shape(dims: list[int]) -> list[int]:
    if len(dims) != 3 or not 1 <= dims[0] <= MAX_DELTA_RANK or min(dims[1:]) < 1:
        raise ValueError("must be [rank, in, out] with positive sizes")
    if max(dims[1:]) > MAX_DIM:
        raise ValueError(f"is wider than {MAX_DIM}")
    return dims


IntList = Annotated[list[Int(-MAX_DIM, MAX_DIM)], Field(max_length=4096)]
TextList = Annotated[list[Text()], Field(max_length=4096)]
Triple = Annotated[list[Number(-1e6, 1e6)], Field(min_length=3, max_length=3)]
PositiveTriple = Annotated[list[Number(1e-6, 1e6)], Field(min_length=3, max_length=3)]


# --------------------------------------------------------------------------------- the spec
class _Open(BaseModel):
    """A stored object whose other keys are ignored (as the loader ignores them)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _AllowListed(_Open):
    """A stored object that is passed on to a constructor: only its declared keys may be there
    (the allow-list is the fields)."""

    @model_validator(mode="before")
    @classmethod
    def _only_declared(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = sorted((k for k in data if k not in cls.model_fields), key=str)
            if extra:
                shown = ", ".join(repr(k)[:60] for k in extra[:5])
                raise ValueError(
                    f"holds {shown}, which fakescope never writes (allowed: "
                    f"{', '.join(sorted(cls.model_fields))})"
                )
        return data


class PreprocessingSchema(_Open):
    """A stored :class:`~fakescope.data.transforms.Preprocessing` (missing keys: its defaults)."""

    size: Int(1, MAX_IMG_SIZE) = None
    interpolation: Text(32) = None
    mean: Triple = None
    std: PositiveTriple = None
    crop_pct: Number(0.1, 2.0) = None
    resize_mode: Literal[RESIZE_MODES] = None  # type: ignore[valid-type]


class Calibration(_Open):
    """Platt scaling of the logit: ``sigmoid(a * logit + b)``."""

    a: Number(-1e6, 1e6)
    b: Number(-1e6, 1e6)


class _Backbone(_Open):
    """What a probe's frozen backbone is and where its file is looked for."""

    sha256: Text(128) | None = None
    deltas_sha256: Text(128) | None = None
    activations: Annotated[Text(64), AfterValidator(_fixed_activations)] | None = None
    pool: Text(32) = "embed"
    embed_output: Text() | None = None
    hidden_output: Text() | None = None
    outputs: TextList | None = None
    layer_outputs: TextList | None = None
    layers: Annotated[Any, AfterValidator(_layers)] | None = None
    batch_size: Int(1, 4096) | None = None
    preprocessing: PreprocessingSchema | None = None


class OnnxBackbone(_Backbone):
    """An ONNX image encoder; ``path`` is only a name to look up (as stored, else by file name)."""

    type: Literal["onnx"]
    path: Annotated[Text(4096), AfterValidator(_suffix(BACKBONE_SUFFIXES["onnx"]))]


class TimmBackbone(_Backbone):
    """A timm network by timm's own name (no hub references), with optional local weights."""

    type: Literal["timm"]
    name: Annotated[Text(200), AfterValidator(_no_hub)]
    weights: Annotated[Text(4096), AfterValidator(_suffix(BACKBONE_SUFFIXES["timm"]))] | None = None
    pretrained: bool = False
    img_size: Int(1, MAX_IMG_SIZE) | None = None
    init_seed: Int(0, 2**63 - 1) | None = None


Backbone = Annotated[OnnxBackbone | TimmBackbone, Field(discriminator="type")]


class Tuning(_AllowListed):
    """A tuned probe: its method and rank, and each delta's ``[rank, in, out]`` by module name."""

    method: Text(32)
    rank: Int(1, MAX_DELTA_RANK)
    deltas: Annotated[
        dict[Text(200), Annotated[list[Int(-MAX_DIM, MAX_DIM)], AfterValidator(_delta_shape)]],
        Field(min_length=1, max_length=MAX_DELTAS),
    ]


class Novelty(_AllowListed):
    """The out-of-depth guard: a bank of ``n`` training embeddings, ``dim`` wide (columns
    ``dims`` of the probe's embedding, else all of it)."""

    n: Int(1, MAX_PARAMS)
    dim: Int(1, MAX_DIM)
    k: Int(1, 100_000)
    threshold: Number(-10.0, 10.0, allow_inf=True)
    dims: IntList | None = None


def _empty_is_none(v: Any) -> Any:
    return None if v == {} else v


class TimmKwargs(_AllowListed):
    """What a timm network may be built with from a checkpoint (``img_size`` for transformers)."""

    img_size: Int(1, MAX_IMG_SIZE) = None


class ProbeKwargs(_AllowListed):
    """A logistic head on a frozen backbone's embeddings."""

    backbone: Backbone
    dim: Int(1, MAX_DIM)
    l2: bool = False
    novelty: Annotated[Novelty | None, BeforeValidator(_empty_is_none)] = None
    tuning: Tuning | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ProbeKwargs:
        if self.tuning is not None and not self.backbone.deltas_sha256:
            raise ValueError("tuning needs the backbone's deltas_sha256")
        nov = self.novelty
        if nov is None:
            return self
        if nov.dims is None:
            if nov.dim != self.dim:
                raise ValueError(
                    f"novelty.dim = {nov.dim} differs from the probe's dim = {self.dim}"
                )
        elif (
            len(nov.dims) != 2
            or not 0 <= nov.dims[0] < nov.dims[1] <= self.dim
            or (nov.dims[1] - nov.dims[0] != nov.dim)
        ):
            raise ValueError(
                f"novelty.dims must be [start, stop] within the embedding, {nov.dim} wide"
            )
        return self


class FusionKwargs(_AllowListed):
    """Members (themselves specs) and how their logits combine."""

    method: Text(100)
    members: Annotated[list[Spec], Field(min_length=1, max_length=MAX_MEMBERS)]


class _SpecBase(_Open):
    """A stored :class:`~fakescope.models.detector.DetectorSpec` (other keys are ignored)."""

    arch: Text(4000)
    # a stored spec's missing values are DetectorSpec's own defaults (declared there, once)
    threshold: Number(0.0, 1.0) = DetectorSpec.threshold
    uncertain_band: Number(0.0, 1.0) = DetectorSpec.uncertain_band
    calibration: Calibration | None = None
    input_filter: Literal[INPUT_FILTERS] | None = None  # type: ignore[valid-type]
    preprocessing: PreprocessingSchema = Field(default_factory=dict, validate_default=True)


class TimmSpec(_SpecBase):
    """A fine-tuned timm network."""

    kind: Literal["timm"]
    arch: Text(200)
    model_kwargs: TimmKwargs = Field(default_factory=dict, validate_default=True)


class ProbeSpec(_SpecBase):
    """A probe on a frozen backbone."""

    kind: Literal["probe"]
    model_kwargs: ProbeKwargs = Field(default_factory=dict, validate_default=True)


class FusionSpec(_SpecBase):
    """A combination of detectors."""

    kind: Literal["fusion"]
    model_kwargs: FusionKwargs = Field(default_factory=dict, validate_default=True)


#: A stored spec, by its ``kind``.
Spec = Annotated[TimmSpec | ProbeSpec | FusionSpec, Field(discriminator="kind")]
FusionKwargs.model_rebuild()
KINDS = ("timm", "probe", "fusion")
#: What checkpoint metadata may pass to each constructor (``model_kwargs`` keys).
TIMM_KWARGS = frozenset(TimmKwargs.model_fields)
PROBE_KWARGS = frozenset(ProbeKwargs.model_fields)
FUSION_KWARGS = frozenset(FusionKwargs.model_fields)
#: A tuned probe's ``tuning``: the method, its rank, and each delta's ``[rank, in, out]``.
TUNING_KEYS = frozenset(Tuning.model_fields)
NOVELTY_KEYS = frozenset(Novelty.model_fields)


@functools.cache
def _spec_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(Spec)


# --------------------------------------------------------------------------------- checking
_TYPE_WORDS = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a non-empty string",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
}
_TAGS = {"timm", "probe", "fusion", "onnx"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``spec.model_kwargs.members[0].arch`` from pydantic's location (without the kind tags
    that a discriminated union adds)."""
    out = "spec"
    prev: int | str | None = None
    for part in loc:
        tag = isinstance(part, str) and part in _TAGS
        if tag and (prev is None or isinstance(prev, int) or prev == "backbone"):
            prev = part
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
        prev = part
    return out


def _reason(err: Any) -> tuple[str, str]:
    """The field's path and why its value is refused, for one pydantic error."""
    kind, loc, value, ctx = err["type"], tuple(err["loc"]), err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return _field_path(loc[:-1]), f"has no {loc[-1]!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        name = str(ctx.get("discriminator", "'kind'")).strip("'")
        path = f"{_field_path(loc)}.{name}"
        if kind == "union_tag_not_found":
            return _field_path(loc), f"has no {name!r}"
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        return path, f"{str(ctx.get('tag'))[:60]!r} is not {_one_of(tags)}"
    if kind in _TYPE_WORDS:
        return _field_path(loc), f"{_TYPE_WORDS[kind]}, not {_type(value)}"
    if kind == "literal_error":
        return _field_path(loc), f"{str(value)[:60]!r} is not {ctx.get('expected', '')}"
    if kind == "too_short":
        return _field_path(loc), f"must hold at least {ctx.get('min_length')} items"
    if kind == "too_long":
        return _field_path(loc), f"must hold at most {ctx.get('max_length')} items"
    return _field_path(loc), str(err["msg"]).removeprefix("Value error, ")


def _one_of(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _fusion_depth(spec: Any) -> int:
    """How many fusions nest in a stored spec (iterative: no recursion)."""
    deepest, stack = 0, [(spec, 0)]
    while stack:
        s, depth = stack.pop()
        if not isinstance(s, dict) or s.get("kind") != "fusion":
            continue
        deepest = max(deepest, depth + 1)
        members = (
            s.get("model_kwargs", {}).get("members")
            if isinstance(s.get("model_kwargs"), dict)
            else None
        )
        if isinstance(members, list) and deepest <= MAX_FUSION_DEPTH:
            stack.extend((m, depth + 1) for m in members)
    return deepest


def check_spec(spec: Any, where: Any, kinds: tuple[str, ...] = KINDS) -> None:
    """Check a stored :class:`~fakescope.models.detector.DetectorSpec` dict, members included,
    against :data:`Spec` (the models above, keyed on ``kind``).

    Raises:
        CheckpointError: ``"{where}: field spec.x.y: reason"`` for a field of the wrong type or out
            of bounds, an unknown kind (or one not in ``kinds``), or ``model_kwargs`` outside the
            kind's allow-list (the first few problems, separated by ``;``).
    """
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if isinstance(kind, str) and kind not in kinds:
        raise CheckpointError(
            f"{where}: field spec.kind: {kind[:60]!r} is not {_one_of(list(kinds))}"
        )
    if _fusion_depth(spec) > MAX_FUSION_DEPTH:
        raise CheckpointError(
            f"{where}: field spec.model_kwargs.members: fusions nest more than "
            f"{MAX_FUSION_DEPTH} levels deep"
        )
    try:
        _spec_adapter().validate_python(spec)
    except ValidationError as e:
        reasons = [": ".join(_reason(err)) for err in e.errors(include_url=False)[:3]]
        more = e.error_count() - len(reasons)
        tail = f" (and {more} more)" if more > 0 else ""
        raise CheckpointError(f"{where}: field {'; field '.join(reasons)}{tail}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # not a field's fault
        raise CheckpointError(f"{where}: its detector spec cannot be read ({e})") from None


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
