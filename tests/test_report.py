"""Tests for fakescope.eval.plots and fakescope.eval.report."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.eval import plots
from fakescope.eval.metrics import SMALL_GROUPS_KEY, compute_metrics
from fakescope.eval.report import rebuild_report, write_report
from fakescope.eval.result import Metrics

N_BOOT = 200
DATA_URI = "data:image/png;base64,"
PNGS = (
    "training_curves",
    "confusion_matrix",
    "roc",
    "pr",
    "reliability",
    "score_histograms",
    "predictions_grid",
)
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


def _metrics(df: pd.DataFrame) -> Metrics:
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
    for name in PNGS:
        assert _is_png(out / f"{name}.png"), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 12
    for key in ("tpr_at_fpr_1", "tpr_at_fpr_1_ci", "tpr_at_fpr_5", "tpr_at_fpr_5_ci", "ece"):
        assert key in saved, key
    assert len(pd.read_csv(out / "predictions.csv")) == 12
    html = path.read_text(encoding="utf-8")
    assert html.count(DATA_URI) == len(PNGS)
    for alt in ("roc", "pr", "reliability", "score_histograms", "training_curves"):
        assert f"alt='{alt}'" in html, alt
    for text in (
        "<td>TPR at 1% FPR</td>",
        "<td>TPR at 5% FPR</td>",
        "<td>expected calibration error (10 bins)</td>",
        "ROC on a linear and a log false-positive axis; the dot is the operating threshold 0.50",
        "Precision-recall, fake = positive; the dot is the operating threshold 0.50",
        "Reliability diagram: mean predicted P(fake)",
        f"ECE {saved['ece']:.3f}",
        "Dotted line: best epoch 1 (lowest val loss, 0.600).",
        "only the threshold",  # no uncertain band known
    ):
        assert text in html, text
    assert "tiny&lt;cnn&gt;" in html and "tiny<cnn>" not in html
    assert "250 file(s) skipped; showing the first 200." in html
    assert "bad_199.jpg" in html and "bad_200.jpg" not in html
    assert "Only 12 test images" in html
    assert "by source" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_write_report_without_history(tmp_path: Path, predictions: pd.DataFrame) -> None:
    path = write_report(tmp_path / "r", _metrics(predictions), predictions)
    assert path.read_text(encoding="utf-8").count(DATA_URI) == len(PNGS) - 1
    assert not (tmp_path / "r" / "training_curves.png").exists()


def test_rebuild_report(tmp_path: Path, predictions: pd.DataFrame) -> None:
    out = tmp_path / "r"
    write_report(out, _metrics(predictions), predictions, history=HISTORY, meta={"model": "m"})
    (out / "report.html").unlink()
    for name in ("roc", "reliability", "score_histograms"):
        (out / f"{name}.png").unlink()
    path = rebuild_report(out)
    html = path.read_text(encoding="utf-8")
    assert html.count(DATA_URI) == len(PNGS)
    for name in ("roc", "reliability", "score_histograms"):
        assert _is_png(out / f"{name}.png"), name
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


def _perfect(tmp_path: Path, n: int = 40) -> pd.DataFrame:
    """Perfectly separated predictions (n/2 of each class) over files that need not exist."""
    label = np.arange(n) % 2
    score = np.where(label == 1, 0.7 + 0.01 * np.arange(n) / n, 0.2 + 0.01 * np.arange(n) / n)
    return pd.DataFrame(
        {
            "path": [str(tmp_path / f"p{i}.png") for i in range(n)],
            "label": label,
            "score": score,
            "pred": (score >= 0.5).astype(int),
        }
    )


def _row(html: str, first_cell: str) -> str:
    """The HTML of the table row whose first cell is ``first_cell``."""
    start = html.index(f"<tr><td>{first_cell}</td>")
    return html[start : html.index("</tr>", start)]


def test_zero_width_intervals_carry_a_caveat(tmp_path: Path) -> None:
    df = _perfect(tmp_path)
    m = compute_metrics(df["label"], df["score"], n_boot=N_BOOT)
    assert m.roc_auc_ci == (1.0, 1.0) and m.tpr_at_fpr_1_ci == (1.0, 1.0)
    html = write_report(tmp_path / "r", m, df).read_text(encoding="utf-8")
    for metric in ("ROC-AUC", "average precision", "TPR at 1% FPR", "TPR at 5% FPR", "accuracy"):
        row = _row(html, metric)
        assert "[1.000, 1.000]" in row and "Caveat:" in row and "zero-width interval" in row
    assert "read the exact interval [0.912, 1.000] instead" in _row(html, "accuracy")
    # 20 reals: 1% FPR is below one real image, said next to the number
    assert "with 20 reals the smallest non-zero FPR is 1/20" in _row(html, "TPR at 1% FPR")
    assert "smallest non-zero FPR" not in _row(html, "TPR at 5% FPR")
    # and next to the ROC figure, not only in the warnings list
    roc_fig = html[html.index("alt='roc'") : html.index("</figure>", html.index("alt='roc'"))]
    assert "TPR at 1% FPR interval [1.000, 1.000]: zero-width interval" in roc_fig
    assert "ROC-AUC interval [1.000, 1.000]: zero-width interval" in roc_fig
    pr_fig = html[html.index("alt='pr'") : html.index("</figure>", html.index("alt='pr'"))]
    assert "Average precision interval [1.000, 1.000]" in pr_fig


def test_no_caveat_for_ordinary_intervals(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    df = pd.DataFrame({"path": [f"x{i}.png" for i in range(300)], "label": y, "score": s})
    html = write_report(tmp_path / "r", compute_metrics(y, s, n_boot=N_BOOT), df).read_text()
    assert "zero-width interval" not in html
    assert "smallest non-zero FPR" not in _row(html, "TPR at 5% FPR")


def test_small_groups_folded_in_table(tmp_path: Path, predictions: pd.DataFrame) -> None:
    html = write_report(tmp_path / "r", _metrics(predictions), predictions).read_text()
    table = html[html.index("<h3>by source</h3>") :]
    table = table[: table.index("</table>")]
    # 6 camera + 6 gen images: both under 10, pooled into one row with an exact interval
    label = escape(f"{SMALL_GROUPS_KEY}: 2 groups pooled (camera, gen)")
    assert _row(table, label).count("<td") == 9
    assert "<tr><td>camera</td>" not in table and "<tr><td>gen</td>" not in table
    assert "accuracy exact 95% CI" in table
    assert "are pooled into one row" in html


def test_large_groups_keep_rows_with_intervals(tmp_path: Path) -> None:
    df = _perfect(tmp_path, n=60)
    df["group"] = np.repeat(["a", "b", "c"], [30, 24, 6])
    m = compute_metrics(df["label"], df["score"], groups={"group": df["group"]}, n_boot=N_BOOT)
    html = write_report(tmp_path / "r", m, df).read_text()
    assert "[0.884, 1.000]" in _row(html, "a")  # exact CI for 30/30 correct
    assert "c)</td>" in _row(html, escape(f"{SMALL_GROUPS_KEY}: 1 group pooled (c)"))


def test_uncertain_band_in_histogram_caption(tmp_path: Path, predictions: pd.DataFrame) -> None:
    m = compute_metrics(
        predictions["label"], predictions["score"], n_boot=N_BOOT, uncertain_band=0.1
    )
    assert m.uncertain_band == 0.1
    out = tmp_path / "r"
    html = write_report(out, m, predictions).read_text()
    assert "shaded: the uncertain band ±0.10" in html
    (out / "metrics.json").write_text(json.dumps({**m.to_json_dict(), "uncertain_band": None}))
    (out / "meta.json").write_text(json.dumps({"uncertain_band": 0.2}))
    assert "shaded: the uncertain band ±0.20" in rebuild_report(out).read_text()


def test_rebuild_from_older_metrics(tmp_path: Path, predictions: pd.DataFrame) -> None:
    out = tmp_path / "r"
    m = _metrics(predictions)
    write_report(out, m, predictions)
    old = {k: v for k, v in m.to_json_dict().items() if not k.startswith(("tpr_at", "ece"))}
    for cells in old["breakdown"].values():
        for stats in cells.values():
            stats.pop("accuracy_exact_ci")
    (out / "metrics.json").write_text(json.dumps(old))
    html = rebuild_report(out).read_text()
    assert '<tr><td>TPR at 1% FPR</td><td class="num">n/a</td>' in html
    assert html.count(DATA_URI) == len(PNGS) - 1
    assert _is_png(out / "reliability.png")


def test_best_epoch() -> None:
    assert plots.best_epoch(HISTORY) == (1.0, 0.6)
    rows = [
        {"epoch": 1, "val_loss": 0.5},
        {"epoch": 2, "val_loss": 0.3},
        {"epoch": 3, "val_loss": 0.3},
        {"epoch": 4, "val_loss": float("nan")},
        {"epoch": 5},
    ]
    assert plots.best_epoch(rows) == (2.0, 0.3)  # the first of equal losses, as training keeps
    assert plots.best_epoch([{"epoch": 1, "train_loss": 0.4}]) is None


def test_operating_point() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.5, 0.7, 0.3, 0.6, 0.9])
    point = plots.operating_point(y, s, 0.5)  # flags reals 0.5, 0.7 and fakes 0.6, 0.9
    assert point == {"threshold": 0.5, "fpr": 0.5, "tpr": pytest.approx(2 / 3), "precision": 0.5}
    assert plots.operating_point(y, s, 0.95)["precision"] is None


def test_new_plots_write_pngs(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    s = np.array([0.1, 0.6, 0.8, 0.4, 0.2, 0.9, 0.05, 1.0])
    assert _is_png(plots.plot_roc(y, s, tmp_path / "roc.png", threshold=0.5))
    assert _is_png(plots.plot_pr(y, s, tmp_path / "pr.png", threshold=0.99))
    assert _is_png(plots.plot_reliability(y, s, tmp_path / "rel.png"))
    assert _is_png(plots.plot_reliability(y, s * 3 - 1, tmp_path / "rel_out.png"))
    assert _is_png(plots.plot_reliability(np.ones(3), s[:3], tmp_path / "rel1.png"))
    assert _is_png(plots.plot_score_histograms(y, s, tmp_path / "h.png", 0.5, band=0.1))
    assert _is_png(plots.plot_score_histograms(np.zeros(4), s[:4], tmp_path / "h1.png"))
    assert _is_png(plots.plot_score_histograms(y, s * 10, tmp_path / "h2.png", threshold=5.0))
    assert _is_png(plots.plot_score_histograms(y[:0], s[:0], tmp_path / "h3.png"))


PROBE_HISTORY = [  # what train.probe writes: one record, no epochs
    {
        "epoch": 1,
        "train_loss": 0.577,
        "train_acc": 0.982,
        "val_loss": 0.604,
        "val_acc": 1.0,
        "C": 1.0,
    }
]
DATASET = {  # fakescope.data.manifest.summarize
    "n": 80,
    "n_real": 40,
    "n_fake": 40,
    "n_groups": 2,
    "sources": {"coco": {"n": 40, "real": 40, "fake": 0}, "sd": {"n": 40, "real": 0, "fake": 40}},
    "splits": {
        "train": {"n": 56, "real": 28, "fake": 28},
        "val": {"n": 12, "real": 6, "fake": 6},
        "test": {"n": 12, "real": 6, "fake": 6},
    },
}


def _value(html: str, key: str) -> str:
    """The value cell (HTML) of the run table's ``key`` row."""
    return _row(html, key).split("</td><td>", 1)[1].removesuffix("</td>")


