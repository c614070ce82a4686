"""Probe detectors: a linear head on embeddings from a frozen backbone (UnivFD, Ojha et al. 2023)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec


class ProbeNet(nn.Module):
    """Frozen backbone → standardise → linear head with one logit.

    The backbone (ONNX session or frozen timm network) is not a submodule: its weights live in their
    own file and are referenced by path and sha256, so checkpoints hold only the head (kilobytes).
    """

    def __init__(self, backbone: Any, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.head = nn.Linear(dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone embeddings of a preprocessed batch."""
        feats = self.backbone.embed(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(
            self.head.weight.device
        )

    def head_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings, shape ``[B, 1]``."""
        return self.head((feats - self.mean) / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.embed(x))

    def set_head(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, bias: float) -> None:
        """Install a head fitted elsewhere (e.g. scikit-learn's logistic regression)."""
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32).reshape(1, -1))
            self.head.bias.fill_(float(bias))


def probe_arch(backbone_spec: dict[str, Any]) -> str:
    """A readable architecture name, e.g. ``probe:clip_vit_b16_openai_visual.int8.onnx/embed``."""
    from pathlib import Path

    name = backbone_spec.get("name") or Path(str(backbone_spec.get("path", "?"))).name
    return f"probe:{name}/{backbone_spec.get('pool', 'embed')}"


def create_probe_detector(backbone: Any, dim: int) -> Detector:
    """An untrained probe detector on ``backbone`` (the head is fitted by ``train.probe``)."""
    spec = DetectorSpec(
        kind="probe",
        arch=probe_arch(backbone.spec()),
        model_kwargs={"backbone": backbone.spec(), "dim": int(dim)},
        preprocessing=backbone.preprocessing,
    )
    return Detector(ProbeNet(backbone, dim), spec)


def build_probe_from_spec(spec: DetectorSpec, backbone_path: str | None = None) -> Detector:
    """Rebuild a probe detector's shape from its spec, reopening the referenced backbone."""
    from fakescope.embed.backbones import open_backbone

    backbone = open_backbone(spec.model_kwargs["backbone"], path=backbone_path)
    return Detector(ProbeNet(backbone, int(spec.model_kwargs["dim"])), spec)
