"""Probe detectors: a linear head on embeddings from a frozen backbone (UnivFD, Ojha et al. 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec
from fakescope.models.novelty import build_novelty


class ProbeNet(nn.Module):
    """Frozen backbone → (L2-normalise) → standardise → linear head with one logit.

    The backbone (ONNX session or frozen timm network) is not a submodule: its weights live in their
    own file and are referenced by path and sha256, so checkpoints hold only the head (kilobytes)
    and, when fitted, the out-of-depth guard's bank of training embeddings.

    Args:
        backbone: the frozen feature extractor.
        dim: embedding size.
        l2: L2-normalise embeddings before the head (UnivFD's set-up for CLIP).
        novelty: the guard's stored config (see :mod:`fakescope.models.novelty`), or None.
    """

    def __init__(
        self, backbone: Any, dim: int, l2: bool = False, novelty: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.l2 = bool(l2)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.head = nn.Linear(dim, 1)
        self.novelty = build_novelty(novelty)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone embeddings of a preprocessed batch."""
        feats = self.backbone.embed(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(
            self.head.weight.device
        )

    def head_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings, shape ``[B, 1]``."""
        if self.l2:
            feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
        z = (feats - self.mean) / self.scale
        # a row-wise product and sum rather than a GEMM: a GEMM's summation order depends on the
        # batch size, and an image's score must not depend on its batch mates, even in the 7th digit
        return (z * self.head.weight[0]).sum(dim=1, keepdim=True) + self.head.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.embed(x))

    def logits_and_novelty(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[B, 1]`` and the guard's distances ``[B]`` (None without a guard), one pass."""
        feats = self.embed(x)
        novelty = self.novelty(feats) if self.novelty is not None else None
        return self.head_logits(feats), novelty

    def set_head(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, bias: float) -> None:
        """Install a head fitted elsewhere (e.g. scikit-learn's logistic regression)."""
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32).reshape(1, -1))
            self.head.bias.fill_(float(bias))


def probe_arch(backbone_spec: dict[str, Any]) -> str:
    """A readable architecture name, e.g. ``probe:clip_vit_b16_openai_visual.int8.onnx/embed``."""
    name = backbone_spec.get("name") or Path(str(backbone_spec.get("path", "?"))).name
    return f"probe:{name}/{backbone_spec.get('pool', 'embed')}"


def create_probe_detector(backbone: Any, dim: int, l2: bool = False) -> Detector:
    """An untrained probe detector on ``backbone`` (the head is fitted by ``train.probe``)."""
    spec = DetectorSpec(
        kind="probe",
        arch=probe_arch(backbone.spec()) + ("+l2" if l2 else ""),
        model_kwargs={"backbone": backbone.spec(), "dim": int(dim), "l2": bool(l2)},
        preprocessing=backbone.preprocessing,
    )
    return Detector(ProbeNet(backbone, dim, l2=l2), spec)


def guard_dims(spec: DetectorSpec) -> tuple[int, int] | None:
    """Which embedding columns the out-of-depth guard looks at.

    For a ``layers`` probe: the first half of its transformer blocks, whose low-level statistics
    set star fields, text and flat colours apart from photos and generated images alike (the last
    blocks see "space art" and "a star field" as neighbours). Otherwise the whole embedding.
    """
    bb = spec.model_kwargs.get("backbone", {})
    layers = bb.get("layers")
    if bb.get("pool") != "layers" or not layers:
        return None
    width = int(spec.model_kwargs["dim"]) // len(layers)
    return (0, max(1, len(layers) // 2) * width)


def attach_novelty(detector: Detector, feats: np.ndarray, **fit_kw: Any) -> None:
    """Fit the out-of-depth guard on a probe's training embeddings and record it in the spec."""
    from fakescope.models.novelty import fit_novelty

    fit_kw.setdefault("dims", guard_dims(detector.spec))
    detector.net.novelty = fit_novelty(feats, **fit_kw)
    detector.spec.model_kwargs["novelty"] = detector.net.novelty.config()


def build_probe_from_spec(spec: DetectorSpec, backbone_path: str | None = None) -> Detector:
    """Rebuild a probe detector's shape from its spec, reopening the referenced backbone."""
    from fakescope.embed.backbones import find_weights_file, open_backbone
    from fakescope.embed.fetch import ensure_file

    kw = spec.model_kwargs
    bb = kw["backbone"]
    if backbone_path is None and bb.get("type") == "onnx":
        stored = find_weights_file(bb.get("path"))
        if stored and not Path(stored).is_file():  # nowhere here: fetch it if fakescope can
            backbone_path = str(ensure_file(stored, bb.get("sha256")))
    backbone = open_backbone(bb, path=backbone_path)
    net = ProbeNet(backbone, int(kw["dim"]), l2=bool(kw.get("l2")), novelty=kw.get("novelty"))
    return Detector(net, spec)
