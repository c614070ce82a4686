"""Self-contained HTML evaluation report (metrics, plots, predictions) and its rebuild."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.eval import plots
from fakescope.eval.metrics import (
    FPR_TARGETS,
    MIN_GROUP_N,
    SMALL_GROUPS_KEY,
    SMALL_N,
    exact_binomial_ci,
    is_zero_width,
)
from fakescope.utils import atomic_write_text
from fakescope.version import __version__

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
HISTORY_FILE = "history.json"
META_FILE = "meta.json"
REPORT_FILE = "report.html"
#: ``fakescope robustness`` writes its section here too; a rebuilt report puts it back.
ROBUSTNESS_HTML = "robustness.html"
SECTION_START = "<!-- fakescope:robustness:start -->"
SECTION_END = "<!-- fakescope:robustness:end -->"
_SECTION = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END), re.DOTALL)
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
.plots img { max-width: 100%; border: 1px solid #d0d7de; }
.plots figure { display: inline-block; vertical-align: top; max-width: 100%;
                margin: 0.4em 0.8em 0.8em 0; }
.plots figcaption { font-size: 0.88em; color: #424a53; max-width: 620px; }
.caveat { color: #7d4e00; background: #fff8c5; padding: 0 0.2em; }
code { background: #f6f8fa; padding: 0 0.2em; }
"""

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


class _Raw(str):
    """A table cell or caption already in HTML (not escaped again)."""


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
            text = cell if isinstance(cell, _Raw) else escape(_fmt(cell))
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


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
    return _fmt(value)


def _is_data_summary(value: Any) -> bool:
    """Whether ``value`` is a dataset summary (:func:`fakescope.data.manifest.summarize`)."""
    return isinstance(value, Mapping) and {"n", "n_real", "n_fake"} <= set(value)


def _counts(c: Mapping[str, Any]) -> str:
    """``56 (28 real, 28 fake)``."""
    return f"{c.get('n')} ({c.get('real')} real, {c.get('fake')} fake)"


def _data_summary(summary: Mapping[str, Any]) -> _Raw:
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
    return _Raw("<br>".join(escape(line) for line in lines))


def _meta_section(meta: Mapping[str, Any]) -> str:
    """Key/value table of run metadata (the skipped list is summarised by count)."""
    rows = []
    for key, value in meta.items():
        if key == "skipped" and isinstance(value, list):
            value = f"{len(value)} file(s), listed below"
        cell = _data_summary(value) if _is_data_summary(value) else _meta_value(value)
        rows.append([str(key), cell])
    if not rows:
        return ""
    return "<h2>Run</h2>" + _table(["key", "value"], rows)


def _caveat(text: str) -> _Raw:
    """A highlighted inline caveat."""
    return _Raw(f"<span class='caveat'><strong>Caveat:</strong> {escape(text)}</span>")


def _tpr_name(fpr: float) -> str:
    """``TPR at 1% FPR``."""
    return f"TPR at {100 * fpr:.0f}% FPR"


def _few_reals_note(m: Mapping[str, Any], fpr: float) -> str | None:
    """Why a TPR at ``fpr`` is measured at FPR 0: too few reals to flag a fraction ``fpr``."""
    n_real = m.get("n_real")
    if not isinstance(n_real, int) or n_real <= 0 or n_real * fpr >= 1 - 1e-9:
        return None
    return (
        f"with {n_real} reals the smallest non-zero FPR is 1/{n_real}, above {100 * fpr:.0f}%: "
        "this is the TPR with no real flagged (FPR 0)"
    )


def _notes(m: Mapping[str, Any], key: str, extra: Sequence[str | None] = ()) -> _Raw:
    """Caveats for one metric row: a zero-width interval, plus any ``extra`` notes."""
    texts = [ZERO_WIDTH_NOTE] if is_zero_width(m.get(f"{key}_ci")) else []
    texts += [e for e in extra if e]
    return _Raw(" ".join(_caveat(x) for x in texts))


def _exact_note(m: Mapping[str, Any]) -> str | None:
    """Point to the exact accuracy interval when the bootstrap one has zero width."""
    if is_zero_width(m.get("accuracy_ci")) and m.get("accuracy_exact_ci"):
        return f"read the exact interval {_ci(m.get('accuracy_exact_ci'))} instead"
    return None


