"""Evaluation metrics for binary real/fake detectors, with honest small-sample intervals."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta, rankdata
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
)

logger = logging.getLogger(__name__)

LABELS = (0, 1)
TARGET_NAMES = ("real", "fake")
SMALL_N = 200
SMALL_CLASS_N = 30
MIN_GROUP_N = 10


def small_groups_key(min_group_n: int = MIN_GROUP_N) -> str:
    """Name of the breakdown cell that pools the groups with fewer than ``min_group_n`` images."""
    return f"(small groups, n<{min_group_n} each)"


SMALL_GROUPS_KEY = small_groups_key()
FPR_TARGETS = (("tpr_at_fpr_1", 0.01), ("tpr_at_fpr_5", 0.05))
_TPR_NAMES = tuple((key, f"TPR at {100 * fpr:.0f}% FPR") for key, fpr in FPR_TARGETS)
ECE_BINS = 10
_LOG_EPS = 1e-7
_FPR_EPS = 1e-9

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _finite_or_none(value: Any) -> float | None:
    """Return ``value`` as a plain float, or None when it is None/NaN/inf."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to plain Python; NaN becomes None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    return obj


def _require_both_classes(y_true: np.ndarray) -> None:
    """Raise ValueError unless ``y_true`` contains both 0 and 1."""
    if np.unique(y_true).size < 2:
        raise ValueError("metric needs both classes in y_true")


def _roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC that raises ValueError (instead of returning NaN) for one-class input."""
    _require_both_classes(y_true)
    return float(roc_auc_score(y_true, score))


def _average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision that raises ValueError for one-class input."""
    _require_both_classes(y_true)
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
    _require_both_classes(y)
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
    allowed = np.floor(fpr_targets * n_neg + _FPR_EPS)  # reals that may be flagged
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
    operating point than the name says; :func:`compute_metrics` warns about it.

    Pure numpy and vectorised (one sort), for use inside the bootstrap.

    Raises:
        ValueError: For one-class input or ``target_fpr`` outside ``[0, 1]``.
    """
    return float(tpr_at_fprs(y_true, score, [target_fpr])[0])


def _tpr_at(target_fpr: float) -> MetricFn:
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


def _accuracy_at(threshold: float) -> MetricFn:
    """Build an accuracy metric over scores thresholded at ``threshold``."""

    def metric(y_true: np.ndarray, score: np.ndarray) -> float:
        return float(np.mean(np.asarray(y_true) == (np.asarray(score) >= threshold)))

    return metric


def bootstrap_ci(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    metric: MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of ``metric(y_true, score)``.

    Rows are resampled with replacement using a seeded ``numpy.random.Generator``.
    Resamples on which ``metric`` raises ``ValueError`` (e.g. a single class for
    ROC-AUC) or returns a non-finite value are skipped.

    Args:
        y_true: Binary labels (1 = fake).
        score: Scores, P(fake).
        metric: Function ``(y_true, score) -> float`` on numpy arrays.
        n_boot: Number of bootstrap resamples.
        seed: Seed for the random generator.
        alpha: Two-sided miss rate; 0.05 gives a 95% interval.

    Returns:
        ``(lo, hi)``, or None if the input is empty or fewer than 50% of the
        resamples gave a valid value.
    """
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=float)
    n = len(y)
    if n == 0 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    return _percentile_ci(y, s, metric, (rng.integers(0, n, size=n) for _ in range(n_boot)), alpha)


