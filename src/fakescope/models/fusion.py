"""Fusion: combine several detectors' calibrated logits, with weights fitted on validation data only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec

METHODS = ("mean", "stacking")


class FusionNet(nn.Module):
    """Holds member detectors and the linear combiner ``z = sum_i w_i * z_i + bias``.

    Members see images through their own preprocessing, so a fusion detector is scored file by
    file (``eval.evaluate.score_frame``), not on one preprocessed tensor.
    """

    def __init__(self, members: Sequence[Detector]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.full((len(members),), 1.0 / max(len(members), 1)))
        self.register_buffer("bias", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            "a fusion detector scores files, not tensors: use fakescope.eval.score_frame"
        )


def member_matrix(
    members: Sequence[Detector], df: pd.DataFrame, kw: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Calibrated logits of every member for the rows all members could score.

    Returns:
        row positions kept, a ``[rows, members]`` matrix, and failures as ``(row, reason)``.
    """
    from fakescope.eval.evaluate import score_frame

    cols, failures, keep = [], {}, set(range(len(df)))
    for m in members:
        scored, fails = score_frame(m, df.reset_index(drop=True), **kw)
        failures.update(dict(fails))
        z = m.calibrated_logits(torch.tensor(scored["logit"].to_numpy(np.float32))).numpy()
        cols.append(pd.Series(z, index=scored.index))
        keep &= set(scored.index.tolist())
    ok = np.array(sorted(keep), dtype=np.int64)
    z = (
        np.stack([c.reindex(ok).to_numpy() for c in cols], axis=1)
        if len(ok)
        else np.zeros((0, len(cols)))
    )
    return ok, z.astype(np.float32), sorted(failures.items())


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


def create_fusion(
    members: Sequence[Detector], weights: np.ndarray, bias: float, method: str
) -> Detector:
    """A fusion detector over ``members`` (their specs and tensors are stored inside it)."""
    arch = f"fusion:{method}(" + ",".join(m.spec.arch for m in members) + ")"
    pre = members[0].spec.preprocessing
    spec = DetectorSpec(
        kind="fusion",
        arch=arch,
        preprocessing=pre,
        model_kwargs={"method": method, "members": [m.spec.to_dict() for m in members]},
    )
    net = FusionNet(members)
    net.weights.copy_(torch.as_tensor(np.asarray(weights), dtype=torch.float32))
    net.bias.fill_(float(bias))
    return Detector(net, spec)


def build_fusion_from_spec(spec: DetectorSpec) -> Detector:
    """Rebuild a fusion detector's shape (members included) from its spec."""
    from fakescope.models.registry import build_from_spec

    members = [build_from_spec(DetectorSpec.from_dict(m)) for m in spec.model_kwargs["members"]]
    return Detector(FusionNet(members), spec)


def fuse(
    members: Sequence[Detector], df: pd.DataFrame, method: str = "stacking", **score_kw: Any
) -> Detector:
    """Fit a fusion of ``members`` on the rows of ``df`` whose split is ``val`` (and only those)."""
    if "split" not in df.columns or not (df["split"] == "val").any():
        raise ValueError(
            "fusion is fitted on validation rows: the data needs a split column with 'val'"
        )
    val = df[df["split"] == "val"].reset_index(drop=True)
    ok, z, _ = member_matrix(members, val, score_kw)
    y = val["label"].to_numpy()[ok]
    weights, bias = fit_combiner(z, y, method)
    fused = create_fusion(members, weights, bias, method)
    if method == "mean":  # an average of logits is not a probability: Platt-scale it on val too
        from fakescope.eval.calibration import fit_platt

        fused.spec.calibration = fit_platt(z @ weights + bias, y)
    fused.meta = {
        "fusion_fit": {
            "rows": int(len(ok)),
            "split": "val",
            "weights": list(map(float, weights)),
            "bias": float(bias),
        }
    }
    return fused
