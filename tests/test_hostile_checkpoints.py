"""Checkpoints are untrusted input: hostile or malformed metadata gives a CheckpointError naming
the file, before any other file is opened or any large allocation, and never a raw traceback."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from safetensors.torch import save_file

from fakescope.models import CheckpointError, create_detector, load_detector, save_checkpoint
from fakescope.models.header import read_meta
from fakescope.models.onnx_net import load_onnx_detector, onnx_export_version
from fakescope.models.validate import MAX_PARAMS, TIMM_KWARGS

from .helpers import TINY_MODEL

#: Models small enough to build for real in these tests; anything else must stay on ``meta``.
SMALL = {TINY_MODEL, "test_vit"}
#: Keyword arguments fakescope itself passes to ``timm.create_model``.
PASSED = {"pretrained", "num_classes", "pretrained_cfg_overlay"} | TIMM_KWARGS


# ------------------------------------------------------------------------------------ helpers
def _write(path: Path, text: str, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A safetensors file whose fakescope metadata is exactly ``text``."""
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={"fakescope": text})
    return path


def _dump(meta: Any) -> str:
    return json.dumps(meta, allow_nan=True)


@pytest.fixture(scope="module")
def timm_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, torch.Tensor]]:
    """A valid tiny timm checkpoint's metadata and tensors."""
    det = create_detector(TINY_MODEL, img_size=32).eval()
    path = save_checkpoint(tmp_path_factory.mktemp("timm") / "m.safetensors", det)
    meta = read_meta(path)
    meta["created"] = "2026-01-01T00:00:00+0000"  # the same examples in every fuzz run
    return meta, {k: v.clone() for k, v in det.net.state_dict().items()}


def _probe_meta(backbone_path: str = "missing_tiny_backbone.onnx") -> dict[str, Any]:
    spec = {
        "kind": "probe",
        "arch": "probe:missing_tiny_backbone.onnx/embed+l2",
        "model_kwargs": {
            "backbone": {
                "type": "onnx",
                "path": backbone_path,
                "sha256": "0" * 64,
                "pool": "embed",
                "embed_output": "image_embeds",
                "hidden_output": None,
                "layers": None,
                "preprocessing": {"size": 32},
                "batch_size": 1,
            },
            "dim": 8,
            "l2": True,
            "novelty": {"n": 4, "dim": 8, "k": 2, "threshold": 0.3},
        },
        "preprocessing": {"size": 32},
        "threshold": 0.5,
        "calibration": {"method": "platt", "a": 1.0, "b": 0.0},
    }
    return {"format": "fakescope-checkpoint", "format_version": 1, "spec": spec}


PROBE_TENSORS = {
    "mean": torch.zeros(8),
    "scale": torch.ones(8),
    "head.weight": torch.zeros(1, 8),
    "head.bias": torch.zeros(1),
    "novelty.bank": torch.zeros(4, 8, dtype=torch.float16),
}


def _fusion_meta(timm_meta: dict) -> dict[str, Any]:
    member = timm_meta["spec"]
    spec = {
        "kind": "fusion",
        "arch": "fusion:mean(a,b)",
        "model_kwargs": {"method": "mean", "members": [member, copy.deepcopy(member)]},
        "preprocessing": member["preprocessing"],
    }
    return {"format": "fakescope-checkpoint", "spec": spec}


def _fusion_tensors(timm_tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"weights": torch.full((2,), 0.5), "bias": torch.zeros(())}
    for i in range(2):
        out.update({f"members.{i}.net.{k}": v.clone() for k, v in timm_tensors.items()})
    return out


class TimmGuard:
    """Wraps ``timm.create_model``: records calls with arguments fakescope never passes, and real
    (not ``meta``) builds of anything but the tiny test models."""

    def __init__(self) -> None:
        self.real = timm.create_model
        self.bad: list[str] = []
        self.real_builds = 0

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
        extra = set(kwargs) - PASSED
        if extra or args:
            self.bad.append(f"create_model({name!r}) with {sorted(extra)} / {args}")
        on_meta = torch.get_default_device().type == "meta"
        if not on_meta:
            self.real_builds += 1
            if name not in SMALL:
                self.bad.append(f"real build of {name!r} ({kwargs})")
                raise RuntimeError(f"a real build of {name!r} is forbidden here")
        if kwargs.get("pretrained") or kwargs.get("pretrained_cfg_overlay"):
            raise RuntimeError("no downloads or weight files in these tests")
        return self.real(name, *args, **kwargs)


