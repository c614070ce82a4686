"""Metric primitives for binary real/fake scores: ROC-AUC, average precision, TPR at a target
FPR, reliability bins, expected calibration error, log loss, and metric builders for the
bootstrap (:mod:`fakescope.eval.intervals`). Plain functions of ``(y_true, score)`` arrays; the
report that gathers them is :func:`fakescope.eval.metrics.compute_metrics`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

LABELS = (0, 1)
TARGET_NAMES = ("real", "fake")
FPR_TARGETS = (("tpr_at_fpr_1", 0.01), ("tpr_at_fpr_5", 0.05))
ECE_BINS = 10
LOG_EPS = 1e-7
FPR_EPS = 1e-9

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def require_both_classes(y_true: np.ndarray) -> None:
    """Raise ValueError unless ``y_true`` contains both 0 and 1."""
    if np.unique(y_true).size < 2:
        raise ValueError("metric needs both classes in y_true")


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC that raises ValueError (instead of returning NaN) for one-class input."""
    require_both_classes(y_true)
    return float(roc_auc_score(y_true, score))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision that raises ValueError for one-class input."""
    require_both_classes(y_true)
    return float(average_precision_score(y_true, score))


def fast_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC from ranks (ties get half credit), the same value as scikit-learn's.

    For the bootstrap: it skips scikit-learn's argument checks, which cost more than the metric
    on a few hundred rows. Raises ValueError for one-class input.
    """
    y = np.asarray(y_true)
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fast_average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision, the same value as scikit-learn's: the sum over distinct thresholds
    (highest first) of the recall gained times the precision there. Raises ValueError for
    one-class input."""
    y = np.asarray(y_true)
    require_both_classes(y)
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")
    s, hits = np.asarray(score, dtype=float)[order], (y[order] == 1).astype(np.int64)
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last row of each run of equal scores
    tps = np.cumsum(hits)[ends]
    precision = tps / (ends + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tpr_at_fprs(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    targets: Sequence[float],
) -> np.ndarray:
    """True-positive rate at each target false-positive rate (see :func:`tpr_at_fpr`).

    One sort serves every target. Raises ValueError for one-class input or a target outside
    ``[0, 1]``.
    """
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=float)
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("TPR at a given FPR needs both classes")
    fpr_targets = np.asarray(targets, dtype=float)
    if ((fpr_targets < 0) | (fpr_targets > 1)).any():
        raise ValueError(f"target FPRs must lie in [0, 1], got {list(targets)}")
    order = np.argsort(-s, kind="mergesort")
    s_desc = s[order]
    ends = np.r_[np.flatnonzero(np.diff(s_desc)), len(s) - 1]  # last row of each tie run
    tps = np.cumsum(pos[order])[ends]  # fakes at or above each distinct score
    fps = ends + 1 - tps  # reals at or above it; both non-decreasing
    allowed = np.floor(fpr_targets * n_neg + FPR_EPS)  # reals that may be flagged
    k = np.searchsorted(fps, allowed, side="right")  # thresholds within the budget
    best = np.where(k > 0, tps[np.maximum(k - 1, 0)], 0)  # none fit: threshold above all scores
    return best / n_pos


def tpr_at_fpr(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, target_fpr: float
) -> float:
    """The highest true-positive rate reachable with a false-positive rate of at most ``target_fpr``.

    Definition: a score is called fake when ``score >= t``. The candidate thresholds ``t`` are the
    distinct scores plus one above every score (nothing flagged, FPR = TPR = 0), so the value is
    ``max{TPR(t) : FPR(t) <= target_fpr}`` over the empirical ROC points. It is the same as
    ``max(tpr[fpr <= target_fpr])`` over scikit-learn's
    ``roc_curve(y_true, score, drop_intermediate=False)``. No interpolation between ROC points:
    every value is the rate of a threshold one could actually use.

    With ``n_real`` real images the achievable FPRs are ``0, 1/n_real, 2/n_real, ...``. When
    ``1/n_real > target_fpr`` (fewer than 100 reals for 1%), the only admissible point is FPR = 0,
    and the value is the TPR with no real image flagged: defined, but it measures a stricter
    operating point than the name says; :func:`fakescope.eval.metrics.compute_metrics` warns about it.

    Pure numpy and vectorised (one sort), for use inside the bootstrap.

    Raises:
        ValueError: For one-class input or ``target_fpr`` outside ``[0, 1]``.
    """
    return float(tpr_at_fprs(y_true, score, [target_fpr])[0])


def tpr_at(target_fpr: float) -> MetricFn:
    """Build a TPR-at-FPR metric for the bootstrap."""

    def metric(y_true: np.ndarray, score: np.ndarray) -> float:
        return tpr_at_fpr(y_true, score, target_fpr)

    return metric


def reliability_bins(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Equal-width bins of P(fake) for a reliability diagram.

    Bin ``k`` holds scores in ``[k/n_bins, (k+1)/n_bins)``; the last bin also holds 1.0.
    Scores must lie in ``[0, 1]``.

    Returns:
        ``edges`` (``n_bins + 1``), and per bin ``count``, ``mean_score`` (mean predicted P(fake))
        and ``frac_fake`` (observed fraction of fakes); the last two are NaN for empty bins.

    Raises:
        ValueError: If a score lies outside ``[0, 1]`` or ``n_bins < 1``.
    """
    y = np.asarray(y_true, dtype=float).reshape(-1)
    s = np.asarray(score, dtype=float).reshape(-1)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if ((s < 0) | (s > 1)).any():
        raise ValueError("reliability bins need scores in [0, 1]")
    idx = np.clip(np.floor(s * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(idx, weights=s, minlength=n_bins) / count
        frac_fake = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "mean_score": mean_score,
        "frac_fake": frac_fake,
    }


def expected_calibration_error(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Expected calibration error over equal-width bins (see :func:`reliability_bins`).

    ``ECE = sum_k (n_k / n) * |mean P(fake) in bin k - fraction of fakes in bin k|``; empty bins
    count zero. With few images per bin, sampling noise alone makes it larger than zero.

    Raises:
        ValueError: On empty input or scores outside ``[0, 1]``.
    """
    bins = reliability_bins(y_true, score, n_bins)
    n = int(bins["count"].sum())
    if n == 0:
        raise ValueError("ECE needs at least one score")
    full = bins["count"] > 0
    gaps = np.abs(bins["mean_score"][full] - bins["frac_fake"][full])
    return float(np.sum(bins["count"][full] * gaps) / n)


def accuracy_at(threshold: float) -> MetricFn:
    """Build an accuracy metric over scores thresholded at ``threshold``."""

    def metric(y_true: np.ndarray, score: np.ndarray) -> float:
        return float(np.mean(np.asarray(y_true) == (np.asarray(score) >= threshold)))

    return metric


def log_loss(y: np.ndarray, s: np.ndarray) -> float:
    """Binary cross-entropy with scores clipped away from 0 and 1."""
    p = np.clip(s, LOG_EPS, 1 - LOG_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