def _ece_note(m: Mapping[str, Any]) -> str | None:
    """Caveat for an ECE from few images."""
    n = m.get("n")
    if m.get("ece") is None or not isinstance(n, int) or n >= SMALL_N:
        return None
    return f"only {n} images over {m.get('ece_bins', 10)} bins: sampling noise alone inflates ECE"


def _headline_section(m: Mapping[str, Any]) -> str:
    """Headline metrics with their intervals and, next to them, caveats about those intervals."""
    rows = [
        [
            "accuracy",
            m.get("accuracy"),
            _ci(m.get("accuracy_ci")),
            _ci(m.get("accuracy_exact_ci")),
            _notes(m, "accuracy", [_exact_note(m)]),
        ],
        ["ROC-AUC", m.get("roc_auc"), _ci(m.get("roc_auc_ci")), "", _notes(m, "roc_auc")],
        [
            "average precision",
            m.get("average_precision"),
            _ci(m.get("average_precision_ci")),
            "",
            _notes(m, "average_precision"),
        ],
    ]
    for key, fpr in FPR_TARGETS:
        rows.append(
            [
                _tpr_name(fpr),
                m.get(key),
                _ci(m.get(f"{key}_ci")),
                "",
                _notes(m, key, [_few_reals_note(m, fpr) if m.get(key) is not None else None]),
            ]
        )
    rows += [
        ["balanced accuracy", m.get("balanced_accuracy"), "", "", ""],
        ["real accuracy (TNR)", m.get("real_acc"), "", "", ""],
        ["fake accuracy (TPR)", m.get("fake_acc"), "", "", ""],
        ["log loss", m.get("log_loss"), "", "", ""],
        ["Brier score", m.get("brier"), "", "", ""],
        [
            f"expected calibration error ({m.get('ece_bins', 10)} bins)",
            m.get("ece"),
            "",
            "",
            _notes(m, "ece", [_ece_note(m)]),
        ],
    ]
    header = ["metric", "value", "bootstrap 95% CI", "exact 95% CI (Clopper–Pearson)", "note"]
    counts = (
        f"n = {m.get('n')} ({m.get('n_real')} real, {m.get('n_fake')} fake); "
        f"threshold {_fmt(m.get('threshold'), 2)} on P(fake)"
    )
    defs = (
        "TPR at x% FPR: the highest share of fakes caught by any threshold that flags at most "
        "x% of the reals (no interpolation). ECE: the image-weighted mean gap between mean "
        "P(fake) and the fraction of fakes over equal-width bins of P(fake)."
    )
    return (
        f"<h2>Metrics</h2><p class='headline'>{escape(counts)}</p>"
        + _table(header, rows)
        + f"<p class='muted'>{escape(defs)}</p>"
    )


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


def _group_label(value: str, stats: Mapping[str, Any]) -> str:
    """Row label of a breakdown cell; the pooled small-groups cell names what it holds."""
    if "n_groups" not in stats:
        return value
    names = [str(x) for x in stats.get("groups") or []]
    shown = ", ".join(names[:MAX_FOLDED_NAMES]) + (", …" if len(names) > MAX_FOLDED_NAMES else "")
    k = stats.get("n_groups", len(names))
    return f"{value}: {k} group{'' if k == 1 else 's'} pooled ({shown})"


def _group_exact_ci(stats: Mapping[str, Any]) -> str:
    """The cell's exact accuracy interval (computed from n and accuracy for older files)."""
    ci = stats.get("accuracy_exact_ci")
    n, acc = stats.get("n"), stats.get("accuracy")
    if ci is None and isinstance(n, int) and n > 0 and acc is not None:
        ci = exact_binomial_ci(round(acc * n), n)
    return _ci(ci)


def _breakdown_section(m: Mapping[str, Any]) -> str:
    """One table per breakdown key (e.g. group, source), small groups pooled into one row."""
    breakdown = m.get("breakdown") or {}
    if not breakdown:
        return ""
    before = ("n", "n_real", "n_fake", "accuracy")
    after = ("roc_auc", "real_acc", "fake_acc")
    out = "<h2>Breakdown</h2>"
    out += (
        "<p class='muted'>Values with too few images to read alone (by default fewer than "
        f"{MIN_GROUP_N}) are pooled into one row, &ldquo;{escape(SMALL_GROUPS_KEY)}&rdquo;: a "
        "number from a handful of images is noise. Accuracy intervals are exact "
        "(Clopper–Pearson); AUC is n/a for a one-class row.</p>"
    )
    for name, cells in breakdown.items():
        rows = [
            [
                _group_label(value, stats),
                *(stats.get(k) for k in before),
                _group_exact_ci(stats),
                *(stats.get(k) for k in after),
            ]
            for value, stats in cells.items()
        ]
        header = [name, *before, "accuracy exact 95% CI", *after]
        out += f"<h3>by {escape(str(name))}</h3>" + _table(header, rows)
    return out


