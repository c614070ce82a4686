"""Detectors that are one torch network (fine-tuned timm models): the ``train`` extra's half of
:class:`~fakescope.models.detector.Detector`.

A :class:`TorchDetector` is both the one detector interface and an ``nn.Module``: it trains, runs
under autocast, moves between devices, wraps in ``DistributedDataParallel``, exports to ONNX and
has layers for Grad-CAM. Scoring goes through the same :meth:`Detector.tensor_logits`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.models.detector import Detector, DetectorSpec, LogitsAndNovelty
from fakescope.models.validate import INPUT_FILTERS


class TorchDetector(nn.Module, Detector):
    """A torch network with one output logit per image, plus the spec that describes it."""

    def __init__(self, net: nn.Module, spec: DetectorSpec) -> None:
        nn.Module.__init__(self)
        Detector.__init__(self, net, spec)
        self.input_filter = make_input_filter(spec.input_filter)

    # nn.Module's own ``to`` and ``eval`` win over Detector's (which only reach torch members).
    to = nn.Module.to
    eval = nn.Module.eval

    def load_tensors(self, state: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Load numpy arrays (or tensors) into the network (see :meth:`Detector.load_tensors`)."""
        tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
        try:
            missing, unexpected = self.net.load_state_dict(tensors, strict=False)
        except RuntimeError as e:  # shapes that do not fit
            raise ValueError(str(e)[:500]) from e
        return list(missing), list(unexpected)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits, shape ``[B]``."""
        out = self.net(self.input_filter(x))
        return out.reshape(out.shape[0], -1)[:, 0]

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def tensor_logits(self, x: Any, amp: torch.dtype | None = None) -> LogitsAndNovelty:
        """Raw logits of a preprocessed batch (numpy or tensor), as float32 arrays; no guard."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        t = t.to(self._device())
        ctx = (
            torch.autocast(t.device.type, dtype=amp)
            if amp is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = self(t)
        return out.float().cpu().numpy().astype(np.float32), None

    def calibrated_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the stored Platt scaling to a tensor (identity when there is none)."""
        cal = self.spec.calibration
        if not cal:
            return logits
        return logits * float(cal["a"]) + float(cal["b"])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) for a preprocessed batch, shape ``[B]``, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self.calibrated_logits(self(x).float()))
        finally:
            self.train(was_training)


class NPR(nn.Module):
    """Neighbouring-pixel residual: ``x - up(down(x))`` with nearest 2x resampling.

    Generators upsample; the residual keeps the local correlations that upsampling leaves and drops
    image content (Tan et al., "Rethinking the up-sampling operations in CNN-based generative
    network for generalizable deepfake detection", CVPR 2024). Odd sizes are cropped to even.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        down = nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")
        return x - nn.functional.interpolate(down, scale_factor=2.0, mode="nearest")


def make_input_filter(name: str | None) -> nn.Module:
    """The fixed input filter named in a spec (identity for None)."""
    if name is None:
        return nn.Identity()
    if name == "npr":
        return NPR()
    raise ValueError(f"unknown input filter {name!r}; choose from {INPUT_FILTERS}")
