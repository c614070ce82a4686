"""Headless (Agg) evaluation plots: training curves, confusion matrix, ROC (linear and log FPR) and
PR with the operating threshold, reliability diagram, per-class score histograms, prediction grid."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_curve,
)

from fakescope.eval.intervals import exact_binomial_ci  # noqa: E402
from fakescope.eval.measures import (  # noqa: E402
    ECE_BINS,
    FPR_TARGETS,
    expected_calibration_error,
    reliability_bins,
    tpr_at_fprs,
)

logger = logging.getLogger(__name__)

DPI = 110
TILE_PX = 160
GRID_COLS = 6
CLASS_NAMES = ("real", "fake")
OK_COLOR = "#1a7f37"
BAD_COLOR = "#cf222e"
REAL_COLOR = "#0969da"
FAKE_COLOR = "#d1242f"
POINT_COLOR = "#bf8700"
BEST_COLOR = "#8250df"

ImageLoader = Callable[[str], Any]
ArrayLike = Sequence[float] | np.ndarray


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (creating parent folders) and close it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=DPI, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    logger.debug("wrote %s", out)
    return out


def _message(ax: Axes, text: str) -> None:
    """Draw a centred message on an otherwise empty axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def _column(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Values of ``key`` per history row, with missing/None as NaN."""
    values = []
    for row in history:
        value = row.get(key)
        values.append(float(value) if value is not None else math.nan)
    return values


def _plot_pair(ax: Axes, epochs: list[float], history: Sequence[Mapping], metric: str) -> None:
    """Plot train vs val curves of one metric (``loss`` or ``acc``) on ``ax``."""
    for split, style in (("train", "-o"), ("val", "--s")):
        values = _column(history, f"{split}_{metric}")
        if all(math.isnan(v) for v in values):
            continue
        ax.plot(epochs, values, style, label=split, markersize=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" if metric == "loss" else "accuracy")
    ax.set_title("loss" if metric == "loss" else "accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Plot loss and accuracy per epoch, train vs val, as two panels.

    The best epoch (lowest ``val_loss``, see :func:`best_epoch`) is a labelled vertical line.

    Args:
        history: Rows with ``epoch, train_loss, train_acc, val_loss, val_acc``;
            ``val_*`` may be None or missing.
        path: Output PNG path.

    Returns:
        The written path.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if not history:
        for ax in axes:
            _message(ax, "no training history")
        return _save(fig, path)
    epochs = [float(row.get("epoch", i + 1)) for i, row in enumerate(history)]
    best = best_epoch(history)
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        if best is not None:
            epoch, val_loss = best
            label = f"best epoch {epoch:g}" + (
                f" (val loss {val_loss:.3f})" if metric == "loss" else ""
            )
            ax.axvline(epoch, color=BEST_COLOR, ls=":", lw=1.5, label=label)
            if metric == "loss":
                ax.plot([epoch], [val_loss], "*", color=BEST_COLOR, ms=13, zorder=5)
        _plot_pair(ax, epochs, history, metric)
    fig.tight_layout()
    return _save(fig, path)


def best_epoch(history: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """``(epoch, val_loss)`` of the row with the lowest ``val_loss`` (the first on ties).

    Rows without a finite ``val_loss`` are ignored; None when no row has one.
    """
    best: tuple[float, float] | None = None
    for i, row in enumerate(history):
        value = row.get("val_loss")
        if value is None or not math.isfinite(float(value)):
            continue
        if best is None or float(value) < best[1]:
            best = (float(row.get("epoch", i + 1)), float(value))
    return best


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    path: str | Path,
    labels: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Plot a confusion matrix annotated with counts and row percentages.

    Args:
        cm: Square matrix, rows = true class, columns = predicted class.
        path: Output PNG path.
        labels: Class names in matrix order.

    Returns:
        The written path.
    """
    counts = np.asarray(cm, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / totals, 0.0)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            pct = f"{100 * rates[i, j]:.1f}%" if totals[i, 0] > 0 else "–"
            color = "white" if rates[i, j] > 0.6 else "black"
            text = f"{int(counts[i, j])}\n({pct})"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=11)
    ticks = range(counts.shape[0])
    ax.set_xticks(ticks, labels=list(labels))
    ax.set_yticks(ticks, labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row %)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path)


