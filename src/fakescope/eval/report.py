"""Self-contained HTML evaluation report (metrics, plots, predictions) and its rebuild.

``report.html`` is rendered from the files a run saves, with the ``report.html`` template
(:mod:`fakescope.eval.html`): ``metrics.json``, ``meta.json``, ``history.json``, the PNGs, and,
when ``fakescope robustness`` ran in the same folder, ``robustness.csv``, ``robustness.json`` and
``robustness.png`` (the "Robustness" section). So :func:`rebuild_report` (``fakescope report``)
gives back every section, and a robustness run re-renders the report to add its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.eval import plots
from fakescope.eval.html import Caveat, Lines, Rich, ci, fmt, num, render, with_ci
from fakescope.eval.intervals import exact_binomial_ci, is_zero_width
from fakescope.eval.metrics import MIN_GROUP_N, SMALL_GROUPS_KEY, SMALL_N
from fakescope.eval.result import Interval, Metrics, SubsetSummary
from fakescope.utils import atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"
META_FILE = "meta.json"
REPORT_FILE = "report.html"
#: The report's title, saved so that a rebuild (or a robustness run) keeps it.
SETTINGS_FILE = "report.json"
DEFAULT_TITLE = "fakescope report"
#: What ``fakescope robustness`` saves; the report's "Robustness" section is rendered from them.
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_PNG = "robustness.png"
ROBUSTNESS_HTML = "robustness.html"
#: What ``fakescope robustness`` adds to a report folder.
ROBUSTNESS_FILES = (ROBUSTNESS_CSV, ROBUSTNESS_JSON, ROBUSTNESS_PNG, ROBUSTNESS_HTML)
MAX_SKIPPED_SHOWN = 200

PLOT_FILES = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "score_histograms": "score_histograms.png",
    "grid": "predictions_grid.png",
}
ZERO_WIDTH_NOTE = (
    "zero-width interval: every bootstrap resample gave the same value, so this sample cannot "
    "show the uncertainty; it is not certainty"
)
MAX_FOLDED_NAMES = 8


def _meta_value(value: Any) -> str:
    """Readable text for a meta value: nested values as ``key: value`` pairs, not JSON."""
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_nested_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_nested_value(v) for v in value)
    return str(value)


def _nested_value(value: Any) -> str:
    """A value inside a mapping or list: nested mappings in parentheses."""
    if isinstance(value, Mapping):
        return f"({', '.join(f'{k}: {_nested_value(v)}' for k, v in value.items())})"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_nested_value(v) for v in value)}]"
    return fmt(value)


def _is_data_summary(value: Any) -> bool:
    """Whether ``value`` is a dataset summary (:func:`fakescope.data.manifest.summarize`)."""
    return isinstance(value, Mapping) and {"n", "n_real", "n_fake"} <= set(value)


def _counts(c: Mapping[str, Any]) -> str:
    """``56 (28 real, 28 fake)``."""
    return f"{c.get('n')} ({c.get('real')} real, {c.get('fake')} fake)"


def _data_summary(summary: Mapping[str, Any]) -> Lines:
    """A dataset summary as a few lines of text: totals, then splits, then sources."""
    first = f"{summary['n']} images: {summary['n_real']} real, {summary['n_fake']} fake"
    if summary.get("n_groups"):
        first += f"; {summary['n_groups']} groups"
    lines = [first]
    for key, label in (("splits", "splits"), ("sources", "sources")):
        parts = summary.get(key)
        if isinstance(parts, Mapping) and parts:
            counts = "; ".join(
                f"{name} {_counts(c)}" for name, c in parts.items() if isinstance(c, Mapping)
            )
            lines.append(f"{label}: {counts}")
    return Lines(tuple(lines))


def _meta_rows(meta: Mapping[str, Any]) -> list[list[Any]]:
    """Key/value rows of run metadata (the skipped list is summarised by count)."""
    rows = []
    for key, value in meta.items():
        if key == "skipped" and isinstance(value, list):
            value = f"{len(value)} file(s), listed below"
        cell = _data_summary(value) if _is_data_summary(value) else _meta_value(value)
        rows.append([str(key), cell])
    return rows


def _tpr_name(fpr: float) -> str:
    """``TPR at 1% FPR``."""
    return f"TPR at {100 * fpr:.0f}% FPR"


def _few_reals_note(m: Metrics, fpr: float) -> str | None:
    """Why a TPR at ``fpr`` is measured at FPR 0: too few reals to flag a fraction ``fpr``."""
    n_real = m.n_real
    if n_real <= 0 or n_real * fpr >= 1 - 1e-9:
        return None
    return (
        f"with {n_real} reals the smallest non-zero FPR is 1/{n_real}, above {100 * fpr:.0f}%: "
        "this is the TPR with no real flagged (FPR 0)"
    )


def _notes(interval: Interval | None, extra: Sequence[str | None] = ()) -> Rich:
    """Caveats for one metric row: a zero-width ``interval``, plus any ``extra`` notes."""
    texts = [ZERO_WIDTH_NOTE] if is_zero_width(interval) else []
    texts += [e for e in extra if e]
    return Rich(tuple(Caveat(x) for x in texts))


def _exact_note(m: Metrics) -> str | None:
    """Point to the exact accuracy interval when the bootstrap one has zero width."""
    if is_zero_width(m.accuracy_ci) and m.accuracy_exact_ci:
        return f"read the exact interval {ci(m.accuracy_exact_ci)} instead"
    return None


def _ece_note(m: Metrics) -> str | None:
    """Caveat for an ECE from few images."""
    if m.ece is None or m.n >= SMALL_N:
        return None
    return f"only {m.n} images over {m.ece_bins} bins: sampling noise alone inflates ECE"


def _headline(m: Metrics) -> dict[str, Any]:
    """Headline metrics with their intervals and, next to them, caveats about those intervals."""
    rows = [
        [
            "accuracy",
            m.accuracy,
            ci(m.accuracy_ci),
            ci(m.accuracy_exact_ci),
            _notes(m.accuracy_ci, [_exact_note(m)]),
        ],
        ["ROC-AUC", m.roc_auc, ci(m.roc_auc_ci), "", _notes(m.roc_auc_ci)],
        [
            "average precision",
            m.average_precision,
            ci(m.average_precision_ci),
            "",
            _notes(m.average_precision_ci),
        ],
    ]
    for tpr in m.tprs():
        rows.append(
            [
                _tpr_name(tpr.fpr),
                tpr.value,
                ci(tpr.ci),
                "",
                _notes(tpr.ci, [_few_reals_note(m, tpr.fpr) if tpr.value is not None else None]),
            ]
        )
    rows += [
        ["balanced accuracy", m.balanced_accuracy, "", "", Rich()],
        ["real accuracy (TNR)", m.real_acc, "", "", Rich()],
        ["fake accuracy (TPR)", m.fake_acc, "", "", Rich()],
        ["log loss", m.log_loss, "", "", Rich()],
        ["Brier score", m.brier, "", "", Rich()],
        [
            f"expected calibration error ({m.ece_bins} bins)",
            m.ece,
            "",
            "",
            _notes(None, [_ece_note(m)]),
        ],
    ]
    return {
        "counts": (
            f"n = {m.n} ({m.n_real} real, {m.n_fake} fake); "
            f"threshold {fmt(m.threshold, 2)} on P(fake)"
        ),
        "header": [
            "metric",
            "value",
            "bootstrap 95% CI",
            "exact 95% CI (Clopper–Pearson)",
            "note",
        ],
        "rows": rows,
        "definitions": (
            "TPR at x% FPR: the highest share of fakes caught by any threshold that flags at "
            "most x% of the reals (no interpolation). ECE: the image-weighted mean gap between "
            "mean P(fake) and the fraction of fakes over equal-width bins of P(fake)."
        ),
    }


def _classification_rows(m: Metrics) -> list[list[Any]]:
    """Classification report rows (per-class precision/recall/F1, support)."""
    rows = []
    for name, values in m.classification_report.items():
        if isinstance(values, Mapping):
            rows.append(
                [name]
                + [values.get(k) for k in ("precision", "recall", "f1-score")]
                + [int(values.get("support") or 0)]
            )
        else:
            rows.append([name, "", "", values, m.n])
    return rows


def _confusion_rows(m: Metrics) -> list[list[Any]]:
    """Confusion matrix rows (empty when the metrics have none)."""
    cm = m.confusion_matrix
    return [[f"true {name}", *cm[i]] for i, name in enumerate(("real", "fake"))] if cm else []


def _group_label(value: str, stats: SubsetSummary) -> str:
    """Row label of a breakdown cell; the pooled small-groups cell names what it holds."""
    if stats.n_groups is None:
        return value
    names = stats.groups or []
    shown = ", ".join(names[:MAX_FOLDED_NAMES]) + (", …" if len(names) > MAX_FOLDED_NAMES else "")
    k = stats.n_groups
    return f"{value}: {k} group{'' if k == 1 else 's'} pooled ({shown})"


def _group_exact_ci(stats: SubsetSummary) -> str:
    """The cell's exact accuracy interval (computed from n and accuracy for older files)."""
    interval = stats.accuracy_exact_ci
    if interval is None and stats.n > 0:
        interval = exact_binomial_ci(round(stats.accuracy * stats.n), stats.n)
    return ci(interval)