def test_probe_report_has_no_one_dot_curve_and_a_readable_dataset(
    tmp_path: Path, predictions: pd.DataFrame
) -> None:
    out = tmp_path / "r"
    meta = {"model": "probe", "dataset": DATASET, "config": {"pool": "layers", "l2": True}}
    write_report(out, _metrics(predictions), predictions, history=PROBE_HISTORY, meta=meta)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not (out / "training_curves.png").exists() and "alt='training_curves'" not in html
    assert "fitted in one step (a probe has no epochs), so there is no training curve" in html
    assert "Train loss 0.577, accuracy 0.982; validation loss 0.604, accuracy 1.000" in html
    assert "C = 1, chosen on validation" in html
    assert _value(html, "dataset") == (
        "80 images: 40 real, 40 fake; 2 groups<br>"
        "splits: train 56 (28 real, 28 fake); val 12 (6 real, 6 fake); test 12 (6 real, 6 fake)"
        "<br>sources: coco 40 (40 real, 0 fake); sd 40 (0 real, 40 fake)"
    )
    assert _value(html, "config") == "pool: layers; l2: True"
    assert "{&quot;" not in html and '{"n"' not in html
    (out / "report.html").unlink()  # the rebuild reads history.json and meta.json alike
    html = rebuild_report(out).read_text(encoding="utf-8")
    assert "no training curve" in html and "alt='training_curves'" not in html