def _img_tag(path: Path, alt: str) -> str:
    """Inline a PNG as a base64 data URI ``<img>`` tag."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{escape(alt)}'>"


def _plots_section(images: Mapping[str, Path], captions: Mapping[str, str] | None = None) -> str:
    """All plots inlined as data URIs, each in a figure with its caption (HTML) when given."""
    captions = captions or {}
    figures = []
    for name, path in images.items():
        caption = captions.get(name)
        cap = f"<figcaption>{caption}</figcaption>" if caption else ""
        figures.append(f"<figure>{_img_tag(path, name)}{cap}</figure>")
    return f"<h2>Plots</h2><div class='plots'>{''.join(figures)}</div>"


def _band(metrics: Mapping[str, Any], meta: Mapping[str, Any]) -> float | None:
    """The uncertain band's half-width from the metrics or the run metadata, if recorded."""
    for source in (metrics, meta):
        value = source.get("uncertain_band")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _interval_caveats(m: Mapping[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    """Caveats (HTML) for the zero-width intervals among ``keys`` (metric key, display name)."""
    out = []
    for key, name in keys:
        ci = m.get(f"{key}_ci")
        if m.get(key) is not None and is_zero_width(ci):
            out.append(_caveat(f"{name} interval {_ci(ci)}: {ZERO_WIDTH_NOTE}."))
    return " ".join(out)


def _join(*parts: str) -> str:
    """Join the non-empty caption parts with spaces."""
    return " ".join(p for p in parts if p)


def _captions(
    m: Mapping[str, Any],
    meta: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] | None,
) -> dict[str, str]:
    """HTML captions per plot, with the caveats that belong next to each figure."""
    t = m.get("threshold")
    at_t = f"the operating threshold {_fmt(t, 2)}" if t is not None else "the threshold (unknown)"
    best = plots.best_epoch(history or [])
    best_text = (
        f"Dotted line: best epoch {best[0]:g} (lowest val loss, {best[1]:.3f})."
        if best
        else "No val loss recorded: no best epoch marked."
    )
    tprs = "; ".join(
        f"{_tpr_name(fpr)} {_fmt(m.get(key))} {_ci(m.get(f'{key}_ci'))}".rstrip()
        for key, fpr in FPR_TARGETS
    )
    roc_keys = [("roc_auc", "ROC-AUC")] + [(k, _tpr_name(f)) for k, f in FPR_TARGETS]
    few_reals = [
        _caveat(f"{_tpr_name(fpr)}: {note}.")
        for key, fpr in FPR_TARGETS
        if m.get(key) is not None and (note := _few_reals_note(m, fpr))
    ]
    ece_note = _ece_note(m)
    band = _band(m, meta)
    band_text = (
        f"shaded: the uncertain band ±{band:.2f}"
        if band
        else "no uncertain band recorded in metrics.json or meta.json, so only the threshold"
    )
    return {
        "training_curves": escape(f"Loss and accuracy per epoch, train vs val. {best_text}"),
        "confusion_matrix": escape(f"Confusion matrix at {at_t}."),
        "roc": _join(
            escape(
                f"ROC on a linear and a log false-positive axis; the dot is {at_t}, the squares "
                f"TPR at 1% and 5% FPR ({tprs})."
            ),
            _interval_caveats(m, roc_keys),
            *few_reals,
        ),
        "pr": _join(
            escape(f"Precision-recall, fake = positive; the dot is {at_t}."),
            _interval_caveats(m, [("average_precision", "Average precision")]),
        ),
        "reliability": _join(
            escape(
                "Reliability diagram: mean predicted P(fake) against the observed fraction of "
                "fakes per bin (numbers: images per bin; whiskers: exact 95% intervals); "
                f"ECE {_fmt(m.get('ece'))}."
            ),
            _caveat(ece_note) if ece_note else "",
        ),
        "score_histograms": escape(
            f"P(fake) for real and for fake images; dashed line: {at_t}; {band_text}."
        ),
        "grid": escape("Example predictions, mistakes first (most confident mistakes first)."),
    }


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


def _fitted_once(history: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether the training history is one record: nothing to draw a curve through."""
    return bool(history) and len(history) == 1


def _training_section(history: Sequence[Mapping[str, Any]] | None) -> str:
    """For a detector fitted in one step (a probe has no epochs), what a curve would have been:
    a note that there is none, and the one record's losses and accuracies."""
    if not _fitted_once(history):
        return ""
    rec = history[0]
    how = (
        "The detector was fitted in one step (a probe has no epochs)"
        if "C" in rec
        else "The detector was trained for one epoch"
    )
    parts = [
        f"{name} loss {_fmt(rec.get(f'{split}_loss'))}, accuracy {_fmt(rec.get(f'{split}_acc'))}"
        for split, name in (("train", "Train"), ("val", "validation"))
        if rec.get(f"{split}_loss") is not None
    ]
    if isinstance(rec.get("C"), (int, float)):
        parts.append(f"regularisation strength C = {rec['C']:g}, chosen on validation")
    text = f"{how}, so there is no training curve. " + "; ".join(parts) + "."
    return f"<h2>Training</h2><p>{escape(text)}</p>"


def _render_html(
    title: str,
    metrics: Mapping[str, Any],
    meta: Mapping[str, Any],
    images: Mapping[str, Path],
    captions: Mapping[str, str] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
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
            _training_section(history),
            _plots_section(images, captions),
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
    band: float | None = None,
) -> dict[str, Path]:
    """Write every PNG into ``out`` and return them by name, in display order."""
    images: dict[str, Path] = {}
    if history and not _fitted_once(history):  # one record is one dot, not a curve
        images["training_curves"] = plots.plot_training_curves(
            history, out / PLOT_FILES["training_curves"]
        )
    cm = metrics.get("confusion_matrix") or [[0, 0], [0, 0]]
    images["confusion_matrix"] = plots.plot_confusion_matrix(
        cm, out / PLOT_FILES["confusion_matrix"]
    )
    y, s = predictions["label"].to_numpy(), predictions["score"].to_numpy(dtype=float)
    t = metrics.get("threshold")
    threshold = float(t) if t is not None else None
    images["roc"] = plots.plot_roc(y, s, out / PLOT_FILES["roc"], threshold=threshold)
    images["pr"] = plots.plot_pr(y, s, out / PLOT_FILES["pr"], threshold=threshold)
    images["reliability"] = plots.plot_reliability(
        y, s, out / PLOT_FILES["reliability"], n_bins=int(metrics.get("ece_bins") or 10)
    )
    images["score_histograms"] = plots.plot_score_histograms(
        y, s, out / PLOT_FILES["score_histograms"], threshold=threshold, band=band
    )
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
    meta = meta or {}
    band = _band(metrics, meta)
    images = _make_plots(out, metrics, predictions, history, image_loader, band)
    captions = _captions(metrics, meta, history)
    report = out / REPORT_FILE
    html = _render_html(title, metrics, meta, images, captions, history)
    section = saved_section(out)
    if section is not None:  # a robustness run's section survives a rebuild
        html = splice_section(html, section)
    atomic_write_text(report, html)
    logger.info("wrote report %s", report)
    return report


def saved_section(out: Path) -> str | None:
    """The robustness section ``fakescope robustness`` saved in ``out`` (None when none)."""
    path = out / ROBUSTNESS_HTML
    if not path.is_file():
        return None
    match = _SECTION.search(path.read_text(encoding="utf-8"))
    return match.group(0) if match else None


def splice_section(html: str, section: str) -> str:
    """``html`` with its robustness section replaced by ``section``, or ``section`` added before
    the footer (or the end) when it has none."""
    if _SECTION.search(html):
        return _SECTION.sub(lambda _: section, html, count=1)
    anchor = html.find("<p class='muted'>Generated by")
    if anchor < 0:
        anchor = html.rfind("</body>")
    return html + section if anchor < 0 else html[:anchor] + section + html[anchor:]


def insert_section(report: str | Path, section: str) -> bool:
    """Insert or replace the robustness section of an existing ``report.html`` (atomically);
    True when the file existed and was updated."""
    path = Path(report)
    if not path.is_file():
        return False
    atomic_write_text(path, splice_section(path.read_text(encoding="utf-8"), section))
    return True


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
