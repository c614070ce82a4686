"""How a detector holds up under everyday image changes: JPEG, resizing, blur, crops, noise, sharing.

Each perturbation is applied in memory, inside the one item decoder of the scoring engine
(:func:`fakescope.eval.scoring.raw_logits`), right after the file is decoded and before the
detector's own preprocessing, so nothing is written to disk and the embedding cache of probe
detectors is never mixed with perturbed images. Every condition is scored on the same rows;
the AUC and the accuracy at the detector's stored threshold get bootstrap 95% intervals, and the
change against clean data gets a *paired* bootstrap interval (the same resampled images on both
sides), so a drop can be told from noise even on a small test set.

The grid (:data:`PERTURBATIONS`):

==========  ==================================================================================
jpeg95..30  JPEG re-encode at quality 95, 75, 50, 30 (Pillow defaults: 4:2:0 subsampling)
down0.5     downscale to half of each side (bicubic, antialiased); ``down0.25``: a quarter
up2         upscale x2 (bicubic)
blur1/2     Gaussian blur, sigma 1 and 2 pixels
centercrop  keep the central half of each side (a quarter of the area), no resampling
noise       additive Gaussian noise, sigma 5 on the 0-255 scale, seeded by the image content
social      resize to 1080 px on the long side (up or down), then JPEG quality 75
png         screenshot-like PNG re-encode: lossless, so the pixels are unchanged; a detector
            that sees only pixels must score it exactly like clean data
==========  ==================================================================================
"""

from __future__ import annotations

import functools
import io
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter

from fakescope.eval.html import num, with_ci
from fakescope.eval.measures import fast_auc
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.report import (
    METRICS_FILE,
    REPORT_FILE,
    ROBUSTNESS_CSV,
    ROBUSTNESS_HTML,
    ROBUSTNESS_JSON,
    ROBUSTNESS_PNG,
    render_report,
    render_robustness_page,
)
from fakescope.eval.scoring import Perturbation, raw_logits
from fakescope.models.detector import Detector
from fakescope.utils import atomic_write_text

logger = logging.getLogger(__name__)

CLEAN = "clean"
CROP_FRACTION = 0.5
NOISE_SIGMA = 5.0
SOCIAL_LONG_SIDE = 1080
SOCIAL_QUALITY = 75
MIN_SIDE = 1
CSV_FILE = ROBUSTNESS_CSV
SCORES_FILE = "robustness_scores.csv"
PLOT_FILE = ROBUSTNESS_PNG
#: The report header's facts (model, threshold, checkpoint, data, split) and the notes.
JSON_FILE = ROBUSTNESS_JSON
HTML_FILE = ROBUSTNESS_HTML
_SEED = 0


# --------------------------------------------------------------------------------------------
# Perturbations (PIL RGB -> PIL RGB)
# --------------------------------------------------------------------------------------------


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at ``quality`` and decode again."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def rescale(img: Image.Image, factor: float) -> Image.Image:
    """Resize both sides by ``factor`` with bicubic resampling (antialiased when shrinking)."""
    width = max(MIN_SIDE, round(img.width * factor))
    height = max(MIN_SIDE, round(img.height * factor))
    return img.resize((width, height), Image.Resampling.BICUBIC)


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return img.filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def center_crop(img: Image.Image, fraction: float = CROP_FRACTION) -> Image.Image:
    """Keep the central ``fraction`` of each side."""
    width = max(MIN_SIDE, round(img.width * fraction))
    height = max(MIN_SIDE, round(img.height * fraction))
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return img.crop((left, top, left + width, top + height))


def add_noise(img: Image.Image, sigma: float = NOISE_SIGMA) -> Image.Image:
    """Add Gaussian noise of ``sigma`` (0-255 scale); the seed comes from the pixels."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    rng = np.random.default_rng(zlib.crc32(arr.astype(np.uint8).tobytes()))
    noisy = arr + rng.normal(0.0, sigma, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")


def social_media(
    img: Image.Image, long_side: int = SOCIAL_LONG_SIDE, quality: int = SOCIAL_QUALITY
) -> Image.Image:
    """Resize to ``long_side`` pixels on the long side, then JPEG at ``quality``."""
    factor = long_side / max(img.width, img.height)
    return jpeg(rescale(img, factor), quality)


def png_roundtrip(img: Image.Image) -> Image.Image:
    """Encode as PNG (no metadata) and decode again: lossless."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