def _breakdown(m: Metrics) -> list[dict[str, Any]]:
    """One table per breakdown key (e.g. group, source), small groups pooled into one row."""
    return [
        {
            "name": str(name),
            "header": [
                name,
                "n",
                "n_real",
                "n_fake",
                "accuracy",
                "accuracy exact 95% CI",
                "roc_auc",
                "real_acc",
                "fake_acc",
            ],
            "rows": [
                [
                    _group_label(value, stats),
                    stats.n,
                    stats.n_real,
                    stats.n_fake,
                    stats.accuracy,
                    _group_exact_ci(stats),
                    stats.roc_auc,
                    stats.real_acc,
                    stats.fake_acc,
                ]
                for value, stats in cells.items()
            ],
        }
        for name, cells in m.breakdown.items()
    ]


def _band(metrics: Metrics, meta: Mapping[str, Any]) -> float | None:
    """The uncertain band's half-width from the metrics or the run metadata, if recorded."""
    if metrics.uncertain_band is not None:
        return metrics.uncertain_band
    value = meta.get("uncertain_band")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _interval_caveats(rows: Sequence[tuple[str, float | None, Interval | None]]) -> list[Caveat]:
    """Caveats for the zero-width intervals among ``rows`` (display name, value, interval)."""
    return [
        Caveat(f"{name} interval {ci(interval)}: {ZERO_WIDTH_NOTE}.")
        for name, value, interval in rows
        if value is not None and is_zero_width(interval)
    ]


