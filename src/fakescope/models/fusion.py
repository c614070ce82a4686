"""Fusion: one detector made of several, combining their calibrated logits linearly.

Fitting the weights is training: see :mod:`fakescope.train.fusion`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec


class FusionNet(nn.Module):
    """Holds member detectors and the linear combiner ``z = sum_i w_i * z_i + bias``.

    Members see images through their own preprocessing, so a fusion detector scores images
    (:meth:`Detector.image_logits`), not one preprocessed tensor.
    """

    def __init__(self, members: Sequence[Detector]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.full((len(members),), 1.0 / max(len(members), 1)))
        self.register_buffer("bias", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a fusion detector scores images, not tensors: use Detector.image_logits")

    def combine(self, z: np.ndarray) -> np.ndarray:
        """``z @ weights + bias`` for the members' calibrated logits ``z`` ``[rows, members]``."""
        return z @ self.weights.cpu().numpy() + float(self.bias)


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


def build_fusion_from_spec(
    spec: DetectorSpec, build_member: Callable[[DetectorSpec], Detector]
) -> Detector:
    """Rebuild a fusion detector's shape from its spec; ``build_member`` rebuilds each member
    (the registry passes its own ``build_from_spec``)."""
    members = [build_member(DetectorSpec.from_dict(m)) for m in spec.model_kwargs["members"]]
    return Detector(FusionNet(members), spec)