@pytest.fixture()
def guard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TimmGuard]:
    """timm under guard, offline, with an empty weights folder; ``torch.load`` forbidden."""
    g = TimmGuard()
    monkeypatch.setattr(timm, "create_model", g)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(tmp_path / "no-weights-here"))

    def no_torch_load(*a: Any, **k: Any) -> None:
        g.bad.append(f"torch.load{a}")
        raise RuntimeError("torch.load is forbidden here")

    monkeypatch.setattr(torch, "load", no_torch_load)
    yield g
    assert g.bad == []


# --------------------------------------------------------------- the reported attacks
def test_checkpoint_path_in_model_kwargs_is_refused_before_timm(
    timm_ckpt, guard: TimmGuard, tmp_path: Path
) -> None:
    meta, tensors = copy.deepcopy(timm_ckpt[0]), timm_ckpt[1]
    victim = tmp_path / "victim.pth"
    victim.write_bytes(b"\x80\x04 pickle that must never be loaded")
    meta["spec"]["model_kwargs"]["checkpoint_path"] = str(victim)
    path = _write(tmp_path / "evil.safetensors", _dump(meta), tensors)
    with pytest.raises(CheckpointError, match=r"evil\.safetensors.*checkpoint_path"):
        load_detector(path)
    with pytest.raises(CheckpointError, match="checkpoint_path"):
        read_meta(path)  # ``fakescope info`` refuses it too
    assert guard.real_builds == 0


def test_size_kwargs_are_refused(timm_ckpt, guard: TimmGuard, tmp_path: Path) -> None:
    meta, tensors = copy.deepcopy(timm_ckpt[0]), timm_ckpt[1]
    meta["spec"]["arch"] = "vit_base_patch16_224"
    meta["spec"]["model_kwargs"] = {"embed_dim": 65536, "depth": 48}
    path = _write(tmp_path / "huge.safetensors", _dump(meta), tensors)
    with pytest.raises(CheckpointError, match=r"huge\.safetensors.*embed_dim"):
        load_detector(path)
    assert guard.real_builds == 0


@pytest.mark.parametrize("kwargs", [{}, {"img_size": 224}])
def test_networks_past_the_size_limit_are_refused_before_allocation(
    timm_ckpt, guard: TimmGuard, tmp_path: Path, kwargs: dict
) -> None:
    meta, tensors = copy.deepcopy(timm_ckpt[0]), timm_ckpt[1]
    meta["spec"]["arch"], meta["spec"]["model_kwargs"] = "vit_7b_patch16_dinov3", kwargs
    path = _write(tmp_path / "big.safetensors", _dump(meta), tensors)
    with pytest.raises(CheckpointError, match=rf"big\.safetensors.*limit of {MAX_PARAMS:,}"):
        load_detector(path)
    assert guard.real_builds == 0


def test_img_size_beyond_the_bound_is_refused(timm_ckpt, guard: TimmGuard, tmp_path: Path) -> None:
    meta, tensors = copy.deepcopy(timm_ckpt[0]), timm_ckpt[1]
    meta["spec"]["arch"], meta["spec"]["model_kwargs"] = "test_vit", {"img_size": 1_000_000}
    path = _write(tmp_path / "wide.safetensors", _dump(meta), tensors)
    with pytest.raises(CheckpointError, match=r"wide\.safetensors.*img_size"):
        load_detector(path)
    assert guard.real_builds == 0


def test_huge_novelty_bank_is_refused(guard: TimmGuard, tmp_path: Path) -> None:
    meta = _probe_meta()
    meta["spec"]["model_kwargs"]["dim"] = 1 << 20
    meta["spec"]["model_kwargs"]["novelty"] = {"n": 10**6, "dim": 1 << 20, "k": 5, "threshold": 1}
    path = _write(tmp_path / "bank.safetensors", _dump(meta), PROBE_TENSORS)
    with pytest.raises(CheckpointError, match=r"bank\.safetensors.*limit"):
        load_detector(path)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("path", "/etc/passwd", "onnx"),
        ("path", 42, "string"),
        ("type", "pickle", "'onnx' or 'timm'"),
    ],
)
def test_probe_backbone_cannot_name_arbitrary_files(
    guard: TimmGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field, value, reason
) -> None:
    import fakescope.embed.backbones as backbones

    opened: list[Any] = []
    monkeypatch.setattr(backbones, "open_backbone", lambda *a, **k: opened.append(a))
    meta = _probe_meta()
    meta["spec"]["model_kwargs"]["backbone"][field] = value
    path = _write(tmp_path / "probe.safetensors", _dump(meta), PROBE_TENSORS)
    with pytest.raises(CheckpointError, match=rf"probe\.safetensors.*{reason}"):
        load_detector(path)
    assert opened == []