def _captions(
    m: Metrics,
    meta: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Rich]:
    """Captions per plot, with the caveats that belong next to each figure."""
    t = m.threshold
    at_t = f"the operating threshold {fmt(t, 2)}" if t is not None else "the threshold (unknown)"
    best = plots.best_epoch(history or [])
    best_text = (
        f"Dotted line: best epoch {best[0]:g} (lowest val loss, {best[1]:.3f})."
        if best
        else "No val loss recorded: no best epoch marked."
    )
    tprs = "; ".join(
        f"{_tpr_name(tpr.fpr)} {fmt(tpr.value)} {ci(tpr.ci)}".rstrip() for tpr in m.tprs()
    )
    roc_rows = [("ROC-AUC", m.roc_auc, m.roc_auc_ci)] + [
        (_tpr_name(tpr.fpr), tpr.value, tpr.ci) for tpr in m.tprs()
    ]
    few_reals = [
        Caveat(f"{_tpr_name(tpr.fpr)}: {note}.")
        for tpr in m.tprs()
        if tpr.value is not None and (note := _few_reals_note(m, tpr.fpr))
    ]
    ece_note = _ece_note(m)
    band = _band(m, meta)
    band_text = (
        f"shaded: the uncertain band ±{band:.2f}"
        if band
        else "no uncertain band recorded in metrics.json or meta.json, so only the threshold"
    )
    return {
        "training_curves": Rich.of(f"Loss and accuracy per epoch, train vs val. {best_text}"),
        "confusion_matrix": Rich.of(f"Confusion matrix at {at_t}."),
        "roc": Rich.of(
            f"ROC on a linear and a log false-positive axis; the dot is {at_t}, the squares "
            f"TPR at 1% and 5% FPR ({tprs}).",
            *_interval_caveats(roc_rows),
            *few_reals,
        ),
        "pr": Rich.of(
            f"Precision-recall, fake = positive; the dot is {at_t}.",
            *_interval_caveats(
                [("Average precision", m.average_precision, m.average_precision_ci)]
            ),
        ),
        "reliability": Rich.of(
            "Reliability diagram: mean predicted P(fake) against the observed fraction of "
            "fakes per bin (numbers: images per bin; whiskers: exact 95% intervals); "
            f"ECE {fmt(m.ece)}.",
            Caveat(ece_note) if ece_note else None,
        ),
        "score_histograms": Rich.of(
            f"P(fake) for real and for fake images; dashed line: {at_t}; {band_text}."
        ),
        "grid": Rich.of("Example predictions, mistakes first (most confident mistakes first)."),
    }


