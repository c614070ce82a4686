"""Probe detectors on an ONNX backbone, the embedding cache in use, and fusion fitted on val only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakescope.cli import main
from fakescope.data.splits import load_splits
from fakescope.eval.scoring import score_frame
from fakescope.models.checkpoint import load_detector
from fakescope.train.fusion import fuse

from .helpers import TINY_MODEL, build_tiny_encoder, make_seed_layout


def _train_probe(data: Path, root: Path) -> Path:
    """Train a probe on a tiny ONNX encoder; the run goes to ``root/probe``."""
    onnx_path = build_tiny_encoder(root / "enc" / "tiny.onnx")
    run = root / "probe"
    with pytest.MonkeyPatch.context() as mp:  # the same cache the test itself will see
        mp.setenv("FAKESCOPE_CACHE", str(root / "embedding-cache"))
        code = main(
            [
                "-q",
                "train",
                str(data),
                "--family",
                "probe",
                "--backbone",
                str(onnx_path),
                "--out",
                str(run),
                "--workers",
                "0",
            ]
        )
    assert code == 0
    return run


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One probe run, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("probe")
    return _train_probe(make_seed_layout(root / "apples"), root)


@pytest.fixture
def own_probe_run(seed_layout: Path, tmp_path: Path) -> Path:
    """A probe run of the test's own, for tests that change it (retrain, move its backbone)."""
    return _train_probe(seed_layout, tmp_path)


def test_probe_trains_evaluates_and_reports(probe_run: Path) -> None:
    assert (probe_run / "best.safetensors").stat().st_size < 50_000  # the head only
    metrics = json.loads((probe_run / "report" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.9  # the fakes' grid raises the mean colour the encoder sees
    det = load_detector(probe_run / "best.safetensors")
    assert det.spec.kind == "probe" and det.spec.calibration["method"] == "platt"
    assert det.spec.arch == "probe:tiny.onnx/embed"


def test_probe_round_trip_reproduces_report_scores(probe_run: Path) -> None:
    det = load_detector(probe_run / "best.safetensors")
    preds = pd.read_csv(probe_run / "report" / "predictions.csv")
    test = load_splits(probe_run / "splits.csv").query("split == 'test'").reset_index(drop=True)
    scored, failures = score_frame(det, test)
    assert not failures
    np.testing.assert_allclose(
        scored["score"].to_numpy(), preds["score"].to_numpy(), rtol=1e-5, atol=1e-6
    )
    # The same scores through the tensor path (no cache): the detector on preprocessed images.
    from fakescope.data.images import load_image
    from fakescope.data.transforms import EvalTransform

    tf = EvalTransform(det.spec.preprocessing)
    x = np.stack([tf.array(load_image(p)) for p in test["path"][:4]])
    np.testing.assert_allclose(
        det.probabilities(det.tensor_logits(x)[0]),
        preds["score"][:4].to_numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_probe_retrain_hits_the_cache(own_probe_run: Path, seed_layout: Path, monkeypatch) -> None:
    probe_run = own_probe_run
    import fakescope.embed.backbones as bb

    calls = []
    real = bb.OnnxBackbone.embed
    monkeypatch.setattr(
        bb.OnnxBackbone, "embed", lambda self, x: calls.append(len(x)) or real(self, x)
    )
    cfg = json.loads((probe_run / "config.json").read_text())
    code = main(
        [
            "-q",
            "train",
            str(seed_layout),
            "--family",
            "probe",
            "--backbone",
            cfg["backbone"],
            "--out",
            str(probe_run),
            "--workers",
            "0",
            "--force",
        ]
    )
    assert code == 0 and calls == []  # every embedding came from the cache


def test_moved_backbone_is_a_clear_error(own_probe_run: Path, tmp_path: Path) -> None:
    probe_run = own_probe_run
    cfg = json.loads((probe_run / "config.json").read_text())
    moved = tmp_path / "elsewhere.onnx"
    shutil.move(cfg["backbone"], moved)
    with pytest.raises(FileNotFoundError, match="tiny.onnx"):
        load_detector(probe_run / "best.safetensors")
    det = load_detector(probe_run / "best.safetensors", backbone_path=str(moved))
    assert det.spec.kind == "probe"


def _tiny_cnn_run(data: Path, out: Path) -> Path:
    code = main(
        [
            "-q",
            "train",
            str(data),
            "--out",
            str(out),
            "--model",
            TINY_MODEL,
            "--img-size",
            "32",
            "--resize-mode",
            "crop",
            "--workers",
            "0",
            "--epochs",
            "1",
            "--amp",
            "off",
            "--no-report",
            "--splits",
            str(data),
        ]
    )
    assert code == 0
    return out


def test_fusion_is_fitted_on_validation_rows_only(probe_run: Path, tmp_path: Path) -> None:
    cnn = _tiny_cnn_run(probe_run / "splits.csv", tmp_path / "cnn")
    members = [
        load_detector(probe_run / "best.safetensors"),
        load_detector(cnn / "best.safetensors"),
    ]
    df = load_splits(probe_run / "splits.csv")
    fused = fuse(members, df, method="stacking")
    flipped = df.copy()
    test_rows = flipped["split"] != "val"
    flipped.loc[test_rows, "label"] = (
        1 - flipped.loc[test_rows, "label"]
    )  # poison everything but val
    again = fuse(members, flipped, method="stacking")
    np.testing.assert_allclose(fused.net.weights, again.net.weights)
    assert fused.meta["fusion_fit"]["rows"] == int((df["split"] == "val").sum())
    val_flipped = df.copy()
    val_rows = val_flipped["split"] == "val"
    val_flipped.loc[val_rows, "label"] = 1 - val_flipped.loc[val_rows, "label"]
    assert not np.allclose(
        fuse(members, val_flipped, method="stacking").net.weights, fused.net.weights
    )


def test_fuse_cli_round_trip_and_evaluate(probe_run: Path, tmp_path: Path) -> None:
    cnn = _tiny_cnn_run(probe_run / "splits.csv", tmp_path / "cnn")
    out = tmp_path / "fused.safetensors"
    for method in ("mean", "stacking"):
        assert (
            main(
                [
                    "-q",
                    "fuse",
                    str(probe_run / "best.safetensors"),
                    str(cnn / "best.safetensors"),
                    "--data",
                    str(probe_run / "splits.csv"),
                    "--method",
                    method,
                    "--out",
                    str(out),
                    "--workers",
                    "0",
                ]
            )
            == 0
        )
        det = load_detector(out)
        assert det.spec.kind == "fusion" and len(det.net.members) == 2
        test = load_splits(probe_run / "splits.csv").query("split == 'test'").reset_index(drop=True)
        scored, _ = score_frame(det, test)
        assert len(scored) == len(test) and scored["score"].between(0, 1).all()
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "-q",
                "evaluate",
                str(out),
                str(probe_run / "splits.csv"),
                "--split",
                "test",
                "--out",
                str(ev),
                "--workers",
                "0",
                "--n-boot",
                "100",
            ]
        )
        == 0
    )
    assert (ev / "report.html").is_file()