PERTURBATIONS: dict[str, Perturbation] = {
    "jpeg95": functools.partial(jpeg, quality=95),
    "jpeg75": functools.partial(jpeg, quality=75),
    "jpeg50": functools.partial(jpeg, quality=50),
    "jpeg30": functools.partial(jpeg, quality=30),
    "down0.5": functools.partial(rescale, factor=0.5),
    "down0.25": functools.partial(rescale, factor=0.25),
    "up2": functools.partial(rescale, factor=2.0),
    "blur1": functools.partial(gaussian_blur, sigma=1.0),
    "blur2": functools.partial(gaussian_blur, sigma=2.0),
    "centercrop": center_crop,
    "noise": add_noise,
    "social": social_media,
    "png": png_roundtrip,
}

DESCRIPTIONS: dict[str, str] = {
    CLEAN: "no change",
    "jpeg95": "JPEG quality 95",
    "jpeg75": "JPEG quality 75",
    "jpeg50": "JPEG quality 50",
    "jpeg30": "JPEG quality 30",
    "down0.5": "downscale x0.5",
    "down0.25": "downscale x0.25",
    "up2": "upscale x2",
    "blur1": "Gaussian blur sigma 1",
    "blur2": "Gaussian blur sigma 2",
    "centercrop": f"centre crop, {CROP_FRACTION:.0%} of each side",
    "noise": f"Gaussian noise, sigma {NOISE_SIGMA:g}/255",
    "social": f"resize to {SOCIAL_LONG_SIDE} long side + JPEG {SOCIAL_QUALITY}",
    "png": "PNG re-encode (lossless)",
}