def test_timm_backbone_cannot_name_a_hub_model(guard: TimmGuard, tmp_path: Path) -> None:
    meta = _probe_meta()
    meta["spec"]["model_kwargs"]["backbone"] = {
        "type": "timm",
        "name": "hf-hub:someone/evil",
        "weights": None,
        "pretrained": True,
    }
    path = _write(tmp_path / "hub.safetensors", _dump(meta), PROBE_TENSORS)
    with pytest.raises(CheckpointError, match=r"hub\.safetensors.*no hub"):
        load_detector(path)


def test_missing_backbone_is_both_a_checkpoint_and_a_not_found_error(
    guard: TimmGuard, tmp_path: Path
) -> None:
    path = _write(tmp_path / "probe.safetensors", _dump(_probe_meta()), PROBE_TENSORS)
    with pytest.raises(CheckpointError, match=r"probe\.safetensors.*missing_tiny_backbone"):
        load_detector(path)
    with pytest.raises(FileNotFoundError):
        load_detector(path)


# ------------------------------------------------------------------ malformed metadata
def _spec_with(**changes: Any) -> str:
    spec = {"kind": "timm", "arch": TINY_MODEL, "model_kwargs": {}, "preprocessing": {}}
    spec.update(changes)
    return _dump({"format": "fakescope-checkpoint", "spec": spec})


def _nested_fusion(levels: int) -> str:
    spec: dict[str, Any] = {"kind": "timm", "arch": TINY_MODEL}
    for _ in range(levels):
        spec = {"kind": "fusion", "arch": "f", "model_kwargs": {"method": "m", "members": [spec]}}
    return _dump({"format": "fakescope-checkpoint", "spec": spec})