def test_fuse_without_val_split_is_an_error(probe_run: Path) -> None:
    det = load_detector(probe_run / "best.safetensors")
    df = load_splits(probe_run / "splits.csv").query("split != 'val'")
    with pytest.raises(ValueError, match="validation"):
        fuse([det, det], df)


def test_backbone_found_through_fakescope_weights(
    own_probe_run: Path, tmp_path: Path, monkeypatch
) -> None:
    probe_run = own_probe_run
    cfg = json.loads((probe_run / "config.json").read_text())
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.move(cfg["backbone"], shelf / "tiny.onnx")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shelf))
    det = load_detector(probe_run / "best.safetensors")
    assert det.spec.kind == "probe"


def test_train_finds_a_bare_backbone_name_as_predict_does(
    seed_layout: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``--backbone NAME.onnx`` is looked for in ``$FAKESCOPE_WEIGHTS`` (then the cache), as
    predict looks for a probe's backbone; a name that is nowhere fails before the data is read."""
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    build_tiny_encoder(shelf / "tiny.onnx")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shelf))
    monkeypatch.chdir(tmp_path)  # no tiny.onnx in the working folder
    args = ["-q", "train", str(seed_layout), "--family", "probe", "--workers", "0"]
    assert main([*args, "--backbone", "tiny.onnx", "--out", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["backbone"] == str(shelf / "tiny.onnx")
    assert load_detector(tmp_path / "run" / "best.safetensors").spec.arch == "probe:tiny.onnx/embed"
    capsys.readouterr()
    assert main([*args, "--backbone", "gone.onnx", "--out", str(tmp_path / "gone")]) == 1
    err = capsys.readouterr().err
    assert "--backbone gone.onnx" in err and str(shelf) in err and "FAKESCOPE_WEIGHTS" in err
    assert not (tmp_path / "gone").exists()


def test_cache_dir_is_used_for_training_calibration_and_report(
    seed_layout: Path, tmp_path: Path
) -> None:
    import os

    enc = build_tiny_encoder(tmp_path / "enc" / "tiny.onnx")
    mine = tmp_path / "my-cache"
    assert (
        main(
            [
                "-q",
                "train",
                str(seed_layout),
                "--family",
                "probe",
                "--backbone",
                str(enc),
                "--out",
                str(tmp_path / "run"),
                "--workers",
                "0",
                "--cache-dir",
                str(mine),
            ]
        )
        == 0
    )
    assert list(mine.glob("*.sqlite"))
    default = Path(os.environ["FAKESCOPE_CACHE"])
    assert not default.exists() or not list(default.rglob("*.sqlite"))
