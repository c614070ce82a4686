"""The metric report of a binary real/fake evaluation (:func:`compute_metrics`, a
:class:`~fakescope.eval.result.Metrics`, saved as ``metrics.json``): the primitives of
:mod:`fakescope.eval.measures` with the intervals of :mod:`fakescope.eval.intervals`, per-group
breakdowns and plain-language warnings about small samples. The terminal summary is
:func:`fakescope.eval.summary_text.format_summary`.

The primitives and intervals are re-exported here, so ``from fakescope.eval.metrics import
fast_auc`` keeps working.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
)

from fakescope.eval.intervals import (
    bootstrap_ci,
    exact_binomial_ci,
    grouped_bootstrap_ci,
    is_zero_width,
)
from fakescope.eval.measures import (
    ECE_BINS,
    FPR_EPS,
    FPR_TARGETS,
    LABELS,
    TARGET_NAMES,
    MetricFn,
    accuracy_at,
    average_precision,
    expected_calibration_error,
    fast_auc,
    fast_average_precision,
    log_loss,
    reliability_bins,
    roc_auc,
    tpr_at,
    tpr_at_fpr,
    tpr_at_fprs,
)
from fakescope.eval.result import Interval, Metrics

__all__ = [
    "ECE_BINS",
    "FPR_TARGETS",
    "LABELS",
    "MIN_GROUP_N",
    "Metrics",
    "SMALL_CLASS_N",
    "SMALL_GROUPS_KEY",
    "SMALL_N",
    "TARGET_NAMES",
    "MetricFn",
    "bootstrap_ci",
    "compute_metrics",
    "exact_binomial_ci",
    "expected_calibration_error",
    "fast_auc",
    "fast_average_precision",
    "grouped_bootstrap_ci",
    "is_zero_width",
    "reliability_bins",
    "small_groups_key",
    "tpr_at_fpr",
    "tpr_at_fprs",
]

logger = logging.getLogger(__name__)

SMALL_N = 200
SMALL_CLASS_N = 30
MIN_GROUP_N = 10


def small_groups_key(min_group_n: int = MIN_GROUP_N) -> str:
    """Name of the breakdown cell that pools the groups with fewer than ``min_group_n`` images."""
    return f"(small groups, n<{min_group_n} each)"


SMALL_GROUPS_KEY = small_groups_key()
_TPR_NAMES = tuple((key, f"TPR at {100 * fpr:.0f}% FPR") for key, fpr in FPR_TARGETS)


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


def _group_key(value: Any) -> str:
    """JSON-safe key for a group value; missing values become ``"(missing)"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    return str(value)


