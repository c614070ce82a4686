"""Self-contained HTML evaluation report (metrics, plots, predictions) and its rebuild."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.eval import plots
from fakescope.version import __version__

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"
META_FILE = "meta.json"
REPORT_FILE = "report.html"
MAX_SKIPPED_SHOWN = 200

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.headline { font-size: 1.15em; } .muted { color: #656d76; font-size: 0.9em; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
            padding: 0.6em 1em; margin: 1em 0; }
.warnings li { margin: 0.3em 0; }
.plots img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.4em 0.4em 0.4em 0; }
code { background: #f6f8fa; padding: 0 0.2em; }
"""

PLOT_FILES = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "grid": "predictions_grid.png",
}


def _fmt(value: Any, digits: int = 3) -> str:
    """Format a number for display; None becomes ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _ci(ci: Sequence[float] | None) -> str:
    """Format an interval as ``[lo, hi]``; None becomes an empty string."""
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render an escaped HTML table; numbers are right-aligned."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if isinstance(cell, (int, float)) or cell is None else ""
            cells.append(f"<td{cls}>{escape(_fmt(cell))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _meta_value(value: Any) -> str:
    """Compact string form of a meta value (nested values as JSON)."""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _meta_section(meta: Mapping[str, Any]) -> str:
    """Key/value table of run metadata (the skipped list is summarised by count)."""
    rows = []
    for key, value in meta.items():
        if key == "skipped" and isinstance(value, list):
            value = f"{len(value)} file(s), listed below"
        rows.append([str(key), _meta_value(value)])
    if not rows:
        return ""
    return "<h2>Run</h2>" + _table(["key", "value"], rows)


def _headline_section(m: Mapping[str, Any]) -> str:
    """Headline metrics with their intervals."""
    rows = [
        ["accuracy", m.get("accuracy"), _ci(m.get("accuracy_ci")), _ci(m.get("accuracy_exact_ci"))],
        ["ROC-AUC", m.get("roc_auc"), _ci(m.get("roc_auc_ci")), ""],
        ["average precision", m.get("average_precision"), _ci(m.get("average_precision_ci")), ""],
        ["balanced accuracy", m.get("balanced_accuracy"), "", ""],
        ["real accuracy (TNR)", m.get("real_acc"), "", ""],
        ["fake accuracy (TPR)", m.get("fake_acc"), "", ""],
        ["log loss", m.get("log_loss"), "", ""],
        ["Brier score", m.get("brier"), "", ""],
    ]
    header = ["metric", "value", "bootstrap 95% CI", "exact 95% CI (Clopper–Pearson)"]
    counts = (
        f"n = {m.get('n')} ({m.get('n_real')} real, {m.get('n_fake')} fake); "
        f"threshold {_fmt(m.get('threshold'), 2)} on P(fake)"
    )
    return f"<h2>Metrics</h2><p class='headline'>{escape(counts)}</p>" + _table(header, rows)


def _warnings_section(m: Mapping[str, Any]) -> str:
    """Visible box with the plain-language caveats."""
    items = m.get("warnings") or []
    if not items:
        return ""
    lis = "".join(f"<li>{escape(str(w))}</li>" for w in items)
    return f"<div class='warnings'><strong>Read with care</strong><ul>{lis}</ul></div>"


def _classification_section(m: Mapping[str, Any]) -> str:
    """Classification report (per-class precision/recall/F1) and confusion matrix tables."""
    report = m.get("classification_report") or {}
    rows = []
    for name, values in report.items():
        if isinstance(values, Mapping):
            rows.append(
                [name]
                + [values.get(k) for k in ("precision", "recall", "f1-score")]
                + [int(values.get("support") or 0)]
            )
        else:
            rows.append([name, "", "", values, m.get("n")])
    out = "<h2>Classification report</h2>"
    out += _table(["", "precision", "recall", "f1-score", "support"], rows)
    cm = m.get("confusion_matrix")
    if cm:
        cm_rows = [[f"true {name}", *cm[i]] for i, name in enumerate(("real", "fake"))]
        out += "<h3>Confusion matrix</h3>"
        out += _table(["", "predicted real", "predicted fake"], cm_rows)
    return out


def _breakdown_section(m: Mapping[str, Any]) -> str:
    """One table per breakdown key (e.g. group, source)."""
    breakdown = m.get("breakdown") or {}
    if not breakdown:
        return ""
    keys = ("n", "n_real", "n_fake", "accuracy", "roc_auc", "real_acc", "fake_acc")
    out = "<h2>Breakdown</h2>"
    for name, cells in breakdown.items():
        rows = [[value, *(stats.get(k) for k in keys)] for value, stats in cells.items()]
        out += f"<h3>by {escape(str(name))}</h3>" + _table([name, *keys], rows)
    return out


def _img_tag(path: Path, alt: str) -> str:
    """Inline a PNG as a base64 data URI ``<img>`` tag."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{escape(alt)}'>"


def _plots_section(images: Mapping[str, Path]) -> str:
    """All plots inlined as data URIs."""
    tags = "".join(_img_tag(path, name) for name, path in images.items())
    return f"<h2>Plots</h2><div class='plots'>{tags}</div>"