def resolve_perturbations(names: Sequence[str] | None) -> dict[str, Perturbation]:
    """The perturbations to run, in grid order.

    Args:
        names: Names from :data:`PERTURBATIONS`, or None for all of them.

    Returns:
        ``{name: function}``.

    Raises:
        ValueError: For an unknown name.
    """
    if names is None:
        return dict(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {unknown}; choose from {list(PERTURBATIONS)}")
    return {n: PERTURBATIONS[n] for n in PERTURBATIONS if n in set(names)}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _accuracy(threshold: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """Accuracy of ``score >= threshold``."""

    def metric(y: np.ndarray, s: np.ndarray) -> float:
        return float(((s >= threshold).astype(int) == y).mean())

    return metric


def paired_delta_ci(
    y: np.ndarray,
    clean: np.ndarray,
    perturbed: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = _SEED,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Paired bootstrap interval of ``metric(perturbed) - metric(clean)`` on the same rows.

    Args:
        y: Labels.
        clean: Clean scores.
        perturbed: Scores of the same rows under a perturbation.
        metric: ``(y, score) -> float``; may raise ValueError on a resample (skipped).
        n_boot: Resamples.
        seed: Seed.
        alpha: Two-sided miss rate.

    Returns:
        ``(lo, hi)``, or None when fewer than half of the resamples gave a value.
    """
    n = len(y)
    if n == 0 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        try:
            deltas.append(metric(y[idx], perturbed[idx]) - metric(y[idx], clean[idx]))
        except ValueError:
            continue
    if len(deltas) < 0.5 * n_boot:
        return None
    lo, hi = np.percentile(deltas, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _condition_row(
    name: str,
    y: np.ndarray,
    s: np.ndarray,
    clean_s: np.ndarray,
    threshold: float,
    n_boot: int,
) -> tuple[dict[str, Any], list[str]]:
    """Metrics and deltas of one condition on the common rows."""
    m = compute_metrics(y, s, threshold=threshold, n_boot=n_boot, seed=_SEED)
    auc_ci, acc_ci = m.roc_auc_ci or (None, None), m.accuracy_ci or (None, None)
    row: dict[str, Any] = {
        "perturbation": name,
        "description": DESCRIPTIONS.get(name, name),
        "n": m.n,
        "auc": m.roc_auc,
        "auc_lo": auc_ci[0],
        "auc_hi": auc_ci[1],
        "accuracy": m.accuracy,
        "accuracy_lo": acc_ci[0],
        "accuracy_hi": acc_ci[1],
        "real_acc": m.real_acc,
        "fake_acc": m.fake_acc,
        "mean_score": float(np.mean(s)),
    }
    row.update(_delta_fields(y, s, clean_s, threshold, n_boot, m.roc_auc))
    return row, list(m.warnings)


def _delta_fields(
    y: np.ndarray,
    s: np.ndarray,
    clean_s: np.ndarray,
    threshold: float,
    n_boot: int,
    auc: float | None,
) -> dict[str, Any]:
    """Changes in AUC and accuracy against clean data, with paired intervals."""
    acc = _accuracy(threshold)
    d_auc = None if auc is None else fast_auc(y, s) - fast_auc(y, clean_s)
    auc_ci = paired_delta_ci(y, clean_s, s, fast_auc, n_boot) if d_auc is not None else None
    acc_ci = paired_delta_ci(y, clean_s, s, acc, n_boot)
    return {
        "delta_auc": d_auc,
        "delta_auc_lo": auc_ci[0] if auc_ci else None,
        "delta_auc_hi": auc_ci[1] if auc_ci else None,
        "delta_accuracy": acc(y, s) - acc(y, clean_s),
        "delta_accuracy_lo": acc_ci[0] if acc_ci else None,
        "delta_accuracy_hi": acc_ci[1] if acc_ci else None,
    }


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def plot_robustness(table: pd.DataFrame, path: str | Path) -> Path:
    """AUC and accuracy per condition with 95% intervals, clean level dashed.

    Args:
        table: The :func:`run_robustness` table.
        path: PNG to write.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    x = np.arange(len(table))
    for ax, key, title in ((axes[0], "auc", "ROC-AUC"), (axes[1], "accuracy", "accuracy")):
        values = pd.to_numeric(table[key], errors="coerce").to_numpy(dtype=float)
        lo = pd.to_numeric(table[f"{key}_lo"], errors="coerce").to_numpy(dtype=float)
        hi = pd.to_numeric(table[f"{key}_hi"], errors="coerce").to_numpy(dtype=float)
        err = np.vstack([np.nan_to_num(values - lo), np.nan_to_num(hi - values)])
        ax.errorbar(x, values, yerr=err, fmt="o", color="#0969da", ecolor="#1f2328", capsize=3)
        if len(values) and np.isfinite(values[0]):
            ax.plot([0], [values[0]], "o", color="#1a7f37", markersize=8)
            ax.axhline(values[0], color="#1a7f37", linestyle="--", linewidth=1, label="clean")
        ax.set_xticks(x)
        ax.set_xticklabels(table["perturbation"], rotation=45, ha="right")
        finite = np.concatenate([lo[np.isfinite(lo)], values[np.isfinite(values)]])
        floor = float(finite.min()) if finite.size else 0.0
        ax.set_ylim(max(0.0, floor - 0.02), 1.005)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower left")
        ax.set_title(f"{title} per perturbation (95% bootstrap CI)")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=100, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def findings(table: pd.DataFrame) -> list[str]:
    """Plain-words lines for the conditions whose AUC or accuracy change is clear of noise."""
    out = []
    for row in table.to_dict("records"):
        if row["perturbation"] == CLEAN:
            continue
        for key, what in (("delta_auc", "AUC"), ("delta_accuracy", "accuracy")):
            lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
            if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) or lo <= 0 <= hi:
                continue
            verb = "lowers" if row[key] < 0 else "raises"
            out.append(
                f"{row['description']} {verb} {what} by {abs(row[key]):.3f} "
                f"(paired 95% CI {num(lo, signed=True)} to {num(hi, signed=True)})."
            )
    return out


def format_table(table: pd.DataFrame) -> str:
    """A plain-text version of the table for the terminal."""
    head = (
        f"{'perturbation':<12} {'n':>5}  {'AUC [95% CI]':<24} {'ΔAUC [paired CI]':<27} "
        f"{'acc [95% CI]':<24} {'Δacc':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in table.to_dict("records"):
        lines.append(
            f"{r['perturbation']:<12} {r['n']:>5}  {with_ci(r, 'auc'):<24} "
            f"{with_ci(r, 'delta_auc', signed=True):<27} {with_ci(r, 'accuracy'):<24} "
            f"{num(r['delta_accuracy'], signed=True):>7}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _score_conditions(
    detector: Detector,
    df: pd.DataFrame,
    perturbations: Mapping[str, Perturbation | None],
    kw: Mapping[str, Any],
) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Calibrated scores (indexed by row position) and failure counts per condition."""
    scores: dict[str, pd.Series] = {}
    failed: dict[str, int] = {}
    for name, fn in perturbations.items():
        logger.info("robustness: scoring %s (%d images)", name, len(df))
        idx, logits, failures = raw_logits(detector, df, fn, **kw)
        scores[name] = pd.Series(detector.probabilities(logits).astype(np.float64), index=idx)
        failed[name] = len(failures)
        if failures:
            logger.warning("%s: %d image(s) failed, e.g. %s", name, len(failures), failures[0])
    return scores, failed


def run_robustness(
    detector: Detector,
    df: pd.DataFrame,
    out_dir: str | Path,
    perturbations: Sequence[str] | None = None,
    n_boot: int = 1000,
    workers: int = 0,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    amp: str = "auto",
    meta: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Score a labelled set clean and under each perturbation; write the table, plot and HTML.

    Writes ``robustness.csv``, ``robustness_scores.csv`` (one score per image and condition),
    ``robustness.png``, ``robustness.json`` (the header facts and notes) and ``robustness.html``
    into ``out_dir``; when ``out_dir`` holds a run's report (``report.html`` and
    ``metrics.json``), renders it again with its "Robustness" section.

    Args:
        detector: Any fakescope detector; accuracy uses ``detector.spec.threshold``.
        df: Labelled rows (``path``, ``label``), e.g. the test split.
        out_dir: Output folder (created).
        perturbations: Names from :data:`PERTURBATIONS` (default: all).
        n_boot: Bootstrap resamples for every interval.
        workers: Decoding processes.
        batch_size: Images per batch.
        device: Torch device.
        amp: Mixed precision, as for evaluation.
        meta: Extra facts for the report header (checkpoint, data, split).

    Returns:
        One row per condition, ``clean`` first: ``perturbation, description, n, auc, auc_lo,
        auc_hi, accuracy, accuracy_lo, accuracy_hi, real_acc, fake_acc, mean_score, delta_auc,
        delta_auc_lo, delta_auc_hi, delta_accuracy, delta_accuracy_lo, delta_accuracy_hi,
        n_failed``. All conditions are measured on the rows that every condition could score.

    Raises:
        ValueError: For unknown perturbation names, an empty set, or no row scored in every
            condition.
    """
    grid: dict[str, Perturbation | None] = {CLEAN: None, **resolve_perturbations(perturbations)}
    df = df.reset_index(drop=True)
    if df.empty:
        raise ValueError("no images to evaluate")
    kw = {"batch_size": batch_size, "workers": workers, "device": device, "amp": amp}
    scores, failed = _score_conditions(detector, df, grid, kw)
    common = sorted(set.intersection(*(set(s.index) for s in scores.values())))
    if not common:
        raise ValueError("no image could be scored under every perturbation")
    y = df["label"].to_numpy()[common].astype(np.int64)
    clean_s = scores[CLEAN].reindex(common).to_numpy()
    rows, notes = [], []
    threshold = float(detector.spec.threshold)
    for name in grid:
        s = scores[name].reindex(common).to_numpy()
        row, warns = _condition_row(name, y, s, clean_s, threshold, n_boot)
        row["n_failed"] = failed[name]
        rows.append(row)
        if name == CLEAN:
            notes += warns
    table = pd.DataFrame(rows)
    notes += findings(table)
    if len(common) < len(df):
        notes.append(
            f"{len(df) - len(common)} of {len(df)} images failed in at least one condition and "
            "are left out of every row."
        )
    _write_outputs(table, scores, df, common, Path(out_dir), notes, detector, meta or {})
    print(format_table(table), flush=True)
    return table


def _write_outputs(
    table: pd.DataFrame,
    scores: Mapping[str, pd.Series],
    df: pd.DataFrame,
    common: list[int],
    out: Path,
    notes: list[str],
    detector: Detector,
    meta: Mapping[str, Any],
) -> None:
    """Write the CSVs, the plot, the notes, the standalone HTML, and render the run's report
    again (with its robustness section) when ``out`` holds one."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / CSV_FILE, index=False)
    long = pd.concat(
        [
            pd.DataFrame(
                {
                    "path": df["path"].astype(str).to_numpy()[common],
                    "label": df["label"].to_numpy()[common],
                    "perturbation": name,
                    "score": s.reindex(common).to_numpy(),
                }
            )
            for name, s in scores.items()
        ],
        ignore_index=True,
    )
    long.to_csv(out / SCORES_FILE, index=False)
    plot_robustness(table, out / PLOT_FILE)
    header = {"model": detector.spec.arch, "threshold": f"{detector.spec.threshold:.3f}", **meta}
    doc = {"header": {str(k): str(v) for k, v in header.items()}, "notes": list(notes)}
    atomic_write_text(out / JSON_FILE, json.dumps(doc, indent=2, ensure_ascii=False))
    render_robustness_page(out)
    if not (out / REPORT_FILE).is_file():
        return
    if (out / METRICS_FILE).is_file():  # a run's report: render it again, with the section
        render_report(out)
        logger.info("added the robustness section to %s", out / REPORT_FILE)
    else:
        logger.warning(
            "%s has no %s: cannot render its report again with the robustness section",
            out,
            METRICS_FILE,
        )
