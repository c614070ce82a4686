"""Fixed activation ranges for an int8 tower (fakescope.embed.quant): the dynamic node's own rule,
batch invariance, closeness to the dynamic form, the ranges file and the detector spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from fakescope.embed.backbones import OnnxBackbone, open_backbone
from fakescope.embed.quant import (
    RangesError,
    calibrate,
    dynamic_inputs,
    find_ranges,
    read_ranges,
    save_ranges,
    scale_and_zero_point,
)
from fakescope.utils import file_digest

from .tower_helpers import cosine, export_int8, tiny_vit


@pytest.fixture(scope="module")
def int8_tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_int8(tiny_vit(), tmp_path_factory.mktemp("q") / "tiny.int8.onnx")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def calibrated(int8_tower: Path) -> Path:
    """The tower with its ranges beside it, as the package looks for them."""
    ranges = calibrate(int8_tower, [images(16, seed=1)])
    save_ranges(
        int8_tower.with_name(f"{int8_tower.stem}.ranges.json"),
        ranges,
        {"sha256": file_digest(int8_tower)},
    )
    return int8_tower


def test_scale_rule_matches_dynamic_quantize_linear() -> None:
    """ONNX's rule: the range widened to hold 0, 255 steps, zero point rounded and saturated."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = np.array([[-0.7, 0.1, 2.3, 1.1]], np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _, s, z = sess.run(None, {"x": x})
    scale, zero = scale_and_zero_point(x.min(), x.max())
    assert scale == pytest.approx(float(s), rel=1e-6)
    assert zero == int(z)
    assert scale_and_zero_point(0.5, 2.0) == (pytest.approx(2.0 / 255), 0)  # widened to hold 0


def test_calibrate_covers_every_dynamic_node(int8_tower: Path) -> None:
    model = onnx.load(str(int8_tower))
    ranges = calibrate(int8_tower, [images(4)])
    assert list(ranges) == dynamic_inputs(model) and len(ranges) >= 3 * 4
    assert all(lo <= hi for lo, hi in ranges.values())
    assert dynamic_inputs(onnx.load(str(int8_tower)))  # the file is left as it was


def test_fixed_ranges_are_batch_invariant_and_close(calibrated: Path) -> None:
    x = images(6, seed=2)
    dynamic = OnnxBackbone(calibrated, pool="layers", batch_size=6)
    assert dynamic.batch_size == 1 and dynamic.ranges is None  # as exported: one image per run
    fixed = OnnxBackbone(calibrated, pool="layers", activations="fixed", batch_size=6)
    assert fixed.batch_size == 6 and not fixed.per_batch_quantised
    together = fixed.embed(x)
    alone = np.concatenate([fixed.embed(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    assert cosine(together, dynamic.embed(x)).min() > 0.99
    # the identity (and so the embedding cache) tells the two apart
    assert fixed.cache_id != dynamic.cache_id
    assert fixed.spec()["activations"] == f"fixed:{fixed.ranges_sha256}"


def test_auto_and_fixed_without_ranges(int8_tower: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone.int8.onnx"
    lone.write_bytes(int8_tower.read_bytes())
    assert OnnxBackbone(lone, activations="auto").ranges is None  # none found: as exported
    with pytest.raises(RangesError, match="lone.int8.onnx: no calibrated activation ranges"):
        OnnxBackbone(lone, activations="fixed")
    with pytest.raises(ValueError, match="dynamic, fixed or auto"):
        OnnxBackbone(lone, activations="static")


def test_ranges_for_another_file_are_not_used(calibrated: Path, tmp_path: Path) -> None:
    ranges, meta = read_ranges(calibrated.with_name(f"{calibrated.stem}.ranges.json"))
    other = tmp_path / "other.int8.onnx"
    other.write_bytes(calibrated.read_bytes() + b"\0")  # not the same bytes
    save_ranges(tmp_path / "other.int8.ranges.json", ranges, {**meta, "sha256": meta["sha256"]})
    assert find_ranges(other, file_digest(other)) is None


def test_bad_ranges_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.ranges.json"
    bad.write_text("{not json")
    with pytest.raises(RangesError, match="x.ranges.json: not an activation-ranges file"):
        read_ranges(bad)
    bad.write_text('{"format": "something else", "ranges": {}}')
    with pytest.raises(RangesError, match="x.ranges.json"):
        read_ranges(bad)
    with pytest.raises(RangesError, match="sha256"):
        save_ranges(tmp_path / "y.ranges.json", {"a": (0.0, 1.0)}, {})


def test_spec_round_trip_keeps_fixed_ranges(calibrated: Path, tmp_path: Path) -> None:
    fixed = OnnxBackbone(calibrated, pool="layers", activations="fixed", batch_size=4)
    again = open_backbone(fixed.spec())
    assert again.ranges_sha256 == fixed.ranges_sha256
    x = images(3, seed=3)
    np.testing.assert_allclose(again.embed(x), fixed.embed(x), atol=1e-6)
    # the ranges changed since the detector was made: refused, naming the file
    ranges_path = calibrated.with_name(f"{calibrated.stem}.ranges.json")
    ranges, meta = read_ranges(ranges_path)
    shifted = {k: (lo - 0.5, hi) for k, (lo, hi) in ranges.items()}
    save_ranges(ranges_path, shifted, meta)
    try:
        with pytest.raises(RangesError, match="made with activation ranges"):
            open_backbone(fixed.spec())
    finally:
        save_ranges(ranges_path, ranges, meta)


def test_edited_graph_is_cached_and_a_damaged_cache_is_rebuilt(
    calibrated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The second open of an edited tower reads the cached graph (no edit); same embeddings."""
    import fakescope.embed.backbones as bb_mod

    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    x = images(2, seed=4)
    first = OnnxBackbone(calibrated, pool="layers", activations="fixed").embed(x)
    cached = list((tmp_path / "cache" / "onnx-edited").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].with_suffix(".json").is_file()
    edits = []
    real_edit = bb_mod.edited_model
    monkeypatch.setattr(
        bb_mod, "edited_model", lambda *a, **k: edits.append(1) or real_edit(*a, **k)
    )
    np.testing.assert_allclose(
        OnnxBackbone(calibrated, pool="layers", activations="fixed").embed(x), first
    )
    assert not edits  # read from the cache
    other = OnnxBackbone(calibrated, pool="layers", layers=[0, 1]).embed(x)  # another edit
    assert edits and other.shape[1] == 2 * 128
    cached[0].write_bytes(b"not onnx")  # damaged: edited again, same result
    np.testing.assert_allclose(
        OnnxBackbone(calibrated, pool="layers", activations="fixed").embed(x), first
    )
