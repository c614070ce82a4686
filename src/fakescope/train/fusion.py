"""Fit a fusion: weights for several detectors' calibrated logits, from validation rows only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from fakescope.eval.calibration import fit_platt
from fakescope.eval.scoring import member_logits
from fakescope.models.detector import Detector
from fakescope.models.fusion import create_fusion

METHODS = ("mean", "stacking")


def fit_combiner(z_val: np.ndarray, y_val: np.ndarray, method: str) -> tuple[np.ndarray, float]:
    """Weights and bias for the members' calibrated logits, from validation rows only."""
    if method == "mean":
        return np.full(z_val.shape[1], 1.0 / z_val.shape[1]), 0.0
    if method == "stacking":
        if len(np.unique(y_val)) < 2:
            raise ValueError("stacking needs both classes in the validation rows")
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(z_val, y_val)
        return clf.coef_[0], float(clf.intercept_[0])
    raise ValueError(f"unknown fusion method {method!r}; choose from {METHODS}")


def fuse(
    members: Sequence[Detector], df: pd.DataFrame, method: str = "stacking", **score_kw: Any
) -> Detector:
    """Fit a fusion of ``members`` on the rows of ``df`` whose split is ``val`` (and only those)."""
    if "split" not in df.columns or not (df["split"] == "val").any():
        raise ValueError(
            "fusion is fitted on validation rows: the data needs a split column with 'val'"
        )
    val = df[df["split"] == "val"].reset_index(drop=True)
    ok, z, _ = member_logits(members, val, **score_kw)
    y = val["label"].to_numpy()[ok]
    weights, bias = fit_combiner(z, y, method)
    fused = create_fusion(members, weights, bias, method)
    if method == "mean":  # an average of logits is not a probability: Platt-scale it on val too
        fused.spec.calibration = fit_platt(fused.combine(z), y)
    fused.meta = {
        "fusion_fit": {
            "rows": int(len(ok)),
            "split": "val",
            "weights": list(map(float, weights)),
            "bias": float(bias),
        }
    }
    return fused
