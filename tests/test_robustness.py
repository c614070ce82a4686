"""Robustness grid: each perturbation's effect on a known image, the report, and cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.cli import build_parser
from fakescope.config import TrainConfig
from fakescope.data.manifest import build_manifest
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.report import write_report
from fakescope.eval.result import Metrics
from fakescope.eval.robustness import (
    CLEAN,
    PERTURBATIONS,
    resolve_perturbations,
    run_robustness,
)
from fakescope.experiments.crossval import assign_folds, cross_validate
from fakescope.models import create_detector, save_checkpoint

from .helpers import TINY_MODEL, build_tiny_encoder, make_seed_layout, synthetic_image

ROBUSTNESS = "<h2>Robustness</h2>"
GRID = [
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "jpeg30",
    "down0.5",
    "down0.25",
    "up2",
    "blur1",
    "blur2",
    "centercrop",
    "noise",
    "social",
    "png",
]


@pytest.fixture(scope="module")
def known() -> Image.Image:
    """A 64x48 textured image: a gradient plus fine random detail."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    base = np.stack([xx * 3.0, yy * 4.0, (xx + yy) * 2.0], axis=-1) + rng.normal(0, 25, (48, 64, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="RGB")


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _high_freq(img: Image.Image) -> float:
    """Mean absolute difference between horizontal neighbours."""
    return float(np.abs(np.diff(_arr(img), axis=1)).mean())


def test_grid_is_exactly_the_issue_list() -> None:
    from fakescope.cli.evaluate import PERTURBATION_NAMES

    assert list(PERTURBATIONS) == GRID == list(PERTURBATION_NAMES)
    assert list(resolve_perturbations(["png", "jpeg30"])) == ["jpeg30", "png"]
    with pytest.raises(ValueError, match="unknown perturbation"):
        resolve_perturbations(["jpeg10"])


def test_every_perturbation_returns_rgb(known: Image.Image) -> None:
    for name, fn in PERTURBATIONS.items():
        out = fn(known)
        assert isinstance(out, Image.Image) and out.mode == "RGB", name


def test_sizes_of_resizes_and_crop(known: Image.Image) -> None:
    assert PERTURBATIONS["down0.5"](known).size == (32, 24)
    assert PERTURBATIONS["down0.25"](known).size == (16, 12)
    assert PERTURBATIONS["up2"](known).size == (128, 96)
    assert PERTURBATIONS["centercrop"](known).size == (32, 24)
    assert PERTURBATIONS["social"](known).size == (1080, 810)
    for name in ("jpeg95", "jpeg30", "blur1", "blur2", "noise", "png"):
        assert PERTURBATIONS[name](known).size == known.size, name


def test_centre_crop_takes_the_middle(known: Image.Image) -> None:
    np.testing.assert_array_equal(
        _arr(PERTURBATIONS["centercrop"](known)), _arr(known)[12:36, 16:48]
    )


def test_jpeg_error_grows_as_quality_drops(known: Image.Image) -> None:
    errors = [
        np.abs(_arr(PERTURBATIONS[f"jpeg{q}"](known)) - _arr(known)).mean()
        for q in (95, 75, 50, 30)
    ]
    assert errors[0] > 0
    assert errors == sorted(errors) and len(set(errors)) == 4


def test_blur_removes_high_frequencies(known: Image.Image) -> None:
    sharp = _high_freq(known)
    blur1 = _high_freq(PERTURBATIONS["blur1"](known))
    blur2 = _high_freq(PERTURBATIONS["blur2"](known))
    assert blur2 < blur1 < 0.7 * sharp


def test_noise_is_additive_and_deterministic(known: Image.Image) -> None:
    grey = Image.new("RGB", (64, 48), (128, 128, 128))
    noisy = PERTURBATIONS["noise"](grey)
    assert 4.0 < _arr(noisy).std() < 6.0
    assert abs(_arr(noisy).mean() - 128) < 0.5
    np.testing.assert_array_equal(
        _arr(PERTURBATIONS["noise"](known)), _arr(PERTURBATIONS["noise"](known))
    )
    diff = _arr(PERTURBATIONS["noise"](known)) - _arr(known)
    inside = (_arr(known) > 20) & (_arr(known) < 235)  # away from clipping
    assert 4.0 < diff[inside].std() < 6.0 and abs(diff[inside].mean()) < 0.5


def test_png_round_trip_is_lossless(known: Image.Image) -> None:
    np.testing.assert_array_equal(_arr(PERTURBATIONS["png"](known)), _arr(known))


