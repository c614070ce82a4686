"""Tests for fakescope.eval.plots and fakescope.eval.report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.eval import plots
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.report import rebuild_report, write_report

N_BOOT = 200
DATA_URI = "data:image/png;base64,"
HISTORY = [
    {"epoch": 1, "train_loss": 0.7, "train_acc": 0.55, "val_loss": 0.6, "val_acc": 0.6},
    {"epoch": 2, "train_loss": 0.5, "train_acc": 0.75, "val_loss": None, "val_acc": None},
    {"epoch": 3, "train_loss": 0.3, "train_acc": 0.9},
]


def _is_png(path: Path) -> bool:
    """True when ``path`` is a readable PNG image."""
    with Image.open(path) as img:
        img.load()
        return img.format == "PNG" and img.size[0] > 10 and img.size[1] > 10


@pytest.fixture
def predictions(tmp_path: Path) -> pd.DataFrame:
    """Twelve predictions over tiny real PNG files, with one missing file and mistakes."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rows = []
    for i in range(12):
        label = i % 2
        path = img_dir / f"img_{i}.png"
        pixels = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        score = float(np.clip(0.25 + 0.5 * label + rng.normal(0, 0.2), 0, 1))
        rows.append({"path": str(path), "label": label, "score": score})
    df = pd.DataFrame(rows)
    df.loc[0, "score"] = 0.9  # a confident mistake on a real image
    df.loc[1, "path"] = str(img_dir / "missing.png")
    df["pred"] = (df["score"] >= 0.5).astype(int)
    df["source"] = np.where(df["label"] == 1, "gen", "camera")
    return df


def _metrics(df: pd.DataFrame) -> dict:
    """Metrics for a predictions frame, broken down by source."""
    groups = {"source": df["source"].tolist()}
    return compute_metrics(df["label"], df["score"], groups=groups, n_boot=N_BOOT)


def test_write_report_creates_all_files(tmp_path: Path, predictions: pd.DataFrame) -> None:
    out = tmp_path / "report"
    meta = {
        "model": "tiny<cnn>",
        "data": "synthetic",
        "skipped": [{"path": f"bad_{i}.jpg", "reason": "truncated"} for i in range(250)],
    }
    path = write_report(out, _metrics(predictions), predictions, history=HISTORY, meta=meta)
    assert path == out / "report.html"
    for name in ("training_curves", "confusion_matrix", "roc", "pr", "predictions_grid"):
        assert _is_png(out / f"{name}.png"), name
    assert json.loads((out / "metrics.json").read_text())["n"] == 12
    assert len(pd.read_csv(out / "predictions.csv")) == 12
    html = path.read_text(encoding="utf-8")
    assert html.count(DATA_URI) == 5
    assert "tiny&lt;cnn&gt;" in html and "tiny<cnn>" not in html
    assert "250 file(s) skipped; showing the first 200." in html
    assert "bad_199.jpg" in html and "bad_200.jpg" not in html
    assert "Only 12 test images" in html
    assert "by source" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_write_report_without_history(tmp_path: Path, predictions: pd.DataFrame) -> None:
    path = write_report(tmp_path / "r", _metrics(predictions), predictions)
    assert path.read_text(encoding="utf-8").count(DATA_URI) == 4
    assert not (tmp_path / "r" / "training_curves.png").exists()


def test_rebuild_report(tmp_path: Path, predictions: pd.DataFrame) -> None:
    out = tmp_path / "r"
    write_report(out, _metrics(predictions), predictions, history=HISTORY, meta={"model": "m"})
    (out / "report.html").unlink()
    (out / "roc.png").unlink()
    path = rebuild_report(out)
    html = path.read_text(encoding="utf-8")
    assert html.count(DATA_URI) == 5
    assert _is_png(out / "roc.png")
    assert "<td>model</td>" in html


def test_rebuild_report_needs_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rebuild_report(tmp_path)


def test_grid_tolerates_bad_images(tmp_path: Path, predictions: pd.DataFrame) -> None:
    path = plots.plot_prediction_grid(predictions, tmp_path / "grid.png", n=6)
    assert _is_png(path)

    def broken_loader(p: str) -> Image.Image:
        raise OSError(p)

    path = plots.plot_prediction_grid(predictions, tmp_path / "g2.png", image_loader=broken_loader)
    assert _is_png(path)
    empty = predictions.iloc[:0]
    assert _is_png(plots.plot_prediction_grid(empty, tmp_path / "g3.png"))


def test_grid_selects_mistakes_first(predictions: pd.DataFrame) -> None:
    chosen = plots._select_rows(predictions, n=3, seed=0)
    wrong = predictions[predictions["pred"] != predictions["label"]]
    assert len(chosen) == min(3, len(predictions))
    first = chosen.iloc[: min(3, len(wrong))]
    assert (first["pred"] != first["label"]).all()
    assert plots._select_rows(predictions, n=5, seed=1).equals(
        plots._select_rows(predictions, n=5, seed=1)
    )


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.6, 0.8, 0.4, 0.2, 0.9])
    assert _is_png(plots.plot_roc(y, s, tmp_path / "roc.png"))
    assert _is_png(plots.plot_pr(y, s, tmp_path / "pr.png"))
    assert _is_png(plots.plot_roc(np.zeros(4), s[:4], tmp_path / "roc1.png"))
    assert _is_png(plots.plot_pr(np.ones(4), s[:4], tmp_path / "pr1.png"))
    cm_path = plots.plot_confusion_matrix([[3, 1], [0, 0]], tmp_path / "cm.png")
    assert _is_png(cm_path)
    assert _is_png(plots.plot_training_curves(HISTORY[:1], tmp_path / "one_epoch.png"))
    assert _is_png(plots.plot_training_curves(HISTORY, tmp_path / "nested" / "curves.png"))