def _percentile_ci(
    y: np.ndarray, s: np.ndarray, metric: MetricFn, resamples: Iterable[np.ndarray], alpha: float
) -> tuple[float, float] | None:
    """The percentile interval of ``metric`` over row-index resamples.

    Resamples on which ``metric`` raises ``ValueError`` or gives a non-finite value are skipped;
    None when fewer than half of them gave a value.
    """
    values: list[float] = []
    n_boot = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for idx in resamples:
            n_boot += 1
            try:
                value = metric(y[idx], s[idx])
            except ValueError:
                continue
            if value is not None and math.isfinite(value):
                values.append(float(value))
    if not n_boot or len(values) < 0.5 * n_boot:
        return None
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def grouped_bootstrap_ci(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    metric: MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval that resamples whole groups (clips, prompts, photos).

    Frames of one clip or images of one prompt are not independent: resampling rows would give
    intervals far too narrow. Groups are resampled with replacement within each label stratum
    (a group's stratum is its majority label), so every resample keeps both classes when
    groups are single-class; groups that hold both classes (pairs) form one stratum.

    Returns:
        ``(lo, hi)``, or None as for :func:`bootstrap_ci`.
    """
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=float)
    g = np.asarray([str(v) for v in groups])
    if len(y) == 0 or n_boot <= 0:
        return None
    names, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(names))]
    mixed = [len(np.unique(y[m])) > 1 for m in members]
    strata: dict[Any, list[int]] = {}
    for i, m in enumerate(members):
        key = "pair" if mixed[i] else int(round(float(y[m].mean())))
        strata.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)

    def resamples() -> Iterator[np.ndarray]:
        for _ in range(n_boot):
            picks = [rng.choice(ids, size=len(ids)) for ids in strata.values()]
            yield np.concatenate([members[i] for p in picks for i in p])

    return _percentile_ci(y, s, metric, resamples(), alpha)


def exact_binomial_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper–Pearson (exact) confidence interval for a binomial proportion k/n.

    Args:
        k: Number of successes (e.g. correct predictions).
        n: Number of trials.
        alpha: Two-sided miss rate; 0.05 gives a 95% interval.

    Returns:
        ``(lo, hi)``; ``(0.0, 1.0)`` when ``n == 0``.

    Raises:
        ValueError: If ``k`` is not in ``[0, n]``.
    """
    if n == 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n], got k={k}, n={n}")
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _validate(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Convert inputs to arrays and check shape, labels and scores."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=float).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} rows but score has {len(s)}")
    if len(y) == 0:
        raise ValueError("cannot compute metrics on an empty set")
    if not np.isin(y, LABELS).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise ValueError("score contains NaN or infinite values")
    return y.astype(int), s


def _class_rate(cm: np.ndarray, row: int) -> float | None:
    """Recall of class ``row`` from a 2x2 confusion matrix, or None if it has no samples."""
    total = int(cm[row].sum())
    return float(cm[row, row] / total) if total else None


def _log_loss(y: np.ndarray, s: np.ndarray) -> float:
    """Binary cross-entropy with scores clipped away from 0 and 1."""
    p = np.clip(s, _LOG_EPS, 1 - _LOG_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _group_key(value: Any) -> str:
    """JSON-safe key for a group value; missing values become ``"(missing)"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    return str(value)


def _subset_summary(y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Small metric summary used for one breakdown cell."""
    cm = confusion_matrix(y, pred, labels=list(LABELS))
    try:
        auc: float | None = _roc_auc(y, s)
    except ValueError:
        auc = None
    correct = int((pred == y).sum())
    return {
        "n": len(y),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "accuracy": correct / len(y),
        "accuracy_exact_ci": list(exact_binomial_ci(correct, len(y))),
        "roc_auc": auc,
        "real_acc": _class_rate(cm, 0),
        "fake_acc": _class_rate(cm, 1),
    }


def _breakdown(
    y: np.ndarray,
    s: np.ndarray,
    pred: np.ndarray,
    groups: Mapping[str, Sequence[Any]],
    min_group_n: int = MIN_GROUP_N,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per-value metric summaries for each grouping column.

    Every cell carries the exact (Clopper–Pearson) 95% interval of its accuracy. Values with
    fewer than ``min_group_n`` images are pooled into one cell, named by
    :func:`small_groups_key` (:data:`SMALL_GROUPS_KEY` by default) and placed last, whose
    ``n_groups`` and ``groups`` say which values it holds: a per-group number from a handful of
    images is noise, and a table of such rows invites reading it as signal.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, values in groups.items():
        keys = np.array([_group_key(v) for v in values], dtype=object)
        if len(keys) != len(y):
            raise ValueError(f"groups[{name!r}] has {len(keys)} values, expected {len(y)}")
        cells: dict[str, dict[str, Any]] = {}
        small: list[str] = []
        for key in sorted(set(keys.tolist())):
            mask = keys == key
            if int(mask.sum()) < min_group_n:
                small.append(key)
                continue
            cells[key] = _subset_summary(y[mask], s[mask], pred[mask])
        if small:
            mask = np.isin(keys, small)
            cells[small_groups_key(min_group_n)] = {
                **_subset_summary(y[mask], s[mask], pred[mask]),
                "n_groups": len(small),
                "groups": small,
            }
        out[str(name)] = cells
    return out


def _pct(x: float) -> str:
    """Format a proportion as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def _interval(ci: Sequence[float]) -> str:
    """Format an interval of proportions as ``lo–hi%``."""
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _class_warnings(m: Mapping[str, Any]) -> list[str]:
    """Warnings about absent or tiny classes."""
    out: list[str] = []
    if m["n_fake"] == 0:
        out.append("AUC is undefined: the set has only real images.")
    elif m["n_real"] == 0:
        out.append("AUC is undefined: the set has only fake images.")
    for label, count, acc_key, name in (
        (0, m["n_real"], "real_acc", "real accuracy (TNR)"),
        (1, m["n_fake"], "fake_acc", "fake accuracy (TPR)"),
    ):
        if 0 < count < SMALL_CLASS_N:
            ci = exact_binomial_ci(round(m[acc_key] * count), count)
            out.append(
                f"Only {count} {TARGET_NAMES[label]} images (fewer than {SMALL_CLASS_N}): "
                f"the {name} of {_pct(m[acc_key])} has a 95% interval of {_interval(ci)} "
                "(Clopper–Pearson)."
            )
    return out


def _interval_warnings(m: Mapping[str, Any]) -> list[str]:
    """Warnings about small n, collapsed bootstrap intervals and missing intervals."""
    out: list[str] = []
    n, acc, exact = m["n"], m["accuracy"], m["accuracy_exact_ci"]
    if n < SMALL_N:
        out.append(
            f"Only {n} test images: accuracy {_pct(acc)} has a 95% interval of "
            f"{_interval(exact)} (Clopper–Pearson); treat it as a rough estimate."
        )
    boot = m["accuracy_ci"]
    if boot is not None and boot[0] == boot[1] and acc in (0.0, 1.0):
        what = "errors" if acc == 1.0 else "correct predictions"
        out.append(
            f"The bootstrap interval for accuracy collapses to {_pct(acc)} because there are "
            f"no {what}: a bootstrap cannot show uncertainty without {what}. "
            f"The exact 95% interval is {_interval(exact)} (Clopper–Pearson)."
        )
    auc, auc_ci = m["roc_auc"], m["roc_auc_ci"]
    if auc is not None and auc_ci is not None and auc_ci[0] == auc_ci[1]:
        out.append(
            f"ROC-AUC is {auc:.3f} with a bootstrap interval that collapses to a point: the "
            "classes are perfectly ordered in this sample, so the bootstrap cannot show the "
            "uncertainty; a larger test set is needed to bound it."
        )
    if auc is not None and auc_ci is None:
        out.append(
            "No bootstrap interval for ROC-AUC: fewer than half of the resamples contained "
            "both classes."
        )
    for key, name in (("average_precision", "Average precision"),) + _TPR_NAMES:
        value, ci = m.get(key), m.get(f"{key}_ci")
        if value is not None and is_zero_width(ci):
            out.append(
                f"{name} is {value:.3f} with a bootstrap interval of zero width "
                f"[{ci[0]:.3f}, {ci[1]:.3f}]: every resample gave the same value, which shows "
                "that this sample cannot measure the uncertainty, not that there is none."
            )
    return out


def is_zero_width(ci: Sequence[float] | None) -> bool:
    """True for an interval ``[lo, hi]`` with ``lo == hi`` (e.g. ``[1.000, 1.000]``)."""
    return ci is not None and len(ci) == 2 and abs(float(ci[1]) - float(ci[0])) < 1e-12


def _tpr_warnings(m: Mapping[str, Any]) -> list[str]:
    """Warnings when a target FPR is finer than one real image can resolve."""
    n_real = m["n_real"]
    out: list[str] = []
    for (key, fpr), (_, name) in zip(FPR_TARGETS, _TPR_NAMES, strict=True):
        if m.get(key) is None or n_real * fpr >= 1 - _FPR_EPS:
            continue
        out.append(
            f"{name}: with {n_real} real images the smallest non-zero FPR is "
            f"1/{n_real} = {_pct(1 / n_real)}, above {100 * fpr:.0f}%, so the value "
            f"({m[key]:.3f}) is the TPR with no real image flagged (FPR 0); at least "
            f"{math.ceil(1 / fpr)} reals are needed to measure this operating point."
        )
    return out


def _score_warnings(s: np.ndarray) -> list[str]:
    """Warnings about scores that are not probabilities."""
    if ((s < 0) | (s > 1)).any():
        return [
            "Some scores lie outside [0, 1]; log_loss and brier assume probabilities, and "
            "ECE is not computed."
        ]
    return []


def _tpr_metrics(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """TPR at each target FPR with bootstrap intervals (None for one class)."""
    out: dict[str, Any] = {}
    try:
        values = tpr_at_fprs(y, s, [fpr for _, fpr in FPR_TARGETS])
    except ValueError:
        values = [None] * len(FPR_TARGETS)
    for (key, fpr), value in zip(FPR_TARGETS, values, strict=True):
        ci = None if value is None else bootstrap_ci(y, s, _tpr_at(fpr), n_boot=n_boot, seed=seed)
        out[key] = None if value is None else float(value)
        out[f"{key}_ci"] = list(ci) if ci is not None else None
    return out


def _calibration_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    """Expected calibration error (None when scores are not probabilities)."""
    try:
        ece: float | None = expected_calibration_error(y, s, ECE_BINS)
    except ValueError:
        ece = None
    return {"ece": ece, "ece_bins": ECE_BINS}


def _ranking_metrics(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """ROC-AUC and average precision with bootstrap intervals (None for one class)."""
    out: dict[str, Any] = {}
    metrics = (
        ("roc_auc", _roc_auc, fast_auc),
        ("average_precision", _average_precision, fast_average_precision),
    )
    for key, fn, fast in metrics:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[key] = fn(y, s)
        except ValueError:
            out[key], out[f"{key}_ci"] = None, None
            continue
        ci = bootstrap_ci(y, s, fast, n_boot=n_boot, seed=seed)
        out[f"{key}_ci"] = list(ci) if ci is not None else None
    return out


def _classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Confusion matrix, per-class rates and sklearn classification reports."""
    cm = confusion_matrix(y, pred, labels=list(LABELS))
    kwargs: dict[str, Any] = {
        "labels": list(LABELS),
        "target_names": list(TARGET_NAMES),
        "zero_division": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = balanced_accuracy_score(y, pred)
        report = classification_report(y, pred, output_dict=True, **kwargs)
        report_text = classification_report(y, pred, **kwargs)
    return {
        "balanced_accuracy": _finite_or_none(balanced),
        "real_acc": _class_rate(cm, 0),
        "fake_acc": _class_rate(cm, 1),
        "confusion_matrix": cm.tolist(),
        "classification_report": report,
        "classification_report_text": report_text,
    }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    groups: Mapping[str, Sequence[Any]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    uncertain_band: float | None = None,
    min_group_n: int = MIN_GROUP_N,
) -> dict[str, Any]:
    """Compute a JSON-serialisable metric report for binary real/fake predictions.

    Args:
        y_true: Labels, 0 = real, 1 = fake.
        score: P(fake) per image; predictions are ``score >= threshold``.
        threshold: Decision threshold on ``score``.
        groups: Optional grouping columns (e.g. ``{"source": [...]}``), each aligned
            with ``y_true``; produces the ``breakdown`` entry. Values with fewer than
            ``min_group_n`` images are pooled into one cell (see :func:`small_groups_key`).
        n_boot: Bootstrap resamples for the intervals.
        seed: Seed for the bootstrap.
        uncertain_band: The detector's uncertain half-width around ``threshold``, stored as
            ``uncertain_band`` (for the report's score histograms) when given.
        min_group_n: Smallest group shown on its own in ``breakdown``.

    Returns:
        A dict of plain Python values (NaN replaced by None); see the module docs
        for the keys. ``warnings`` lists plain-language caveats. Besides accuracy, AUC and
        AP it holds ``tpr_at_fpr_1`` / ``tpr_at_fpr_5`` (see :func:`tpr_at_fpr`) with
        bootstrap intervals ``*_ci``, and ``ece`` over ``ece_bins`` equal-width bins.

    Raises:
        ValueError: On empty or misaligned input, labels other than 0/1, or NaN scores.
    """
    y, s = _validate(y_true, score)
    pred = (s >= threshold).astype(int)
    correct = int((pred == y).sum())
    accuracy_ci = bootstrap_ci(y, s, _accuracy_at(threshold), n_boot=n_boot, seed=seed)
    m: dict[str, Any] = {
        "n": len(y),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy": correct / len(y),
        "accuracy_ci": list(accuracy_ci) if accuracy_ci is not None else None,
        "accuracy_exact_ci": list(exact_binomial_ci(correct, len(y))),
    }
    ranking = _ranking_metrics(y, s, n_boot, seed)
    classification = _classification_metrics(y, pred)
    m["balanced_accuracy"] = classification.pop("balanced_accuracy")
    m.update(ranking)
    m.update(_tpr_metrics(y, s, n_boot, seed))
    m["real_acc"] = classification.pop("real_acc")
    m["fake_acc"] = classification.pop("fake_acc")
    m["log_loss"] = _log_loss(y, s)
    m["brier"] = float(np.mean((s - y) ** 2))
    m.update(_calibration_metrics(y, s))
    if uncertain_band is not None:
        m["uncertain_band"] = float(uncertain_band)
    m.update(classification)
    m["breakdown"] = _breakdown(y, s, pred, groups, min_group_n) if groups else {}
    m["warnings"] = (
        _interval_warnings(m) + _class_warnings(m) + _tpr_warnings(m) + _score_warnings(s)
    )
    for text in m["warnings"]:
        logger.debug("metrics warning: %s", text)
    return _jsonable(m)


def _fmt(value: float | None, digits: int = 3) -> str:
    """Format a number or return ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    """Format an interval as `` [lo, hi]`` (flagged when of zero width) or an empty string."""
    if ci is None:
        return ""
    flag = " (zero width: see warnings)" if is_zero_width(ci) else ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]{flag}"


def format_summary(metrics: Mapping[str, Any]) -> str:
    """Render a metrics dict from :func:`compute_metrics` as a few readable lines.

    Args:
        metrics: Output of :func:`compute_metrics` (or the same loaded from JSON).

    Returns:
        Headline line, secondary line, the classification report and the warnings.
    """
    m = metrics
    head = (
        f"accuracy {_fmt(m.get('accuracy'))}{_fmt_ci(m.get('accuracy_ci'))}  "
        f"ROC-AUC {_fmt(m.get('roc_auc'))}{_fmt_ci(m.get('roc_auc_ci'))}  "
        f"AP {_fmt(m.get('average_precision'))}  "
        f"real acc {_fmt(m.get('real_acc'), 2)}  fake acc {_fmt(m.get('fake_acc'), 2)}  "
        f"(n={m.get('n')})"
    )
    exact = m.get("accuracy_exact_ci")
    second = (
        f"exact 95% CI for accuracy{_fmt_ci(exact)}  "
        f"balanced acc {_fmt(m.get('balanced_accuracy'))}  "
        f"log loss {_fmt(m.get('log_loss'))}  brier {_fmt(m.get('brier'))}  "
        f"threshold {_fmt(m.get('threshold'), 2)}  "
        f"(real {m.get('n_real')}, fake {m.get('n_fake')})"
    )
    third = (
        f"TPR@1%FPR {_fmt(m.get('tpr_at_fpr_1'))}{_fmt_ci(m.get('tpr_at_fpr_1_ci'))}  "
        f"TPR@5%FPR {_fmt(m.get('tpr_at_fpr_5'))}{_fmt_ci(m.get('tpr_at_fpr_5_ci'))}  "
        f"ECE {_fmt(m.get('ece'))}"
    )
    lines = [head, second, third]
    report = m.get("classification_report_text")
    if report:
        lines += ["", report.rstrip()]
    if m.get("warnings"):
        lines += ["", "Warnings:"] + [f"  - {w}" for w in m["warnings"]]
    return "\n".join(lines)
