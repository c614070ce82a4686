"""ONNX export: fixed "same" padding, static int8, calibration defaults and the export cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from fakescope.cli import main
from fakescope.infer.backends import DetectorRef, onnx_path_for, open_detector
from fakescope.models.checkpoint import load_detector, save_checkpoint
from fakescope.models.onnx_export import calibration_images, export_onnx
from fakescope.models.onnx_net import EXPORT_VERSION, onnx_export_version
from fakescope.models.registry import create_detector

from .helpers import synthetic_image

TF_MODEL = "tf_mobilenetv3_small_minimal_100"  # TF "same" padding, like tf_efficientnet_lite0


@pytest.fixture(scope="module")
def tf_det():
    torch.manual_seed(0)
    return create_detector(TF_MODEL, img_size=64).eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    out = []
    for i in range(12):
        p = root / f"img{i}.png"
        synthetic_image(i % 2, rng, 80).save(p)
        out.append(str(p))
    return out


def _meta(path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["fakescope"])


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _onnx_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    return load_detector(path).tensor_logits(x.numpy())[0]


def test_same_padding_exports_without_shape_ops(tf_det, tmp_path: Path) -> None:
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = tf_det(x).numpy().ravel()
    out = export_onnx(tf_det, tmp_path / "m.onnx")
    ops = _ops(out)
    assert "Ceil" not in ops and "Shape" not in [o for o in ops if o != "Flatten"][:10]
    np.testing.assert_allclose(_onnx_logits(out, x), before, atol=1e-4)
    # the caller's detector is untouched: still in eval mode, same outputs
    assert not any(m.training for m in tf_det.modules())
    with torch.no_grad():
        np.testing.assert_array_equal(tf_det(x).numpy().ravel(), before)


def test_static_int8_quantises_convs_keeps_ends_fp32(tf_det, images, tmp_path: Path) -> None:
    out = export_onnx(tf_det, tmp_path / "q.onnx", int8=True, calibration=images)
    ops = _ops(out)
    assert "QLinearConv" in ops
    assert ops.count("Conv") == 1, "only the first conv stays fp32"
    assert "Gemm" in ops, "the classifier head stays fp32"
    meta = _meta(out)
    assert meta["precision"] == "int8" and meta["export_version"] == EXPORT_VERSION
    assert meta["quantisation"].startswith("static int8") and "12 images" in meta["quantisation"]
    from fakescope.data.images import load_image
    from fakescope.data.transforms import eval_transform

    tf = eval_transform(tf_det.spec.preprocessing)
    x = torch.stack([tf(load_image(p)) for p in images])
    with torch.no_grad():
        ref = tf_det(x).numpy().ravel()
    got = _onnx_logits(out, x)
    assert got.shape == ref.shape and np.all(np.isfinite(got))
    assert np.abs(got - ref).max() <= 0.1 * (np.abs(ref).max() + 1e-3) + 0.05


def test_unreadable_calibration_images_are_skipped(tf_det, images, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = export_onnx(tf_det, tmp_path / "q.onnx", int8=True, calibration=[str(bad), *images[:4]])
    meta = _meta(out)
    assert "4 images" in meta["quantisation"]
    with pytest.raises(ValueError, match="no calibration image"):
        export_onnx(tf_det, tmp_path / "none.onnx", int8=True, calibration=[str(bad)])


def test_calibration_images_come_from_the_runs_train_split(tf_det, images, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    split = ["train"] * 8 + ["val", "test", "train", "train"]
    df = pd.DataFrame({"path": images, "label": [0, 1] * 6, "split": split})
    df.loc[11, "path"] = str(tmp_path / "gone.png")  # a moved file is left out
    df.to_csv(run / "splits.csv", index=False)
    det = create_detector(TF_MODEL, img_size=64)
    det.meta = {"config": {"out": str(run)}}
    got = calibration_images(det, n=100)
    want = {p for p, s in zip(df["path"], split, strict=True) if s == "train"} - {
        str(tmp_path / "gone.png")
    }
    assert set(got) == want and len(got) == 9
    assert len(calibration_images(det, n=4)) == 4
    det.meta = {"config": {"out": str(tmp_path / "elsewhere")}}
    assert calibration_images(det) == []


def test_cached_export_is_redone_when_stale(tf_det, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "m.safetensors", tf_det)
    open_detector(DetectorRef(ckpt, "onnx", "fp32"))
    cached = onnx_path_for(ckpt, "fp32")
    assert cached.is_file() and onnx_export_version(cached) == EXPORT_VERSION
    first = cached.stat().st_mtime_ns
    open_detector(DetectorRef(ckpt, "onnx", "fp32"))
    assert cached.stat().st_mtime_ns == first, "a fresh cache is reused"
    # an export from an older exporter is redone
    model = onnx.load(str(cached))
    meta = json.loads(model.metadata_props[0].value)
    meta["export_version"] = 1
    model.metadata_props[0].value = json.dumps(meta)
    onnx.save(model, str(cached))
    open_detector(DetectorRef(ckpt, "onnx", "fp32"))
    assert onnx_export_version(cached) == EXPORT_VERSION
    # a checkpoint newer than its export is exported again
    later = cached.stat().st_mtime + 10
    os.utime(ckpt, (later, later))
    before = cached.stat().st_mtime_ns
    open_detector(DetectorRef(ckpt, "onnx", "fp32"))
    assert cached.stat().st_mtime_ns != before


def test_cli_export_int8_with_calibration_then_predict(tf_det, images, tmp_path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "m.safetensors", tf_det)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder)
    assert main(["export", str(ckpt), "--int8", "--calibration", str(folder)]) == 0
    assert "static int8" in capsys.readouterr().out
    q = onnx_path_for(ckpt, "int8")
    assert "QLinearConv" in _ops(q)
    out = tmp_path / "rows.jsonl"
    assert main(["-q", "predict", str(folder), "--detector", str(q), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(images) and all(0 <= r["score"] <= 1 for r in rows)


def test_fusion_runs_its_networks_on_onnx(tf_det, images, tmp_path: Path, caplog) -> None:
    from fakescope.infer.predictor import Predictor
    from fakescope.models.fusion import create_fusion

    torch.manual_seed(1)
    other = create_detector(TF_MODEL, img_size=64).eval()
    fused = create_fusion([tf_det, other], np.array([0.3, 0.7]), 0.2, "mean")
    ckpt = save_checkpoint(tmp_path / "fused.safetensors", fused)
    ref = open_detector(DetectorRef(ckpt, "torch", "fp32"))
    det = open_detector(DetectorRef(ckpt, "onnx", "fp32"))
    assert DetectorRef(ckpt, "onnx", "fp32").amp == "off"
    assert [m.spec.kind for m in det.net.members] == ["onnx", "onnx"]
    assert onnx_path_for(ckpt, "fp32", member=1).is_file()
    from PIL import Image

    imgs = [Image.open(p).convert("RGB") for p in images]
    want = Predictor(ref, workers=0, amp="off").image_logits(imgs)[0]
    got = Predictor(det, workers=0, amp="off").image_logits(imgs)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    # int8 without calibration images: members fall back to fp32 ONNX, with a warning
    det8 = open_detector(DetectorRef(ckpt, "onnx", "int8"))
    assert [m.meta["precision"] for m in det8.net.members] == ["fp32", "fp32"]
    assert "runs as fp32 ONNX" in caplog.text


def test_builtin_exports_go_to_the_user_cache(tmp_path: Path, monkeypatch) -> None:
    from fakescope.zoo import detector_file

    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    ref = detector_file("builtin:clip-layers")
    got = onnx_path_for(ref, "fp32", member=0)
    assert got.parent == tmp_path / "cache" / "onnx"
    assert got.name.endswith("clip_layers.member0.fp32.onnx")
    assert onnx_path_for(tmp_path / "m.safetensors", "int8") == tmp_path / "m.int8.onnx"


def test_cli_int8_without_calibration_says_how(tf_det, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "m.safetensors", tf_det)
    assert main(["export", str(ckpt), "--int8"]) == 1
    assert "--calibration DATA" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--int8", "--dynamic"]) == 0
    assert "dynamic int8" in capsys.readouterr().out
    assert "ConvInteger" in _ops(onnx_path_for(ckpt, "int8"))


def test_cli_export_bad_inputs_name_the_file(tf_det, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(tmp_path / "m.safetensors", tf_det)
    missing = tmp_path / "no-such-folder"
    assert main(["export", str(ckpt), "--int8", "--calibration", str(missing)]) == 1
    assert f"{missing}: calibration images not found" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("not an image")
    assert main(["export", str(ckpt), "--int8", "--calibration", str(junk)]) == 1
    err = capsys.readouterr().err
    assert "no calibration image could be read" in err and "a.jpg" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", str(ckpt), "--out", str(blocker / "m.onnx")]) == 1
    assert f"{blocker / 'm.onnx'}: cannot write here" in capsys.readouterr().err
