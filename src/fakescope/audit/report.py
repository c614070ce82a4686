"""Run a dataset audit and write ``audit.json``, CSV tables, PNG plots and ``audit.html``.

Output folder::

    audit.json       summary: warnings, shortcut AUCs, duplicate counts, tables
    features.csv     one row per file: format, size, JPEG quality, subsampling, EXIF, ...
    duplicates.csv   near-duplicate pairs with distances, labels and splits
    *.png            formats by class, resolution scatter, JPEG quality and bytes/pixel by class
    audit.html       self-contained page: warnings first, then tables and the plots inline
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakescope.audit.duplicates import DEFAULT_THRESHOLD, find_duplicates, write_pairs
from fakescope.audit.metadata import extract_features
from fakescope.audit.shortcuts import find_shortcuts
from fakescope.data.manifest import DataError, build_manifest
from fakescope.data.splits import load_splits
from fakescope.eval.html import render
from fakescope.utils import atomic_write_text

logger = logging.getLogger(__name__)

AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
FEATURES_CSV = "features.csv"
DUPLICATES_CSV = "duplicates.csv"
PLOT_FILES = {
    "categories": "audit_categories.png",
    "resolution": "audit_resolution.png",
    "jpeg_quality": "audit_jpeg_quality.png",
    "bytes_per_pixel": "audit_bytes_per_pixel.png",
}
MAX_PAIRS_SHOWN = 100
CLASS_NAMES = {0: "real", 1: "fake"}
CLASS_COLORS = {0: "#1f77b4", 1: "#d62728"}

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_audit_frame(
    data: str | os.PathLike[str], splits: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """The manifest to audit, with a ``split`` column when one is known.

    Args:
        data: A folder tree, a manifest, or a ``splits.csv``.
        splits: A saved splits file whose ``split`` column is joined on ``path``; files of
            ``data`` it does not list get the split ``none``.

    Returns:
        A manifest (``path``, ``label``, ``group``, ``source``, maybe ``split``).

    Raises:
        DataError: When the data or the splits file cannot be read, or they share no file.
    """
    df = build_manifest(data)
    if splits is None:
        return df
    table = load_splits(splits)[["path", "split"]].drop_duplicates("path")
    df = df.drop(columns=["split"], errors="ignore").merge(table, on="path", how="left")
    missing = int(df["split"].isna().sum())
    if missing == len(df):
        raise DataError(f"{splits}: lists none of the {len(df)} files of {data}")
    if missing:
        logger.warning("%d files of %s are not in %s; their split is 'none'", missing, data, splits)
    df["split"] = df["split"].fillna("none").astype(str)
    return df


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _top(values: pd.Series, top: int = 3) -> str:
    """``"JPEG 90%, PNG 10%"`` for a column of categories."""
    shares = values.fillna("n/a").astype(str).replace("", "(none)").value_counts(normalize=True)
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.head(top).items())


def _median(values: pd.Series, digits: int = 0) -> str:
    """Median with the 5–95% range, or ``n/a``."""
    clean = pd.to_numeric(values, errors="coerce").dropna()
    if clean.empty:
        return "n/a"
    lo, mid, hi = np.percentile(clean, [5, 50, 95])
    fmt = f"{{:.{digits}f}}"
    if lo == hi:
        return fmt.format(mid)
    return f"{fmt.format(mid)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _group_row(part: pd.DataFrame) -> dict[str, Any]:
    """One line of the per-class / per-source table."""
    return {
        "n": len(part),
        "format": _top(part["format"]),
        "width": _median(part["width"]),
        "height": _median(part["height"]),
        "aspect": _median(part["aspect"], 2),
        "jpeg_quality": _median(part["jpeg_quality"]),
        "subsampling": _top(part["subsampling"]),
        "exif": f"{100 * part['exif'].mean():.0f}%",
        "camera_make": _top(part["camera_make"]),
        "mode": _top(part["mode"]),
        "bytes_per_pixel": _median(part["bytes_per_pixel"], 2),
    }


def summary_tables(features: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per-class and per-source-and-class summaries of the readable rows.

    Args:
        features: The feature table.

    Returns:
        ``{"by_class": [rows], "by_source": [rows]}``; each row is a dict of short strings.
    """
    ok = features[features["error"].isna()]
    by_class = [
        {"class": CLASS_NAMES.get(int(label), str(label)), **_group_row(part)}
        for label, part in ok.groupby("label", sort=True)
    ]
    by_source = []
    if "source" in ok.columns:
        for (source, label), part in ok.groupby(["source", "label"], sort=True):
            by_source.append(
                {"source": str(source), "class": CLASS_NAMES.get(int(label)), **_group_row(part)}
            )
    return {"by_class": by_class, "by_source": by_source}


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _plt() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG and close it."""
    plt = _plt()
    try:
        fig.savefig(path, dpi=100, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _category_axes(ax: Any, ok: pd.DataFrame, column: str, title: str) -> None:
    """Stacked share of each category per class."""
    table = pd.crosstab(
        ok["label"].map(CLASS_NAMES),
        ok[column].fillna("n/a").astype(str).replace({"": "(none)", "True": "yes", "False": "no"}),
        normalize="index",
    )
    bottom = np.zeros(len(table))
    for category in table.columns:
        values = table[category].to_numpy()
        ax.bar(table.index, values, bottom=bottom, label=str(category))
        for i, (v, b) in enumerate(zip(values, bottom, strict=True)):
            if v >= 0.08:
                ax.text(i, b + v / 2, str(category), ha="center", va="center", fontsize=8)
        bottom += values
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of class")


def plot_categories(ok: pd.DataFrame, path: Path) -> Path:
    """File format, chroma subsampling, colour mode and EXIF presence by class."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for ax, (column, title) in zip(
        axes,
        (
            ("format", "file format"),
            ("subsampling", "chroma subsampling"),
            ("mode", "colour mode"),
            ("exif", "EXIF present"),
        ),
        strict=True,
    ):
        _category_axes(ax, ok, column, title)
    fig.tight_layout()
    return _save(fig, path)