HOSTILE = "<script>alert(1)</script>"


def _robustness_files(out: Path, hostile: str = HOSTILE) -> None:
    """What ``fakescope robustness`` saves, without running a detector."""
    rows = [
        {"perturbation": name, "description": f"{name} {hostile}", "n": 12, "auc": 0.9 - d,
         "auc_lo": 0.8 - d, "auc_hi": 0.95, "accuracy": 0.75, "accuracy_lo": 0.6,
         "accuracy_hi": 0.9, "real_acc": 0.7, "fake_acc": 0.8, "mean_score": 0.5,
         "delta_auc": -d, "delta_auc_lo": -2 * d if d else None,
         "delta_auc_hi": -d / 2 if d else None, "delta_accuracy": 0.0,
         "delta_accuracy_lo": -0.1, "delta_accuracy_hi": 0.1, "n_failed": 0}
        for name, d in (("clean", 0.0), ("jpeg75", 0.1))
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "robustness.csv", index=False)
    doc = {"header": {"model": "m", "checkpoint": f"/runs/{hostile}.safetensors"},
           "notes": [f"note {hostile}"]}  # fmt: skip
    (out / "robustness.json").write_text(json.dumps(doc))
    Image.new("RGB", (20, 20)).save(out / "robustness.png")


def test_rebuild_keeps_the_robustness_section_and_the_title(
    tmp_path: Path, predictions: pd.DataFrame
) -> None:
    out = tmp_path / "r"
    write_report(out, _metrics(predictions), predictions, title="cross-validation")
    assert "<h2>Robustness</h2>" not in (out / "report.html").read_text()
    _robustness_files(out)
    html = rebuild_report(out).read_text(encoding="utf-8")
    assert html.count("<h2>Robustness</h2>") == 1
    assert "<title>cross-validation</title>" in html
    section = html[html.index("<h2>Robustness</h2>") : html.index("Generated by")]
    assert "<td>jpeg75: jpeg75 &lt;script&gt;" in section
    assert "<td>-0.100 [-0.200, -0.050]</td>" in section  # ΔAUC with its paired interval
    assert "<td>0.900 [0.800, 0.950]</td>" in section
    assert section.count(DATA_URI) == 1 and "<li>note &lt;script&gt;" in section
    assert "<script" not in html
    assert "<title>other</title>" in rebuild_report(out, title="other").read_text()
    # a new evaluation into the folder drops the earlier one's robustness results
    html = write_report(out, _metrics(predictions), predictions).read_text(encoding="utf-8")
    assert "<h2>Robustness</h2>" not in html and not list(out.glob("robustness*"))


def test_hostile_names_are_escaped(tmp_path: Path, predictions: pd.DataFrame) -> None:
    predictions.loc[2, "path"] = f"/data/{HOSTILE}.png"
    meta = {
        "data": f"/data/{HOSTILE}",
        HOSTILE: "key too",
        "dataset": {**DATASET, "sources": {HOSTILE: {"n": 40, "real": 40, "fake": 0}}},
        "skipped": [{"path": f"/data/{HOSTILE}.jpg", "reason": HOSTILE}],
    }
    groups = {HOSTILE: [HOSTILE if i % 3 else "x" for i in range(12)]}
    m = compute_metrics(predictions["label"], predictions["score"], groups=groups, n_boot=N_BOOT)
    out = tmp_path / f"run-{HOSTILE}"
    html = write_report(out, m, predictions, meta=meta, title=HOSTILE).read_text()
    _robustness_files(out)
    rebuilt = rebuild_report(out).read_text()
    for page in (html, rebuilt):
        assert "<script" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert f"<title>{escape(HOSTILE, quote=False)}</title>" in page