def _skipped_section(meta: Mapping[str, Any]) -> str:
    """Table of files skipped while loading the data (first 200 shown)."""
    skipped = meta.get("skipped")
    if not isinstance(skipped, list) or not skipped:
        return ""
    rows = []
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        item = item if isinstance(item, Mapping) else {"path": item}
        rows.append([str(item.get("path", "")), str(item.get("reason", ""))])
    shown = min(len(skipped), MAX_SKIPPED_SHOWN)
    note = f"{len(skipped)} file(s) skipped; showing the first {shown}."
    return f"<h2>Skipped files</h2><p>{escape(note)}</p>" + _table(["path", "reason"], rows)


def _render_html(
    title: str, metrics: Mapping[str, Any], meta: Mapping[str, Any], images: Mapping[str, Path]
) -> str:
    """Assemble the full HTML document."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    footer = f"Generated by fakescope {__version__} on {created}."
    body = "".join(
        [
            f"<h1>{escape(title)}</h1>",
            _meta_section(meta),
            _headline_section(metrics),
            _warnings_section(metrics),
            _classification_section(metrics),
            _breakdown_section(metrics),
            _plots_section(images),
            _skipped_section(meta),
            f"<p class='muted'>{escape(footer)}</p>",
        ]
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _make_plots(
    out: Path,
    metrics: Mapping[str, Any],
    predictions: pd.DataFrame,
    history: Sequence[Mapping[str, Any]] | None,
    image_loader: Callable[[str], Any] | None,
) -> dict[str, Path]:
    """Write every PNG into ``out`` and return them by name, in display order."""
    images: dict[str, Path] = {}
    if history:
        images["training_curves"] = plots.plot_training_curves(
            history, out / PLOT_FILES["training_curves"]
        )
    cm = metrics.get("confusion_matrix") or [[0, 0], [0, 0]]
    images["confusion_matrix"] = plots.plot_confusion_matrix(
        cm, out / PLOT_FILES["confusion_matrix"]
    )
    y, s = predictions["label"].to_numpy(), predictions["score"].to_numpy(dtype=float)
    images["roc"] = plots.plot_roc(y, s, out / PLOT_FILES["roc"])
    images["pr"] = plots.plot_pr(y, s, out / PLOT_FILES["pr"])
    images["grid"] = plots.plot_prediction_grid(
        predictions, out / PLOT_FILES["grid"], image_loader=image_loader
    )
    return images


def _render(
    out: Path,
    metrics: Mapping[str, Any],
    predictions: pd.DataFrame,
    history: Sequence[Mapping[str, Any]] | None,
    meta: Mapping[str, Any] | None,
    title: str,
    image_loader: Callable[[str], Any] | None,
) -> Path:
    """Write the plots and ``report.html`` (not the data files) into ``out``."""
    images = _make_plots(out, metrics, predictions, history, image_loader)
    report = out / REPORT_FILE
    report.write_text(_render_html(title, metrics, meta or {}, images), encoding="utf-8")
    logger.info("wrote report %s", report)
    return report


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON (non-JSON values via ``str``)."""
    path.write_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False), encoding="utf-8")


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    predictions: pd.DataFrame,
    history: Sequence[Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
    title: str = "fakescope report",
    image_loader: Callable[[str], Any] | None = None,
) -> Path:
    """Write metrics, predictions, plots and a self-contained ``report.html``.

    Besides ``metrics.json``, ``predictions.csv``, the PNGs and ``report.html``,
    ``history.json`` and ``meta.json`` are written when given, so that
    :func:`rebuild_report` can reproduce the report later.

    Args:
        out_dir: Output folder (created if needed).
        metrics: Output of :func:`fakescope.eval.metrics.compute_metrics`.
        predictions: Columns ``path, label, score, pred`` (extra columns kept).
        history: Optional per-epoch training rows for the training curves.
        meta: Optional run metadata; ``meta["skipped"]`` may list ``{path, reason}``.
        title: Report title.
        image_loader: Optional ``loader(path)`` for the prediction grid images.

    Returns:
        Path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / METRICS_FILE, metrics)
    predictions.to_csv(out / PREDICTIONS_FILE, index=False)
    if history:
        _write_json(out / HISTORY_FILE, list(history))
    if meta:
        _write_json(out / META_FILE, dict(meta))
    return _render(out, metrics, predictions, history, meta, title, image_loader)


def _read_json(path: Path) -> Any:
    """Read a JSON file, or return None when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def rebuild_report(out_dir: str | Path, title: str = "fakescope report") -> Path:
    """Rebuild plots and ``report.html`` from the files already saved in ``out_dir``.

    Reads ``metrics.json`` and ``predictions.csv`` (required) and ``history.json``
    and ``meta.json`` (optional). The data files are not rewritten. No model needed.

    Args:
        out_dir: Folder written earlier by :func:`write_report`.
        title: Report title.

    Returns:
        Path of ``report.html``.

    Raises:
        FileNotFoundError: If ``metrics.json`` or ``predictions.csv`` is missing.
    """
    out = Path(out_dir)
    for name in (METRICS_FILE, PREDICTIONS_FILE):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} not found; cannot rebuild the report")
    metrics = _read_json(out / METRICS_FILE)
    predictions = pd.read_csv(out / PREDICTIONS_FILE)
    history = _read_json(out / HISTORY_FILE)
    meta = _read_json(out / META_FILE) or {}
    return _render(out, metrics, predictions, history, meta, title, None)
