"""Fusion: one detector made of several, combining their calibrated logits linearly.

Fitting the weights is training: see :mod:`fakescope.train.fusion`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fakescope.models.detector import Detector, DetectorSpec


class FusionNet:
    """Holds member detectors and the linear combiner ``z = sum_i w_i * z_i + bias``.

    Members see images through their own preprocessing, so a fusion detector scores images
    (:meth:`Detector.image_logits`), not one preprocessed tensor. Its own arrays are stored as
    ``weights`` and ``bias``; each member's under ``members.<i>.net.``.
    """

    def __init__(self, members: Sequence[Detector]) -> None:
        self.members = list(members)
        self.weights = np.full(len(members), 1.0 / max(len(members), 1), dtype=np.float32)
        self.bias = np.zeros((), dtype=np.float32)

    def combine(self, z: np.ndarray) -> np.ndarray:
        """``z @ weights + bias`` for the members' calibrated logits ``z`` ``[rows, members]``."""
        return z @ self.weights + self.bias

    def state_dict(self) -> dict[str, Any]:
        """Its arrays and every member's, by name."""
        out: dict[str, Any] = {"weights": self.weights.copy(), "bias": self.bias.copy()}
        for i, m in enumerate(self.members):
            out.update({f"members.{i}.net.{k}": v for k, v in m.net.state_dict().items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Load its arrays and hand each member its own; returns ``(missing, unexpected)``."""
        missing = [k for k in ("weights", "bias") if k not in state]
        unexpected = [
            k for k in state if k not in ("weights", "bias") and not k.startswith("members.")
        ]
        for i, m in enumerate(self.members):
            prefix = f"members.{i}.net."
            own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            miss, extra = m.load_tensors(own)
            missing += [prefix + k for k in miss]
            unexpected += [prefix + k for k in extra]
        if missing or unexpected:
            return missing, unexpected
        self.weights = np.array(state["weights"], dtype=np.float32).reshape(len(self.members))
        self.bias = np.array(state["bias"], dtype=np.float32).reshape(())
        return [], []


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
    net.weights = np.asarray(weights, dtype=np.float32).reshape(len(members)).copy()
    net.bias = np.asarray(float(bias), dtype=np.float32)
    return Detector(net, spec)


def build_fusion_from_spec(
    spec: DetectorSpec, build_member: Callable[[DetectorSpec], Detector]
) -> Detector:
    """Rebuild a fusion detector's shape from its spec; ``build_member`` rebuilds each member
    (the registry passes its own ``build_from_spec``)."""
    members = [build_member(DetectorSpec.from_dict(m)) for m in spec.model_kwargs["members"]]
    return Detector(FusionNet(members), spec)
