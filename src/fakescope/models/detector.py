"""One detector interface: any network that maps a batch of images to one logit each.

Score convention (everywhere in fakescope): label 1 = fake, and ``score = P(fake)`` in [0, 1],
obtained as ``sigmoid(a * logit + b)`` where ``a, b`` come from the stored calibration (1, 0 if none).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fakescope.data.transforms import Preprocessing

CLASSES = ("real", "fake")


@dataclass
class DetectorSpec:
    """Everything needed to rebuild a detector, apart from its tensors.

    Attributes:
        kind: the family ("timm" for a fine-tuned timm network).
        arch: the architecture name (a timm model name for "timm").
        model_kwargs: extra keyword arguments the architecture was built with.
        preprocessing: see :class:`Preprocessing`.
        threshold: P(fake) at or above which the verdict is "fake".
        calibration: ``{"method": "platt", "a": float, "b": float}`` applied to logits, or None.
        uncertain_band: half-width around the threshold inside which a verdict reads "uncertain".
        input_filter: a fixed filter applied to the input before the network (``"npr"``: the
            neighbouring-pixel residual of Tan et al., CVPR 2024), or None.
    """

    kind: str
    arch: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    threshold: float = 0.5
    calibration: dict[str, Any] | None = None
    uncertain_band: float = 0.1
    input_filter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorSpec:
        """Inverse of :meth:`to_dict`."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["preprocessing"] = Preprocessing.from_dict(d.get("preprocessing", {}))
        return cls(**known)


class Detector(nn.Module):
    """A network with one output logit per image, plus the spec that describes it."""

    def __init__(self, net: nn.Module, spec: DetectorSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.meta: dict[str, Any] = {}
        self.input_filter = make_input_filter(spec.input_filter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits, shape ``[B]``."""
        out = self.net(self.input_filter(x))
        return out.reshape(out.shape[0], -1)[:, 0]

    def logits_and_novelty(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw logits ``[B]`` and, for detectors with an out-of-depth guard, distances ``[B]``.

        The guard (see :mod:`fakescope.models.novelty`) measures how far each input is from the
        training images in the detector's own embedding space; None for detectors without one.
        """
        guarded = getattr(self.net, "logits_and_novelty", None)
        if guarded is None:
            return self(x), None
        out, novelty = guarded(self.input_filter(x))
        return out.reshape(out.shape[0], -1)[:, 0], novelty

    @property
    def novelty_threshold(self) -> float | None:
        """The guard's distance threshold, or None for detectors without a guard."""
        guard = getattr(self.net, "novelty", None)
        return None if guard is None else float(guard.threshold)

    def is_novel(self, novelty: float | None) -> bool:
        """Whether a guard distance is past the threshold (the input is unlike the training data)."""
        t = self.novelty_threshold
        return novelty is not None and t is not None and not novelty <= t

    def calibrated_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the stored Platt scaling (identity when there is none)."""
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

    def verdict(self, score: float, novelty: float | None = None) -> str:
        """ "fake", "real" or "uncertain" for a P(fake) score, using the stored threshold and band.

        An input the out-of-depth guard flags (``novelty`` past its threshold) is "uncertain"
        whatever its score.
        """
        if not math.isfinite(score) or self.is_novel(novelty):
            return "uncertain"
        t, band = self.spec.threshold, self.spec.uncertain_band
        if abs(score - t) < band:
            return "uncertain"
        return "fake" if score >= t else "real"


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


INPUT_FILTERS = ("npr",)


def make_input_filter(name: str | None) -> nn.Module:
    """The fixed input filter named in a spec (identity for None)."""
    if name is None:
        return nn.Identity()
    if name == "npr":
        return NPR()
    raise ValueError(f"unknown input filter {name!r}; choose from {INPUT_FILTERS}")