def _one_class(y: np.ndarray) -> bool:
    """True when ``y`` does not contain both classes."""
    return np.unique(y).size < 2


def operating_point(y_true: ArrayLike, score: ArrayLike, threshold: float) -> dict[str, Any]:
    """Rates at ``threshold`` (fake when ``score >= threshold``): ``fpr``, ``tpr`` and
    ``precision`` (None when nothing is flagged); ``fpr``/``tpr`` are None for an absent class."""
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    flagged = s >= threshold
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    return {
        "threshold": float(threshold),
        "fpr": fp / n_neg if n_neg else None,
        "tpr": tp / n_pos if n_pos else None,
        "precision": tp / (tp + fp) if tp + fp else None,
    }


def _roc_axes(ax: Axes, log: bool, n_neg: int) -> float:
    """Labels, limits and grid of a ROC panel; returns the left x limit (log: below 1/n_real)."""
    ax.set_ylabel("true positive rate (fake caught)")
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3, which="both" if log else "major")
    if not log:
        ax.set_xlabel("false positive rate (real called fake)")
        ax.set_xlim(-0.01, 1.01)
        return -0.01
    left = min(0.5 / n_neg, 1e-3)
    ax.set_xscale("log")
    ax.set_xlim(left, 1.0)
    ax.set_xlabel("false positive rate, log scale (FPR 0 drawn at the left edge)")
    if 1.0 / n_neg > left:
        ax.axvspan(
            left, 1.0 / n_neg, color="grey", alpha=0.12, lw=0, label=f"below one real (1/{n_neg})"
        )
    return left


def plot_roc(
    y_true: ArrayLike, score: ArrayLike, path: str | Path, threshold: float | None = None
) -> Path:
    """Plot the ROC curve twice: a linear panel with its AUC and chance diagonal, and a panel
    with a log false-positive axis (where 1% and 5% FPR are readable) marking TPR at 1% and 5%
    FPR (as :func:`fakescope.eval.measures.tpr_at_fpr`).

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake).
        path: Output PNG path.
        threshold: The detector's operating threshold, marked as a point on both panels.

    Returns:
        The written path; a one-class input yields an explanatory placeholder.
    """
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    axes[0].set_title("ROC curve")
    axes[1].set_title("ROC curve, log false-positive axis")
    if _one_class(y):
        for ax in axes:
            _message(ax, "ROC undefined: only one class")
        return _save(fig, path)
    fpr, tpr, _ = roc_curve(y, s)
    n_neg = int((y == 0).sum())
    point = operating_point(y, s, threshold) if threshold is not None else None
    targets = [fpr_target for _, fpr_target in FPR_TARGETS]
    at_targets = tpr_at_fprs(y, s, targets)
    for ax, log in zip(axes, (False, True), strict=True):
        left = _roc_axes(ax, log, n_neg)
        x = np.maximum(fpr, left) if log else fpr
        ax.plot(x, tpr, lw=2, label=f"ROC (AUC = {auc(fpr, tpr):.3f})")
        chance = np.logspace(np.log10(left), 0, 50) if log else np.array([0.0, 1.0])
        ax.plot(chance, chance, "--", color="grey", label="chance")
        if log:
            for target, value in zip(targets, at_targets, strict=True):
                ax.axvline(target, color="grey", ls=":", lw=1)
                ax.plot(
                    [target],
                    [value],
                    "s",
                    color="black",
                    ms=5,
                    label=f"TPR@{100 * target:.0f}%FPR = {value:.3f}",
                )
        if point is not None:
            px = max(point["fpr"], left) if log else point["fpr"]
            _mark_threshold(
                ax,
                px,
                point["tpr"],
                f"threshold {point['threshold']:.2f} "
                f"(FPR {point['fpr']:.3f}, TPR {point['tpr']:.3f})",
            )
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _mark_threshold(ax: Any, x: float, y: float, label: str) -> None:
    """The operating threshold as one point on a curve (ROC, log-FPR ROC, PR)."""
    ax.plot([x], [y], "o", color=POINT_COLOR, ms=9, mec="black", zorder=5, label=label)