def test_social_is_resize_then_jpeg(known: Image.Image) -> None:
    out = PERTURBATIONS["social"](known)
    resized = known.resize((1080, 810), Image.Resampling.BICUBIC)
    err = np.abs(_arr(out) - _arr(resized)).mean()
    assert 0 < err < 10


# --------------------------------------------------------------------------------------------
# run_robustness
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.threshold = 0.5
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", det)


@pytest.fixture
def small_set(tmp_path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        label = i % 2
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(label, rng, 40).save(path)
        rows.append({"path": str(path), "label": label})
    return pd.DataFrame(rows)


def test_run_robustness_writes_outputs_and_deltas(
    tiny_ckpt: Path, small_set: pd.DataFrame, tmp_path: Path
) -> None:
    from fakescope.models import load_detector

    det = load_detector(tiny_ckpt)
    out = tmp_path / "report"
    preds = small_set.assign(score=np.linspace(0.1, 0.9, len(small_set)))
    preds["pred"] = (preds["score"] >= 0.5).astype(int)
    write_report(out, compute_metrics(preds["label"], preds["score"], n_boot=20), preds)
    table = run_robustness(det, small_set, out, n_boot=50, amp="off")
    assert table["perturbation"].tolist() == [CLEAN, *GRID]
    assert (table["n"] == 12).all() and (table["n_failed"] == 0).all()
    clean = table.iloc[0]
    assert clean["delta_auc"] == 0 and clean["delta_accuracy"] == 0
    np.testing.assert_allclose(table["delta_auc"], table["auc"] - clean["auc"], atol=1e-9)
    np.testing.assert_allclose(
        table["delta_accuracy"], table["accuracy"] - clean["accuracy"], atol=1e-9
    )
    png = table.set_index("perturbation").loc["png"]
    assert png["delta_auc"] == 0 and png["delta_accuracy"] == 0  # lossless: same pixels
    names = ("csv", "json", "png", "html")
    for name in ("robustness_scores.csv", *(f"robustness.{ext}" for ext in names)):
        assert (out / name).is_file(), name
    scores = pd.read_csv(out / "robustness_scores.csv")
    assert len(scores) == 12 * 14
    by = scores.pivot(index="path", columns="perturbation", values="score")
    np.testing.assert_allclose(by["png"], by[CLEAN])
    html = (out / "report.html").read_text()
    assert html.count(ROBUSTNESS) == 1 and "<h2>Metrics</h2>" in html
    assert html.index("<h2>Plots</h2>") < html.index(ROBUSTNESS) < html.index("Generated by")
    assert "Only 12 test images" in html  # the small-set warning travels with the section
    run_robustness(det, small_set, out, perturbations=["jpeg50"], n_boot=20, amp="off")
    html = (out / "report.html").read_text()
    assert html.count(ROBUSTNESS) == 1 and "jpeg30" not in html and "jpeg50" in html
    assert pd.read_csv(out / "robustness.csv")["perturbation"].tolist() == [CLEAN, "jpeg50"]


def test_robustness_cli_on_a_split(
    tiny_ckpt: Path, small_set: pd.DataFrame, tmp_path: Path
) -> None:
    splits = small_set.assign(split=["test"] * 8 + ["train"] * 4)
    manifest = tmp_path / "splits.csv"
    splits.to_csv(manifest, index=False)
    parser = build_parser()
    out = tmp_path / "rob"
    args = parser.parse_args(
        ["robustness", str(tiny_ckpt), str(manifest), "--out", str(out), "--only", "jpeg75,blur1"]
        + ["--workers", "0", "--device", "cpu", "--n-boot", "20"]
    )
    assert args.func(args) == 0
    table = pd.read_csv(out / "robustness.csv")
    assert table["perturbation"].tolist() == [CLEAN, "jpeg75", "blur1"]
    assert (table["n"] == 8).all()


def test_robustness_of_a_probe_uses_perturbed_pixels(
    tmp_path: Path, small_set: pd.DataFrame
) -> None:
    from fakescope.embed.backbones import open_backbone_arg
    from fakescope.models.probe import create_probe_detector

    backbone = open_backbone_arg(str(build_tiny_encoder(tmp_path / "enc" / "tiny.onnx")))
    det = create_probe_detector(backbone, 4)
    det.net.set_head(np.zeros(4), np.ones(4), np.array([1.0, -2.0, 0.5, 3.0]), 0.0)
    table = run_robustness(
        det, small_set, tmp_path / "p", perturbations=["centercrop", "png"], n_boot=20
    )
    assert table.set_index("perturbation").loc["png", "delta_auc"] == 0
    scores = pd.read_csv(tmp_path / "p" / "robustness_scores.csv")
    piv = scores.pivot(index="path", columns="perturbation", values="score")
    np.testing.assert_allclose(piv["png"], piv[CLEAN])
    assert not np.allclose(piv["centercrop"], piv[CLEAN])


# --------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------


def test_assign_folds_is_stratified(tmp_path: Path) -> None:
    df = build_manifest(make_seed_layout(tmp_path / "d", n_per_group=3))
    fold = assign_folds(df, 3, seed=0)
    assert sorted(np.unique(fold).tolist()) == [0, 1, 2]
    for k in range(3):
        labels = df["label"].to_numpy()[fold == k]
        assert (labels == 1).sum() == (labels == 0).sum() == 4


def test_crossval_scores_every_row_exactly_once(tmp_path: Path) -> None:
    data = make_seed_layout(tmp_path / "d", n_per_group=3)
    cfg = TrainConfig(
        data=str(data),
        model=TINY_MODEL,
        epochs=1,
        batch_size=8,
        lr=3e-3,
        img_size=32,
        resize_mode="crop",
        workers=0,
        device="cpu",
        amp="off",
    )
    out = tmp_path / "cv"
    metrics, report = cross_validate(cfg, 3, out, n_boot=50)
    oof = pd.read_csv(out / "oof_predictions.csv")
    manifest = build_manifest(data)
    assert len(oof) == len(manifest) == 24
    assert sorted(oof["path"]) == sorted(manifest["path"]) and oof["path"].is_unique
    assert sorted(oof["fold"].unique().tolist()) == [0, 1, 2]
    assert metrics.n == 24 and metrics.roc_auc_ci is not None
    assert len(json.loads((out / "folds.json").read_text())) == 3
    assert "3-fold cross-validation" in metrics.warnings[0]
    assert any("Only 24 test images" in w for w in metrics.warnings)
    assert report == out / "report" / "report.html" and report.is_file()
    saved = Metrics.load(out / "report" / "metrics.json")
    assert saved == metrics and saved.n_rows == 24 and saved.n_skipped == 0
    assert saved.folds is not None and [f.fold for f in saved.folds] == [0, 1, 2]
    assert saved.fold_auc is not None and saved.fold_accuracy is not None
    for k in range(3):
        splits = pd.read_csv(out / f"fold-{k}" / "run" / "splits.csv")
        held = set(oof.loc[oof["fold"] == k, "path"])
        assert set(splits.loc[splits["split"] == "test", "path"]) == held
        assert not held & set(splits.loc[splits["split"] != "test", "path"])


def test_crossval_works_for_probes(tmp_path: Path) -> None:
    data = make_seed_layout(tmp_path / "d", n_per_group=3)
    onnx_path = build_tiny_encoder(tmp_path / "enc" / "tiny.onnx")
    cfg = TrainConfig(
        data=str(data), family="probe", backbone=str(onnx_path), workers=0, device="cpu"
    )
    metrics, _ = cross_validate(cfg, 3, tmp_path / "cv", n_boot=20)
    oof = pd.read_csv(tmp_path / "cv" / "oof_predictions.csv")
    assert len(oof) == 24 and oof["path"].is_unique and metrics.n == 24
    assert metrics.folds is not None and [f.fold for f in metrics.folds] == [0, 1, 2]


def test_report_rebuilt_after_robustness_keeps_its_section(
    tiny_ckpt: Path, small_set: pd.DataFrame, tmp_path: Path
) -> None:
    from fakescope.cli import main

    manifest = tmp_path / "set.csv"
    small_set.to_csv(manifest, index=False)
    out = tmp_path / "eval"
    common = ["--workers", "0", "--n-boot", "20"]
    evaluate = ["evaluate", str(manifest), "--detector", str(tiny_ckpt), "--out", str(out)]
    assert main([*evaluate, *common]) == 0
    robustness = ["robustness", str(tiny_ckpt), str(manifest), "--out", str(out), "--split", "all"]
    assert main([*robustness, "--only", "jpeg75", "--device", "cpu", *common]) == 0
    assert (out / "report.html").read_text().count(ROBUSTNESS) == 1
    assert main(["report", str(out)]) == 0  # rebuilt from the saved files
    html = (out / "report.html").read_text()
    assert html.count(ROBUSTNESS) == 1 and "jpeg75" in html
    assert html.index("Robustness") < html.index("Generated by")
    assert not list(out.glob("*.tmp*"))  # written atomically, nothing left behind
