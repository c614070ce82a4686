"""Calibration and thresholds, fitted on validation data: Platt scaling and a target false-positive rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit ``P(fake) = sigmoid(a * logit + b)`` by logistic regression on validation logits.

    Uses scikit-learn's ``LogisticRegression`` with a negligible penalty (C=1e4), i.e. Platt scaling
    without Platt's label smoothing. Needs both classes.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both real and fake validation images")
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(logits, labels)
    return {
        "method": "platt",
        "a": float(lr.coef_[0, 0]),
        "b": float(lr.intercept_[0]),
        "n": len(labels),
    }


def apply_calibration(logits: np.ndarray, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """P(fake) from raw logits under a stored calibration (plain sigmoid when there is none)."""
    z = np.asarray(logits, dtype=np.float64)
    if calibration:
        z = z * float(calibration["a"]) + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-z))


def threshold_for_fpr(real_scores: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on ``real_scores`` is at most ``target_fpr``.

    A score is called fake when ``score >= threshold``.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target FPR must be in [0, 1], got {target_fpr}")
    s = np.sort(np.asarray(real_scores, dtype=np.float64))
    if len(s) == 0:
        raise ValueError("a target FPR needs real validation images")
    allowed = int(np.floor(target_fpr * len(s)))  # how many reals may score at or above it
    if allowed >= len(s):
        return float(s[0])
    # Put the threshold just above the (allowed+1)-th highest real score.
    return float(np.nextafter(s[len(s) - allowed - 1], np.inf))