def plot_resolution(ok: pd.DataFrame, path: Path) -> Path:
    """Width against height per class (jittered slightly so stacks of equal sizes show)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    rng = np.random.default_rng(0)
    for label, part in ok.groupby("label"):
        w = part["width"].to_numpy(dtype=float)
        h = part["height"].to_numpy(dtype=float)
        jitter = 1 + rng.normal(0, 0.01, (2, len(w)))
        ax.scatter(
            w * jitter[0],
            h * jitter[1],
            s=10,
            alpha=0.5,
            color=CLASS_COLORS.get(int(label)),
            label=f"{CLASS_NAMES.get(int(label))} (n={len(part)})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("resolution by class")
    ax.legend()
    return _save(fig, path)


def _hist_by_class(
    ok: pd.DataFrame, column: str, path: Path, title: str, xlabel: str, log: bool = False
) -> Path:
    """Overlaid histograms of a numeric column per class."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    values = pd.to_numeric(ok[column], errors="coerce")
    present = values.dropna()
    if present.empty:
        ax.text(0.5, 0.5, "no values (e.g. no JPEG files)", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    data = np.log10(present.clip(lower=1e-6)) if log else present
    lo, hi = float(data.min()), float(data.max())
    bins = np.linspace(lo - 0.5, hi + 0.5, 40) if lo == hi else np.linspace(lo, hi, 40)
    for label in sorted(ok["label"].unique()):
        part = data[ok.loc[present.index, "label"] == label]
        if len(part):
            ax.hist(
                part,
                bins=bins,
                alpha=0.55,
                color=CLASS_COLORS.get(int(label)),
                label=f"{CLASS_NAMES.get(int(label))} (n={len(part)})",
            )
    ax.set_title(title)
    ax.set_xlabel(f"log10 {xlabel}" if log else xlabel)
    ax.set_ylabel("images")
    ax.legend()
    return _save(fig, path)


def make_plots(features: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Write every audit plot into ``out``.

    Args:
        features: The feature table.
        out: Output folder.

    Returns:
        Plot name to PNG path, in display order (empty when no file was readable).
    """
    ok = features[features["error"].isna()]
    if ok.empty:
        return {}
    return {
        "categories": plot_categories(ok, out / PLOT_FILES["categories"]),
        "resolution": plot_resolution(ok, out / PLOT_FILES["resolution"]),
        "jpeg_quality": _hist_by_class(
            ok,
            "jpeg_quality",
            out / PLOT_FILES["jpeg_quality"],
            "estimated JPEG quality by class",
            "quality",
        ),
        "bytes_per_pixel": _hist_by_class(
            ok,
            "bytes_per_pixel",
            out / PLOT_FILES["bytes_per_pixel"],
            "file size per pixel by class",
            "bytes per pixel",
            log=True,
        ),
    }


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def _shortcut_rows(shortcuts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the per-feature AUC table."""
    rows = []
    for s in shortcuts["features"]:
        ci = s["auc_ci"]
        rows.append(
            {
                "feature": s["name"],
                "AUC": s["auc"],
                "95% CI": f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "",
                "level": s["level"],
                "images": s["n"],
                "how": s["method"],
                "classes": s["detail"],
            }
        )
    return rows


def _relative_paths(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pair table with paths shown relative to their common folder."""
    paths = [*pairs["path_a"].astype(str), *pairs["path_b"].astype(str)]
    if not paths:
        return pairs
    try:
        root = os.path.commonpath(paths)
    except ValueError:
        return pairs
    if not root or root in paths:
        return pairs
    out = pairs.copy()
    for column in ("path_a", "path_b"):
        out[column] = [os.path.relpath(p, root) for p in out[column].astype(str)]
    return out


def _duplicate_counts(dup_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The near-duplicate counts table."""
    return [
        {"what": "pairs (pHash distance <= threshold)", "count": dup_summary["n_pairs"]},
        {"what": "byte-identical pairs", "count": dup_summary["n_identical_files"]},
        {"what": "groups of near-duplicates", "count": dup_summary["n_clusters"]},
        {"what": "pairs of a real and a fake image", "count": dup_summary["n_label_conflicts"]},
        {"what": "files that could not be hashed", "count": dup_summary["n_failed"]},
    ]


def _leakage(dup_summary: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Pairs per split pair and images with a copy in an earlier split; None without splits."""
    if "pairs_by_split" not in dup_summary:
        return None
    rows = [{"splits": k, "pairs": v} for k, v in dup_summary["pairs_by_split"].items()]
    rows += [
        {"splits": f"{k} images with a copy in an earlier split", "pairs": v}
        for k, v in dup_summary["leaked_images"].items()
    ]
    return rows


def render_html(summary: Mapping[str, Any], pairs: pd.DataFrame, plots: Mapping[str, Path]) -> str:
    """The self-contained ``audit.html`` document (template ``audit.html``)."""
    combined = summary["shortcuts"]["all_features"]
    ci = combined.get("auc_ci")
    combined_text = (
        "n/a (needs both classes)"
        if combined.get("auc") is None
        else f"{combined['auc']:.3f}" + (f" [95% CI {ci[0]:.3f}–{ci[1]:.3f}]" if ci else "")
    )
    dup = summary["duplicates"]
    return render(
        "audit.html",
        title="fakescope audit",
        s=summary,
        shortcut_rows=_shortcut_rows(summary["shortcuts"]),
        combined_method=combined.get("method") or "",
        combined_text=combined_text,
        dup=dup,
        dup_counts=_duplicate_counts(dup),
        leakage=_leakage(dup),
        pairs_shown=_relative_paths(pairs.head(MAX_PAIRS_SHOWN)).to_dict("records"),
        n_pairs=len(pairs),
        plots=list(plots.values()),
    )


# --------------------------------------------------------------------------------------------
# Summary and entry point
# --------------------------------------------------------------------------------------------


def _duplicate_warnings(dup: Mapping[str, Any]) -> list[str]:
    """Plain-words warnings about duplicates."""
    out = []
    leaked = dup.get("leaked_images") or {}
    by_split = dup.get("pairs_by_split") or {}
    cross = {k: v for k, v in by_split.items() if v and k.split("-")[0] != k.split("-")[1]}
    if cross:
        parts = ", ".join(f"{v} {k}" for k, v in cross.items())
        out.append(
            f"Near-duplicates cross the splits ({parts} pairs): {leaked.get('test', 0)} test and "
            f"{leaked.get('val', 0)} validation images have a near-copy in an earlier split, so "
            "their scores measure memory, not generalisation. Remove them or split by group."
        )
    if dup.get("n_label_conflicts"):
        out.append(
            f"{dup['n_label_conflicts']} near-duplicate pair(s) hold one real and one fake image: "
            "check those labels."
        )
    if dup.get("n_pairs") and not cross:
        out.append(
            f"{dup['n_pairs']} near-duplicate pair(s) within the data "
            f"({dup['n_identical_files']} byte-identical); none crosses a split, but a new split "
            "could separate them: drop one of each pair or keep groups together."
        )
    return out


def _verdict_lines(shortcuts: Mapping[str, Any]) -> list[str]:
    """One line per family: clean or flagged."""
    words = {
        "format": "format shortcuts (file format, JPEG quality, subsampling, colour mode)",
        "size": "size shortcuts (resolution, aspect ratio)",
        "metadata": "metadata shortcuts (EXIF, camera make)",
        "compression": "compression shortcuts (file size per pixel)",
    }
    return [
        f"{'clean of' if ok else 'FLAGGED:'} {words[family]}"
        for family, ok in shortcuts["clean"].items()
    ]


def build_summary(
    data: str,
    features: pd.DataFrame,
    shortcuts: dict[str, Any],
    dup_summary: dict[str, Any],
) -> dict[str, Any]:
    """The JSON-ready summary that :func:`run_audit` returns and writes."""
    n_fake = int((features["label"] == 1).sum())
    return {
        "data": data,
        "n": len(features),
        "n_real": len(features) - n_fake,
        "n_fake": n_fake,
        "n_unreadable": int(features["error"].notna().sum()),
        "warnings": [*shortcuts["warnings"], *_duplicate_warnings(dup_summary)],
        "verdict": _verdict_lines(shortcuts),
        "clean": shortcuts["clean"],
        "shortcut_aucs": {s["feature"]: s["auc"] for s in shortcuts["features"]},
        "metadata_only_auc": shortcuts["all_features"]["auc"],
        "shortcuts": shortcuts,
        "duplicates": dup_summary,
        "tables": summary_tables(features),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A readable text summary for the terminal."""
    lines = [
        f"audit of {summary['data']}: {summary['n']} files ({summary['n_real']} real, "
        f"{summary['n_fake']} fake; {summary['n_unreadable']} unreadable)",
        *(f"  {v}" for v in summary["verdict"]),
    ]
    top = summary["shortcuts"]["features"][:6]
    if top:
        lines.append(
            "one-feature AUCs: "
            + ", ".join(f"{s['feature']} {s['auc']:.2f}" for s in top if s["auc"] is not None)
        )
    auc = summary["metadata_only_auc"]
    lines.append(f"metadata-only classifier AUC: {'n/a' if auc is None else f'{auc:.2f}'}")
    dup = summary["duplicates"]
    line = (
        f"near-duplicates (pHash <= {dup['threshold']} bits): {dup['n_pairs']} pairs, "
        f"{dup['n_identical_files']} byte-identical"
    )
    if "pairs_by_split" in dup:
        line += "; " + ", ".join(f"{k} {v}" for k, v in dup["pairs_by_split"].items())
    lines.append(line)
    if summary["warnings"]:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """numpy scalars to Python, NaN to None, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def run_audit(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    splits: str | os.PathLike[str] | None = None,
    hash_threshold: int = DEFAULT_THRESHOLD,
    workers: int = 0,
    n_boot: int = 1000,
    quiet: bool = False,
) -> dict[str, Any]:
    """Audit a dataset for metadata shortcuts and near-duplicate leakage; write the report.

    Args:
        data: A folder tree, a manifest or a ``splits.csv``.
        out_dir: Output folder (created): ``audit.json``, ``features.csv``, ``duplicates.csv``,
            the plots and ``audit.html``.
        splits: Optional splits file giving each file's split (else the manifest's own, if any).
        hash_threshold: Largest pHash Hamming distance (of 64 bits) for a near-duplicate pair.
        workers: Threads for headers and processes for hashing; 0 works in this process.
        n_boot: Bootstrap resamples for the AUC intervals.
        quiet: Do not print the summary.

    Returns:
        The summary: ``warnings``, ``verdict``, ``clean`` (per feature family),
        ``shortcut_aucs``, ``metadata_only_auc``, ``shortcuts`` (details), ``duplicates``
        (counts and leakage per split pair) and ``tables``.

    Raises:
        DataError: When the data cannot be read.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = load_audit_frame(data, splits)
    logger.info("auditing %d files of %s", len(df), data)
    features = extract_features(df, workers=workers)
    features.to_csv(out / FEATURES_CSV, index=False)
    shortcuts = find_shortcuts(features, n_boot=n_boot)
    pairs, dup_summary = find_duplicates(df, threshold=hash_threshold, workers=workers)
    write_pairs(pairs, out / DUPLICATES_CSV)
    summary = _jsonable(build_summary(str(data), features, shortcuts, dup_summary))
    (out / AUDIT_JSON).write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    plots = make_plots(features, out)
    atomic_write_text(out / AUDIT_HTML, render_html(summary, pairs, plots))
    summary["out_dir"] = str(out)
    if not quiet:
        print(format_summary(summary), flush=True)
        print(f"audit report: {out / AUDIT_HTML}", flush=True)
    return summary