def plot_pr(
    y_true: ArrayLike, score: ArrayLike, path: str | Path, threshold: float | None = None
) -> Path:
    """Plot the precision-recall curve (fake = positive) with AP and the chance level.

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake).
        path: Output PNG path.
        threshold: The detector's operating threshold, marked as a point (when it flags any
            image, so that precision is defined).

    Returns:
        The written path; a one-class input yields an explanatory placeholder.
    """
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.set_title("precision-recall curve (fake = positive)")
    if _one_class(y):
        _message(ax, "PR undefined: only one class")
        return _save(fig, path)
    precision, recall, _ = precision_recall_curve(y, s)
    ap = average_precision_score(y, s)
    ax.step(recall, precision, where="post", lw=2, label=f"PR (AP = {ap:.3f})")
    prevalence = float(y.mean())
    ax.axhline(prevalence, ls="--", color="grey", label=f"chance ({prevalence:.2f})")
    if threshold is not None:
        point = operating_point(y, s, threshold)
        if point["precision"] is not None:
            _mark_threshold(
                ax,
                point["tpr"],
                point["precision"],
                f"threshold {threshold:.2f} "
                f"(recall {point['tpr']:.3f}, precision {point['precision']:.3f})",
            )
    ax.set_xlabel("recall (fake caught)")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(
    y_true: ArrayLike, score: ArrayLike, path: str | Path, n_bins: int = ECE_BINS
) -> Path:
    """Plot a reliability diagram: per equal-width bin of P(fake), the mean predicted P(fake)
    against the observed fraction of fakes (with its exact 95% interval), the diagonal of perfect
    calibration, the expected calibration error, and the images per bin below.

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake), in ``[0, 1]``.
        path: Output PNG path.
        n_bins: Number of equal-width bins (as for ``ece`` in the metrics).

    Returns:
        The written path; scores outside ``[0, 1]`` or no scores give a placeholder.
    """
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    if len(s) == 0 or ((s < 0) | (s > 1)).any():
        ax.set_title("reliability diagram")
        _message(ax, "undefined: scores outside [0, 1]" if len(s) else "no predictions")
        ax_n.axis("off")
        return _save(fig, path)
    bins = reliability_bins(y, s, n_bins)
    ece = expected_calibration_error(y, s, n_bins)
    edges, count = bins["edges"], bins["count"]
    full = count > 0
    centres = (edges[:-1] + edges[1:]) / 2
    fakes = np.rint(bins["frac_fake"][full] * count[full]).astype(int)
    cis = np.array([exact_binomial_ci(k, n) for k, n in zip(fakes, count[full], strict=True)])
    frac = bins["frac_fake"][full]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.errorbar(
        bins["mean_score"][full],
        frac,
        yerr=[frac - cis[:, 0], cis[:, 1] - frac],
        fmt="o-",
        lw=1.5,
        capsize=3,
        label="observed (exact 95% CI)",
    )
    for x, yv, n in zip(bins["mean_score"][full], frac, count[full], strict=True):
        ax.annotate(f"{n}", (x, yv), xytext=(4, -10), textcoords="offset points", fontsize=7)
    ax.set_title(f"reliability diagram (ECE = {ece:.3f}, {n_bins} bins)")
    ax.set_ylabel("observed fraction of fakes")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centres, count, width=(edges[1] - edges[0]) * 0.9, color="#8c959f")
    ax_n.set_xlabel("mean predicted P(fake) in bin")
    ax_n.set_ylabel("images")
    ax_n.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    fig.tight_layout()
    return _save(fig, path)