def _subset_summary(y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Small metric summary used for one breakdown cell."""
    cm = confusion_matrix(y, pred, labels=list(LABELS))
    try:
        auc: float | None = roc_auc(y, s)
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


def _class_warnings(m: Metrics) -> list[str]:
    """Warnings about absent or tiny classes."""
    out: list[str] = []
    if m.n_fake == 0:
        out.append("AUC is undefined: the set has only real images.")
    elif m.n_real == 0:
        out.append("AUC is undefined: the set has only fake images.")
    for label, count, acc, name in (
        (0, m.n_real, m.real_acc, "real accuracy (TNR)"),
        (1, m.n_fake, m.fake_acc, "fake accuracy (TPR)"),
    ):
        if 0 < count < SMALL_CLASS_N and acc is not None:
            ci = exact_binomial_ci(round(acc * count), count)
            out.append(
                f"Only {count} {TARGET_NAMES[label]} images (fewer than {SMALL_CLASS_N}): "
                f"the {name} of {_pct(acc)} has a 95% interval of {_interval(ci)} "
                "(Clopper–Pearson)."
            )
    return out


def _interval_warnings(m: Metrics) -> list[str]:
    """Warnings about small n, collapsed bootstrap intervals and missing intervals."""
    out: list[str] = []
    n, acc, exact = m.n, m.accuracy, m.accuracy_exact_ci or (0.0, 1.0)
    if n < SMALL_N:
        out.append(
            f"Only {n} test images: accuracy {_pct(acc)} has a 95% interval of "
            f"{_interval(exact)} (Clopper–Pearson); treat it as a rough estimate."
        )
    boot = m.accuracy_ci
    if boot is not None and boot[0] == boot[1] and acc in (0.0, 1.0):
        what = "errors" if acc == 1.0 else "correct predictions"
        out.append(
            f"The bootstrap interval for accuracy collapses to {_pct(acc)} because there are "
            f"no {what}: a bootstrap cannot show uncertainty without {what}. "
            f"The exact 95% interval is {_interval(exact)} (Clopper–Pearson)."
        )
    auc, auc_ci = m.roc_auc, m.roc_auc_ci
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
    ranked: list[tuple[str, float | None, Interval | None]] = [
        ("Average precision", m.average_precision, m.average_precision_ci)
    ]
    ranked += [(name, t.value, t.ci) for (_, name), t in zip(_TPR_NAMES, m.tprs(), strict=True)]
    for name, value, ci in ranked:
        if value is not None and ci is not None and is_zero_width(ci):
            out.append(
                f"{name} is {value:.3f} with a bootstrap interval of zero width "
                f"[{ci[0]:.3f}, {ci[1]:.3f}]: every resample gave the same value, which shows "
                "that this sample cannot measure the uncertainty, not that there is none."
            )
    return out


def _tpr_warnings(m: Metrics) -> list[str]:
    """Warnings when a target FPR is finer than one real image can resolve."""
    n_real = m.n_real
    out: list[str] = []
    for t, (_, name) in zip(m.tprs(), _TPR_NAMES, strict=True):
        if t.value is None or n_real * t.fpr >= 1 - FPR_EPS:
            continue
        out.append(
            f"{name}: with {n_real} real images the smallest non-zero FPR is "
            f"1/{n_real} = {_pct(1 / n_real)}, above {100 * t.fpr:.0f}%, so the value "
            f"({t.value:.3f}) is the TPR with no real image flagged (FPR 0); at least "
            f"{math.ceil(1 / t.fpr)} reals are needed to measure this operating point."
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
        ci = None if value is None else bootstrap_ci(y, s, tpr_at(fpr), n_boot=n_boot, seed=seed)
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
        ("roc_auc", roc_auc, fast_auc),
        ("average_precision", average_precision, fast_average_precision),
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
) -> Metrics:
    """Compute the metric report of binary real/fake predictions.

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
        The report (values that could not be computed, or NaN, are None); its
        :meth:`~fakescope.eval.result.Metrics.to_json_dict` is ``metrics.json``. ``warnings``
        lists plain-language caveats. Besides accuracy, AUC and AP it holds ``tpr_at_fpr_1`` /
        ``tpr_at_fpr_5`` (see :func:`tpr_at_fpr`) with bootstrap intervals ``*_ci``, and
        ``ece`` over ``ece_bins`` equal-width bins.

    Raises:
        ValueError: On empty or misaligned input, labels other than 0/1, or NaN scores.
    """
    y, s = _validate(y_true, score)
    pred = (s >= threshold).astype(int)
    correct = int((pred == y).sum())
    accuracy_ci = bootstrap_ci(y, s, accuracy_at(threshold), n_boot=n_boot, seed=seed)
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
    m["log_loss"] = log_loss(y, s)
    m["brier"] = float(np.mean((s - y) ** 2))
    m.update(_calibration_metrics(y, s))
    if uncertain_band is not None:
        m["uncertain_band"] = float(uncertain_band)
    m.update(classification)
    m["breakdown"] = _breakdown(y, s, pred, groups, min_group_n) if groups else {}
    metrics = Metrics.model_validate(_jsonable(m))
    metrics.warnings = (
        _interval_warnings(metrics)
        + _class_warnings(metrics)
        + _tpr_warnings(metrics)
        + _score_warnings(s)
    )
    for text in metrics.warnings:
        logger.debug("metrics warning: %s", text)
    return metrics
