"""Headless (Agg) evaluation plots: training curves, confusion matrix, ROC/PR, prediction grid."""

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

logger = logging.getLogger(__name__)

DPI = 110
TILE_PX = 160
GRID_COLS = 6
CLASS_NAMES = ("real", "fake")
OK_COLOR = "#1a7f37"
BAD_COLOR = "#cf222e"

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
    _plot_pair(axes[0], epochs, history, "loss")
    _plot_pair(axes[1], epochs, history, "acc")
    fig.tight_layout()
    return _save(fig, path)


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


def plot_roc(y_true: ArrayLike, score: ArrayLike, path: str | Path) -> Path:
    """Plot the ROC curve with its AUC and a chance diagonal.

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake).
        path: Output PNG path.

    Returns:
        The written path; a one-class input yields an explanatory placeholder.
    """
    y, s = np.asarray(y_true).astype(int), np.asarray(score, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.set_title("ROC curve")
    if _one_class(y):
        _message(ax, "ROC undefined: only one class")
        return _save(fig, path)
    fpr, tpr, _ = roc_curve(y, s)
    ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake caught)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_pr(y_true: ArrayLike, score: ArrayLike, path: str | Path) -> Path:
    """Plot the precision-recall curve (fake = positive) with AP and the chance level.

    Args:
        y_true: Labels, 1 = fake.
        score: P(fake).
        path: Output PNG path.

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
    ax.set_xlabel("recall (fake caught)")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
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