def _skipped(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """Files skipped while loading the data (first 200 shown), or None when none was."""
    skipped = meta.get("skipped")
    if not isinstance(skipped, list) or not skipped:
        return None
    rows = []
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        item = item if isinstance(item, Mapping) else {"path": item}
        rows.append([str(item.get("path", "")), str(item.get("reason", ""))])
    shown = min(len(skipped), MAX_SKIPPED_SHOWN)
    return {"note": f"{len(skipped)} file(s) skipped; showing the first {shown}.", "rows": rows}


def _fitted_once(history: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether the training history is one record: nothing to draw a curve through."""
    return bool(history) and len(history) == 1


def _training_note(history: Sequence[Mapping[str, Any]] | None) -> str | None:
    """For a detector fitted in one step (a probe has no epochs), what a curve would have been:
    a note that there is none, and the one record's losses and accuracies."""
    if not _fitted_once(history):
        return None
    rec = history[0]
    how = (
        "The detector was fitted in one step (a probe has no epochs)"
        if "C" in rec
        else "The detector was trained for one epoch"
    )
    parts = [
        f"{name} loss {fmt(rec.get(f'{split}_loss'))}, accuracy {fmt(rec.get(f'{split}_acc'))}"
        for split, name in (("train", "Train"), ("val", "validation"))
        if rec.get(f"{split}_loss") is not None
    ]
    if isinstance(rec.get("C"), (int, float)):
        parts.append(f"regularisation strength C = {rec['C']:g}, chosen on validation")
    return f"{how}, so there is no training curve. " + "; ".join(parts) + "."


# --------------------------------------------------------------------------------------------
# Robustness section (from the files `fakescope robustness` saves)
# --------------------------------------------------------------------------------------------


def robustness_rows(table: pd.DataFrame) -> list[list[str]]:
    """The robustness table's display rows, one per condition."""
    return [
        [
            f"{r['perturbation']}: {r['description']}",
            str(r["n"]),
            with_ci(r, "auc"),
            with_ci(r, "delta_auc", signed=True),
            with_ci(r, "accuracy"),
            with_ci(r, "delta_accuracy", signed=True),
            num(r["real_acc"]),
            num(r["fake_acc"]),
            num(r["mean_score"]),
        ]
        for r in table.to_dict("records")
    ]


def robustness_section(out: Path) -> dict[str, Any] | None:
    """What the "Robustness" section shows, read from ``robustness.csv`` (the table),
    ``robustness.json`` (the header facts and the notes) and ``robustness.png`` in ``out``;
    None when there is no ``robustness.csv``."""
    if not (out / ROBUSTNESS_CSV).is_file():
        return None
    saved = _read_json(out / ROBUSTNESS_JSON) or {}
    plot = out / ROBUSTNESS_PNG
    return {
        "header": dict(saved.get("header") or {}),
        "notes": [str(n) for n in saved.get("notes") or []],
        "rows": robustness_rows(pd.read_csv(out / ROBUSTNESS_CSV)),
        "plot": plot if plot.is_file() else None,
    }


def render_robustness_page(out_dir: str | Path) -> Path:
    """Write the standalone ``robustness.html`` of ``out_dir`` from its saved robustness files.

    Raises:
        FileNotFoundError: If ``robustness.csv`` is missing.
    """
    out = Path(out_dir)
    section = robustness_section(out)
    if section is None:
        raise FileNotFoundError(f"{out / ROBUSTNESS_CSV} not found")
    path = out / ROBUSTNESS_HTML
    atomic_write_text(path, render("robustness.html", robustness=section))
    return path


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _make_plots(
    out: Path,
    metrics: Metrics,
    predictions: pd.DataFrame,
    history: Sequence[Mapping[str, Any]] | None,
    image_loader: Callable[[str], Any] | None,
    band: float | None = None,
) -> dict[str, Path]:
    """Write every PNG into ``out`` and return them by name, in display order."""
    images: dict[str, Path] = {}
    if history and not _fitted_once(history):  # one record is one dot, not a curve
        images["training_curves"] = plots.plot_training_curves(
            history, out / PLOT_FILES["training_curves"]
        )
    cm = metrics.confusion_matrix or [[0, 0], [0, 0]]
    images["confusion_matrix"] = plots.plot_confusion_matrix(
        cm, out / PLOT_FILES["confusion_matrix"]
    )
    y, s = predictions["label"].to_numpy(), predictions["score"].to_numpy(dtype=float)
    threshold = metrics.threshold
    images["roc"] = plots.plot_roc(y, s, out / PLOT_FILES["roc"], threshold=threshold)
    images["pr"] = plots.plot_pr(y, s, out / PLOT_FILES["pr"], threshold=threshold)
    images["reliability"] = plots.plot_reliability(
        y, s, out / PLOT_FILES["reliability"], n_bins=metrics.ece_bins or 10
    )
    images["score_histograms"] = plots.plot_score_histograms(
        y, s, out / PLOT_FILES["score_histograms"], threshold=threshold, band=band
    )
    images["grid"] = plots.plot_prediction_grid(
        predictions, out / PLOT_FILES["grid"], image_loader=image_loader
    )
    return images


def _saved_plots(out: Path, history: Sequence[Mapping[str, Any]] | None) -> dict[str, Path]:
    """The report's PNGs present in ``out``, in display order (no training curves unless the
    history has more than one record)."""
    images = {name: out / file for name, file in PLOT_FILES.items() if (out / file).is_file()}
    if not history or _fitted_once(history):
        images.pop("training_curves", None)
    return images


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON (non-JSON values via ``str``)."""
    path.write_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False), encoding="utf-8")


def _read_json(path: Path) -> Any:
    """Read a JSON file, or return None when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _require(out: Path, names: Sequence[str] = (METRICS_FILE, PREDICTIONS_FILE)) -> None:
    """Raise FileNotFoundError unless ``out`` holds the files ``names`` (by default a run's
    metrics and predictions)."""
    for name in names:
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} not found; cannot rebuild the report")


def _saved_title(out: Path) -> str:
    """The title saved with the report, or the default one."""
    settings = _read_json(out / SETTINGS_FILE)
    title = settings.get("title") if isinstance(settings, Mapping) else None
    return str(title) if title else DEFAULT_TITLE


def render_report(out_dir: str | Path, title: str | None = None) -> Path:
    """Render ``report.html`` from the files saved in ``out_dir``, without redrawing a plot.

    Reads ``metrics.json`` (required), ``meta.json`` and ``history.json`` (optional), the PNGs
    present, and the robustness files when ``fakescope robustness`` wrote them there. Written
    atomically.

    Args:
        out_dir: A report folder (:func:`write_report`).
        title: Report title; default: the one saved with the report, else "fakescope report".

    Returns:
        Path of ``report.html``.

    Raises:
        FileNotFoundError: If ``metrics.json`` is missing.
        MetricsFileError: If ``metrics.json`` is not JSON or holds values of the wrong type.
    """
    out = Path(out_dir)
    _require(out, [METRICS_FILE])
    m = Metrics.load(out / METRICS_FILE)
    meta = _read_json(out / META_FILE) or {}
    history = _read_json(out / HISTORY_FILE)
    captions = _captions(m, meta, history)
    html = render(
        "report.html",
        title=title or _saved_title(out),
        meta_rows=_meta_rows(meta),
        headline=_headline(m),
        metrics_warnings=list(m.warnings),
        classification=_classification_rows(m),
        confusion=_confusion_rows(m),
        breakdown=_breakdown(m),
        min_group_n=MIN_GROUP_N,
        small_groups_key=SMALL_GROUPS_KEY,
        training=_training_note(history),
        figures=[
            {"name": name, "path": path, "caption": captions.get(name, Rich())}
            for name, path in _saved_plots(out, history).items()
        ],
        skipped=_skipped(meta),
        robustness=robustness_section(out),
    )
    report = out / REPORT_FILE
    atomic_write_text(report, html)
    logger.info("wrote report %s", report)
    return report


def write_report(
    out_dir: str | Path,
    metrics: Metrics,
    predictions: pd.DataFrame,
    history: Sequence[Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
    title: str = DEFAULT_TITLE,
    image_loader: Callable[[str], Any] | None = None,
) -> Path:
    """Write metrics, predictions, plots and a self-contained ``report.html``.

    Besides ``metrics.json``, ``predictions.csv``, the PNGs and ``report.html``,
    ``history.json`` and ``meta.json`` are written when given, and ``report.json`` holds the
    title, so that :func:`rebuild_report` can reproduce the report later. Robustness results of an
    earlier evaluation in the same folder are removed: they describe what this one replaces.

    Args:
        out_dir: Output folder (created if needed).
        metrics: Output of :func:`fakescope.eval.metrics.compute_metrics`; saved as
            ``metrics.json`` (:meth:`~fakescope.eval.result.Metrics.to_json_dict`).
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
    _write_json(out / METRICS_FILE, metrics.to_json_dict())
    predictions.to_csv(out / PREDICTIONS_FILE, index=False)
    for name, obj in ((HISTORY_FILE, list(history or [])), (META_FILE, dict(meta or {}))):
        if obj:
            _write_json(out / name, obj)
        else:  # a report written again into the same folder must not show stale facts
            (out / name).unlink(missing_ok=True)
    stale = [n for n in ROBUSTNESS_FILES if (out / n).is_file()]
    for name in stale:  # robustness results describe the evaluation this one replaces
        (out / name).unlink()
    if stale:
        logger.info("%s: removed the earlier robustness results (%s)", out, ", ".join(stale))
    _write_json(out / SETTINGS_FILE, {"title": title})
    _make_plots(out, metrics, predictions, history, image_loader, _band(metrics, meta or {}))
    return render_report(out, title)


def rebuild_report(out_dir: str | Path, title: str | None = None) -> Path:
    """Rebuild plots and ``report.html`` from the files already saved in ``out_dir``.

    Reads ``metrics.json`` and ``predictions.csv`` (required), ``history.json``,
    ``meta.json`` and ``report.json`` (optional), and the robustness files when present. The
    data files are not rewritten. No model needed.

    Args:
        out_dir: Folder written earlier by :func:`write_report`.
        title: Report title; default: the one saved with the report, else "fakescope report".

    Returns:
        Path of ``report.html``.

    Raises:
        FileNotFoundError: If ``metrics.json`` or ``predictions.csv`` is missing.
        MetricsFileError: If ``metrics.json`` is not JSON or holds values of the wrong type.
    """
    out = Path(out_dir)
    _require(out)
    metrics = Metrics.load(out / METRICS_FILE)
    predictions = pd.read_csv(out / PREDICTIONS_FILE)
    history = _read_json(out / HISTORY_FILE)
    meta = _read_json(out / META_FILE) or {}
    _make_plots(out, metrics, predictions, history, None, _band(metrics, meta))
    return render_report(out, title)