def plot_score_histograms(
    y_true: ArrayLike,
    score: ArrayLike,
    path: str | Path,
    threshold: float | None = None,
    band: float | None = None,
    bins: int = 20,
) -> Path:
    """Overlaid histograms of P(fake) for real and for fake images, with the threshold line and,
    when ``band`` is given, the uncertain band ``threshold ± band`` shaded.

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake).
        path: Output PNG path.
        threshold: The operating threshold.
        band: Half-width of the uncertain band around ``threshold`` (not drawn when None or 0).
        bins: Number of equal-width bins, shared by both classes (over ``[0, 1]`` for
            probabilities).

    Returns:
        The written path; no scores give a placeholder.
    """
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.set_title("score distribution per class")
    if len(s) == 0:
        _message(ax, "no predictions")
        return _save(fig, path)
    lo, hi = (0.0, 1.0) if ((s >= 0) & (s <= 1)).all() else (float(s.min()), float(s.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    for label, name, color in ((0, "real", REAL_COLOR), (1, "fake", FAKE_COLOR)):
        values = s[y == label]
        if len(values) == 0:
            continue
        ax.hist(values, bins=edges, color=color, alpha=0.35, label=f"{name} (n={len(values)})")
        ax.hist(values, bins=edges, color=color, histtype="step", lw=1.5)
    if threshold is not None and band:
        ax.axvspan(
            threshold - band,
            threshold + band,
            color="grey",
            alpha=0.18,
            lw=0,
            label=f"uncertain band ±{band:.2f}",
        )
    if threshold is not None:
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("P(fake)")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _select_rows(predictions: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Mistakes first (most confidently wrong first), then a seeded sample of the rest."""
    df = predictions.copy()
    df["label"] = df["label"].astype(int)
    if "pred" not in df:
        df["pred"] = (df["score"].astype(float) >= 0.5).astype(int)
    df["pred"] = df["pred"].astype(int)
    wrong = df[df["pred"] != df["label"]]
    wrong = wrong.assign(_err=(wrong["score"].astype(float) - wrong["label"]).abs())
    wrong = wrong.sort_values("_err", ascending=False, kind="stable").drop(columns="_err")
    right = df[df["pred"] == df["label"]]
    n_right = max(0, min(n - len(wrong), len(right)))
    if n_right:
        rng = np.random.default_rng(seed)
        right = right.iloc[rng.choice(len(right), size=n_right, replace=False)]
    return pd.concat([wrong.head(n), right.iloc[:n_right]])


def _load_tile(path: str, image_loader: ImageLoader | None) -> np.ndarray | None:
    """Load an image as an RGB thumbnail array, or None if it cannot be read."""
    try:
        if image_loader is not None:
            img = image_loader(path)
            if not isinstance(img, Image.Image):
                img = Image.fromarray(np.asarray(img))
            img = img.convert("RGB")
        else:
            with Image.open(path) as raw:
                img = raw.convert("RGB")
        img.thumbnail((TILE_PX, TILE_PX))
        return np.asarray(img)
    except Exception as exc:  # a bad image must never break the report
        logger.debug("cannot load %s for the grid: %s", path, exc)
        return None


def _draw_tile(ax: Axes, row: Mapping[str, Any], image_loader: ImageLoader | None) -> None:
    """Draw one prediction tile: image (or grey placeholder), coloured title and frame."""
    tile = _load_tile(str(row["path"]), image_loader)
    if tile is None:
        ax.imshow(np.full((TILE_PX, TILE_PX, 3), 0.6))
        ax.text(TILE_PX / 2, TILE_PX / 2, "unreadable", ha="center", va="center", fontsize=9)
    else:
        ax.imshow(tile)
    wrong = int(row["pred"]) != int(row["label"])
    color = BAD_COLOR if wrong else OK_COLOR
    title = (
        f"pred {CLASS_NAMES[int(row['pred'])]} {float(row['score']):.2f} / "
        f"true {CLASS_NAMES[int(row['label'])]}"
    )
    ax.set_title(title, color=color, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(wrong)
        spine.set_edgecolor(BAD_COLOR)
        spine.set_linewidth(3)


def plot_prediction_grid(
    predictions: pd.DataFrame,
    path: str | Path,
    n: int = 24,
    seed: int = 0,
    image_loader: ImageLoader | None = None,
) -> Path:
    """Plot a grid of example predictions, mistakes first.

    Args:
        predictions: Columns ``path, label, score, pred`` (``pred`` defaults to
            ``score >= 0.5`` when absent).
        path: Output PNG path.
        n: Maximum number of tiles.
        seed: Seed for sampling the correct predictions.
        image_loader: Optional ``loader(path) -> PIL.Image | array``; PIL is used otherwise.

    Returns:
        The written path. Unreadable images become grey "unreadable" tiles.
    """
    rows = _select_rows(predictions, n, seed) if len(predictions) else predictions
    k = len(rows)
    if k == 0:
        fig, ax = plt.subplots(figsize=(4, 2))
        _message(ax, "no predictions")
        return _save(fig, path)
    ncols = min(GRID_COLS, k)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.5 * nrows), squeeze=False)
    flat = axes.ravel()
    for ax, (_, row) in zip(flat, rows.iterrows(), strict=False):
        _draw_tile(ax, row, image_loader)
    for ax in flat[k:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)
