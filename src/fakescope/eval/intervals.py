"""Confidence intervals: percentile bootstrap over rows or over whole groups, and the exact
(Clopper–Pearson) interval of a proportion."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta

from fakescope.eval.measures import MetricFn


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


def is_zero_width(ci: Sequence[float] | None) -> bool:
    """True for an interval ``[lo, hi]`` with ``lo == hi`` (e.g. ``[1.000, 1.000]``)."""
    return ci is not None and len(ci) == 2 and abs(float(ci[1]) - float(ci[0])) < 1e-12