MALFORMED = {
    "not JSON": ("{not json", "not valid JSON"),
    "JSON list": ("[1, 2]", "not an object"),
    "JSON null": ("null", "not an object"),
    "JSON string": ('"spec"', "not an object"),
    "no spec": ('{"format": "fakescope-checkpoint"}', "no detector spec"),
    "spec a list": ('{"format": "fakescope-checkpoint", "spec": []}', "spec: must be an object"),
    "spec a string": ('{"format": "fakescope-checkpoint", "spec": "timm"}', "must be an object"),
    "unknown kind": (_spec_with(kind="pickle"), "kind"),
    "kind not a string": (_spec_with(kind=["timm"]), "kind"),
    "arch missing": (_spec_with(arch=None), "arch"),
    "wrong format": (
        _dump({"format": "other", "spec": json.loads(_spec_with())["spec"]}),
        "format",
    ),
    "preprocessing a list": (_spec_with(preprocessing=[224]), "preprocessing: must be an object"),
    "size a string": (_spec_with(preprocessing={"size": "224"}), "size: must be an integer"),
    "size huge": (_spec_with(preprocessing={"size": 10**9}), "size"),
    "mean of two": (_spec_with(preprocessing={"mean": [0.5, 0.5]}), "mean"),
    "std zero": (_spec_with(preprocessing={"std": [0, 0, 0]}), "std"),
    "crop_pct tiny": (_spec_with(preprocessing={"crop_pct": 1e-9}), "crop_pct"),
    "resize_mode unknown": (_spec_with(preprocessing={"resize_mode": "zoom"}), "resize_mode"),
    "calibration a list": (_spec_with(calibration=[1, 0]), "calibration: must be an object"),
    "calibration a text": (_spec_with(calibration={"a": "x", "b": 0}), "calibration.a"),
    "calibration no b": (_spec_with(calibration={"a": 1.0}), "no 'b'"),
    "calibration NaN": (_spec_with(calibration={"a": math.nan, "b": 0}), "finite"),
    "threshold a string": (_spec_with(threshold="0.5"), "threshold: must be a number"),
    "threshold NaN": (_spec_with(threshold=math.nan), "threshold: must be finite"),
    "threshold Infinity": (_spec_with(threshold=math.inf), "threshold: must be finite"),
    "threshold 1e999": ('{"spec": {"kind": "timm", "arch": "a", "threshold": 1e999}}', "finite"),
    "threshold bool": (_spec_with(threshold=True), "threshold: must be a number"),
    "threshold 7": (_spec_with(threshold=7), "outside"),
    "band negative": (_spec_with(uncertain_band=-1), "uncertain_band"),
    "unknown filter": (_spec_with(input_filter="bogus"), "input_filter"),
    "model_kwargs a list": (_spec_with(model_kwargs=[1]), "model_kwargs: must be an object"),
    "img_size a string": (_spec_with(model_kwargs={"img_size": "32"}), "img_size"),
    "members not a list": (
        _dump(
            {"spec": {"kind": "fusion", "arch": "f", "model_kwargs": {"method": "m", "members": 3}}}
        ),
        "members",
    ),
    "members of ints": (
        _dump(
            {
                "spec": {
                    "kind": "fusion",
                    "arch": "f",
                    "model_kwargs": {"method": "m", "members": [1, 2]},
                }
            }
        ),
        "must be an object",
    ),
    "no members": (
        _dump(
            {
                "spec": {
                    "kind": "fusion",
                    "arch": "f",
                    "model_kwargs": {"method": "m", "members": []},
                }
            }
        ),
        "members",
    ),
    "fusions 10 deep": (_nested_fusion(10), "nest"),
    "huge nesting": ("[" * 100_000 + "]" * 100_000, "nested"),
    "deep object": ('{"a": ' * 200 + "1" + "}" * 200, "nested"),
    "huge integer": (
        '{"spec": {"kind": "timm", "arch": "a", "threshold": ' + "9" * 5000 + "}}",
        "",
    ),
    "probe dim a string": (
        _dump({"spec": {**_probe_meta()["spec"], "model_kwargs": {"backbone": {}, "dim": "8"}}}),
        "dim: must be an integer",
    ),
    "probe backbone a string": (
        _dump({"spec": {**_probe_meta()["spec"], "model_kwargs": {"backbone": "x", "dim": 8}}}),
        "backbone: must be an object",
    ),
    "probe unknown key": (
        _dump(
            {
                "spec": {
                    **_probe_meta()["spec"],
                    "model_kwargs": {**_probe_meta()["spec"]["model_kwargs"], "evil": 1},
                }
            }
        ),
        "never writes",
    ),
    "novelty threshold NaN": (
        _dump(
            {
                "spec": {
                    **_probe_meta()["spec"],
                    "model_kwargs": {
                        **_probe_meta()["spec"]["model_kwargs"],
                        "novelty": {"n": 4, "dim": 8, "k": 2, "threshold": math.nan},
                    },
                }
            }
        ),
        "novelty.threshold",
    ),
    "novelty dims outside": (
        _dump(
            {
                "spec": {
                    **_probe_meta()["spec"],
                    "model_kwargs": {
                        **_probe_meta()["spec"]["model_kwargs"],
                        "novelty": {"n": 4, "dim": 8, "k": 2, "threshold": 0.1, "dims": [4, 12]},
                    },
                }
            }
        ),
        "dims",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_is_a_checkpoint_error_naming_the_file(
    case: str, guard: TimmGuard, tmp_path: Path
) -> None:
    text, reason = MALFORMED[case]
    path = _write(tmp_path / "malformed.safetensors", text)
    with pytest.raises(CheckpointError, match=r"malformed\.safetensors") as err:
        load_detector(path)
    assert reason in str(err.value)
    if case != "wrong format":  # the format is load_detector's business only
        with pytest.raises(CheckpointError, match=r"malformed\.safetensors"):
            read_meta(path)
    assert guard.real_builds == 0


def test_tensors_of_the_wrong_shape_are_a_checkpoint_error(
    timm_ckpt, guard: TimmGuard, tmp_path: Path
) -> None:
    meta, tensors = timm_ckpt
    bad = {k: torch.zeros(3) if i == 0 else v for i, (k, v) in enumerate(tensors.items())}
    path = _write(tmp_path / "shapes.safetensors", _dump(meta), bad)
    with pytest.raises(CheckpointError, match=r"shapes\.safetensors.*do not fit"):
        load_detector(path)


def test_valid_checkpoints_still_load(timm_ckpt, guard: TimmGuard, tmp_path: Path) -> None:
    meta, tensors = timm_ckpt
    det = load_detector(_write(tmp_path / "ok.safetensors", _dump(meta), tensors))
    assert det.spec.arch == TINY_MODEL
    fused = _fusion_meta(meta)
    det = load_detector(_write(tmp_path / "f.safetensors", _dump(fused), _fusion_tensors(tensors)))
    assert len(det.members) == 2


# ------------------------------------------------------------------------------------ ONNX
def _tiny_onnx(path: Path, meta_text: str | None) -> Path:
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [None, 3, 4, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixel_values"], ["logits"], axes=[1, 2, 3])],
        "g",
        [x],
        [y],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    if meta_text is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "fakescope", meta_text
    onnx.save(model, str(path))
    return path


ONNX_SPEC = {"kind": "timm", "arch": TINY_MODEL, "preprocessing": {"size": 4}}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{oops", "not valid JSON"),
        ("[]", "not an object"),
        ('{"format": "fakescope-onnx"}', "no detector spec"),
        (_dump({"format": "fakescope-onnx", "spec": []}), "spec: must be an object"),
        (
            _dump({"format": "fakescope-onnx", "spec": {**ONNX_SPEC, "threshold": math.nan}}),
            "finite",
        ),
        (_dump({"format": "fakescope-onnx", "spec": {**ONNX_SPEC, "kind": "fusion"}}), "kind"),
        (_dump({"spec": ONNX_SPEC, "export_version": "2"}), "export_version"),
        (None, "without fakescope metadata"),
    ],
)
def test_onnx_with_bad_metadata_is_a_checkpoint_error(
    tmp_path: Path, text: str | None, reason: str
) -> None:
    path = _tiny_onnx(tmp_path / "bad.onnx", text)
    with pytest.raises(CheckpointError, match=r"bad\.onnx") as err:
        load_onnx_detector(path)
    assert reason in str(err.value)
    with pytest.raises(CheckpointError, match=r"bad\.onnx"):
        load_detector(path)


def test_onnx_garbage_and_good_metadata(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not a protobuf model \xff\xfe")
    with pytest.raises(CheckpointError, match=r"junk\.onnx"):
        load_onnx_detector(junk)
    good = _tiny_onnx(
        tmp_path / "good.onnx", _dump({"format": "fakescope-onnx", "spec": ONNX_SPEC})
    )
    det = load_onnx_detector(good)
    assert det.spec.kind == "onnx" and onnx_export_version(good) == 1


# ------------------------------------------------------------------------------------ fuzz
HOSTILE_TEXT = [
    "/etc/passwd",
    "checkpoint_path",
    "timm",
    "probe",
    "fusion",
    "onnx",
    "npr",
    "crop",
    TINY_MODEL,
    "test_vit",
    "vit_7b_patch16_dinov3",
    "x.onnx",
    "w.safetensors",
    "hf-hub:a/b",
    "NaN",
]
KEYS = [
    "kind",
    "arch",
    "model_kwargs",
    "checkpoint_path",
    "embed_dim",
    "depth",
    "img_size",
    "members",
    "method",
    "backbone",
    "dim",
    "l2",
    "novelty",
    "n",
    "k",
    "dims",
    "threshold",
    "preprocessing",
    "size",
    "mean",
    "std",
    "calibration",
    "a",
    "b",
    "type",
    "path",
    "weights",
    "name",
    "pretrained",
    "format",
    "spec",
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 8, 32, 2048, 65536, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_TEXT),
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutate(data: st.DataObject, doc: dict) -> Any:
    """One random change: replace a value, delete a key, or add one."""
    path = data.draw(st.sampled_from(list(_paths(doc))))
    if not path:
        return data.draw(JSON_VALUES)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.sampled_from(KEYS))] = data.draw(JSON_VALUES)
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    return doc


def test_fuzzed_metadata_only_ever_gives_checkpoint_errors(
    timm_ckpt, guard: TimmGuard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fakescope.models.validate as validate

    monkeypatch.setattr(validate, "MAX_PARAMS", 20_000_000)  # no big allocation, even in bounds
    timm_meta, timm_tensors = timm_ckpt
    bases = {
        "timm": (timm_meta, timm_tensors),
        "probe": (_probe_meta(), PROBE_TENSORS),
        "fusion": (_fusion_meta(timm_meta), _fusion_tensors(timm_tensors)),
    }
    outcomes = {"loaded": 0, "refused": 0}
    folder = tmp_path

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(sorted(bases)))
        meta, tensors = bases[kind]
        doc: Any = copy.deepcopy(meta)
        for _ in range(data.draw(st.integers(1, 3))):
            doc = _mutate(data, doc) if isinstance(doc, dict) else data.draw(JSON_VALUES)
        text = _dump(doc)
        if data.draw(st.integers(0, 9)) == 0:  # now and then, broken JSON text
            text = text[: data.draw(st.integers(0, len(text)))]
        path = _write(folder / "fuzz.safetensors", text, tensors)
        try:
            load_detector(path)
            outcomes["loaded"] += 1
        except CheckpointError as e:
            assert "fuzz.safetensors" in str(e)
            outcomes["refused"] += 1
        assert guard.bad == []

    check()
    print(f"fuzzed metadata: {outcomes}")
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes


def test_fuzzed_bytes_only_ever_give_checkpoint_errors(guard: TimmGuard, tmp_path: Path) -> None:
    folder = tmp_path

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(
        raw=st.binary(max_size=512),
        framed=st.booleans(),
        suffix=st.sampled_from([".safetensors", ".onnx"]),
    )
    def check(raw: bytes, framed: bool, suffix: str) -> None:
        if framed:  # a plausible safetensors length prefix in front of the noise
            raw = len(raw).to_bytes(8, "little") + raw
        path = folder / f"noise{suffix}"
        path.write_bytes(raw)
        with pytest.raises(CheckpointError, match=r"noise\."):
            load_detector(path)
        if suffix == ".safetensors":
            with pytest.raises(CheckpointError, match=r"noise\."):
                read_meta(path)

    check()


def test_create_detector_stores_only_what_a_checkpoint_may_pass_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint_path"):
        create_detector(TINY_MODEL, checkpoint_path=str(tmp_path / "w.pth"))


def test_spec_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    from fakescope.models.validate import check_spec

    member = {"kind": "timm", "arch": TINY_MODEL, "threshold": 2}
    fusion = {"kind": "fusion", "arch": "f", "model_kwargs": {"method": "m", "members": [member]}}
    with pytest.raises(CheckpointError) as err:
        check_spec(fusion, tmp_path / "f.safetensors")
    assert str(err.value) == (
        f"{tmp_path / 'f.safetensors'}: field spec.model_kwargs.members[0].threshold: "
        "2.0 is outside [0.0, 1.0]"
    )
    probe = _probe_meta()["spec"]
    probe["model_kwargs"]["backbone"]["path"] = "/etc/passwd"
    with pytest.raises(
        CheckpointError, match=r"p\.onnx: field spec\.model_kwargs\.backbone\.path: "
    ):
        check_spec(probe, "p.onnx")
    with pytest.raises(
        CheckpointError, match=r"field spec\.kind: 'fusion' is not 'timm' or 'probe'"
    ):
        check_spec(fusion, "e.onnx", kinds=("timm", "probe"))


def test_the_spec_schema_and_the_spec_have_the_same_fields() -> None:
    """The stored spec's schema (models.validate) and DetectorSpec / Preprocessing describe one
    shape: a field added to one and not the other fails here."""
    import dataclasses

    from fakescope.data.transforms import Preprocessing
    from fakescope.models.detector import DetectorSpec
    from fakescope.models.validate import (
        KINDS,
        FusionSpec,
        PreprocessingSchema,
        ProbeSpec,
        TimmSpec,
    )

    spec_fields = {f.name for f in dataclasses.fields(DetectorSpec)}
    for schema in (TimmSpec, ProbeSpec, FusionSpec):
        assert set(schema.model_fields) == spec_fields, schema.__name__
    # a stored spec without a value gets the value a new DetectorSpec has
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(DetectorSpec)
        if f.default is not dataclasses.MISSING
    }
    stored = TimmSpec.model_validate({"kind": "timm", "arch": "resnet18"})
    assert {name: getattr(stored, name) for name in defaults} == defaults
    assert {f.name for f in dataclasses.fields(Preprocessing)} == set(
        PreprocessingSchema.model_fields
    )
    assert {
        s.model_fields["kind"].annotation.__args__[0] for s in (TimmSpec, ProbeSpec, FusionSpec)
    } == set(KINDS)
