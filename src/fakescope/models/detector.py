"""One detector interface: whatever the family, images in, one logit (and a verdict) each out.

Every scorer in fakescope calls :meth:`Detector.image_logits` (RGB images) or, on the fast path,
:meth:`Detector.tensor_logits` (a batch already preprocessed with the detector's own
:class:`~fakescope.data.transforms.Preprocessing`). What a family is made of is declared here, in
a few properties, so that no caller needs to know the family's name:

* :attr:`Detector.members`: the detectors a combination (fusion) is made of; such a detector
  scores images, not one tensor, because each member preprocesses in its own way;
* :attr:`Detector.embedder`: a frozen embedding stage whose outputs may be cached (probes), with
  :meth:`Detector.head_logits` to finish from cached embeddings;
* :attr:`Detector.torch_network`: the whole detector is one torch network (a fine-tuned timm
  model): it runs under autocast, exports to ONNX and has layers for Grad-CAM. Such a detector
  is a :class:`~fakescope.models.torch_detector.TorchDetector` (it needs the ``train`` extra);
  every other family (probes on an ONNX tower, fusions, exported ``.onnx`` files) is a plain
  :class:`Detector` whose parts are numpy and onnxruntime, so scoring needs no torch.

Score convention (everywhere in fakescope): label 1 = fake, and ``score = P(fake)`` in [0, 1],
obtained as ``sigmoid(a * logit + b)`` where ``a, b`` come from the stored calibration (1, 0 if none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fakescope.data.transforms import EvalTransform, Preprocessing

#: Raw logits ``[B]`` and the out-of-depth guard's distances ``[B]`` (None without a guard).
LogitsAndNovelty = tuple[np.ndarray, np.ndarray | None]

CLASSES = ("real", "fake")

#: The verdict of a file whose metadata declares it AI-generated (whatever its pixel score).
DECLARED = "fake (declared)"
DECLARED_REASON = "its metadata declares it AI-generated"


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


class Detector:
    """A network with one output logit per image, plus the spec that describes it.

    ``net`` scores a preprocessed float32 batch ``[B, 3, H, W]`` with
    ``net.logits_and_novelty(x) -> (logits [B], guard distances [B] or None)`` (numpy arrays), or
    is a combination (:attr:`members`). Torch networks are wrapped by
    :class:`~fakescope.models.torch_detector.TorchDetector` instead, which keeps this interface.
    """

    def __init__(self, net: Any, spec: DetectorSpec) -> None:
        self.net = net
        self.spec = spec
        self.meta: dict[str, Any] = {}
        #: What it was opened as (a file, or ``builtin:NAME``); None when made in memory.
        self.source: str | None = None
        #: The file it was loaded from (a built-in's file in the package); None in memory.
        self.file: Path | None = None
        #: Data stored beside the network in its file (names that start with ``__``, such as
        #: :mod:`fakescope.train.adapt`'s reference rows).
        self.extra_tensors: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------------ its name
    @property
    def display_name(self) -> str:
        """What people call this detector: ``builtin:NAME``, the name of the file it was opened
        from, or (made in memory) its architecture, ``spec.arch``, which stays the technical
        description whatever the name. An adapted detector says so:
        ``mine.safetensors (adapted from builtin:clip-layers)``."""
        from fakescope.zoo import display_name

        name = display_name(self.source) if self.source else self.spec.arch
        adapted = self.meta.get("adapted") if isinstance(self.meta, dict) else None
        if isinstance(adapted, dict) and adapted.get("parent"):
            name += f" (adapted from {adapted['parent']})"
        return name

    @property
    def description(self) -> str | None:
        """What a built-in detector is, or how an adapted one was made, in words (None for
        other detectors)."""
        from fakescope.zoo import describe

        adapted = self.meta.get("adapted") if isinstance(self.meta, dict) else None
        if isinstance(adapted, dict):
            ex, cv = adapted.get("examples") or {}, adapted.get("cv") or {}
            text = (
                f"adapted from {adapted.get('parent')} with {ex.get('fake')} fake and "
                f"{ex.get('real')} real examples (fakescope adapt)"
            )
            if cv.get("before") is not None and cv.get("after") is not None:
                text += f"; AUC on them, cross-validated: {cv['before']:.2f} to {cv['after']:.2f}"
            return text
        return describe(self.source) if self.source else None

    # ----------------------------------------------------------------------- what it is made of
    @property
    def members(self) -> Sequence[Detector]:
        """The detectors this one combines (a fusion); empty for a single detector."""
        return getattr(self.net, "members", ())

    @property
    def embedder(self) -> Any | None:
        """The frozen, cacheable embedding stage (a probe's backbone), or None.

        It has ``embed(batch)`` and a ``cache_id``; :meth:`head_logits` turns its embeddings into
        logits, so scoring a known file twice need not embed it twice.
        """
        return getattr(self.net, "backbone", None)

    @property
    def torch_network(self) -> bool:
        """Whether the detector is one torch network end to end (autocast, ONNX, Grad-CAM)."""
        return self.spec.kind == "timm"

    def set_member(self, i: int, member: Detector) -> None:
        """Replace member ``i`` of a combination (e.g. by its ONNX-backed version)."""
        self.net.members[i] = member

    def to(self, *args: Any, **kwargs: Any) -> Detector:
        """Move torch members (if any) like ``nn.Module.to``; numpy parts stay where they are."""
        for m in self.members:
            m.to(*args, **kwargs)
        return self

    def eval(self) -> Detector:
        """Evaluation mode for torch members (if any); numpy parts have no modes."""
        for m in self.members:
            m.eval()
        return self

    def load_tensors(self, state: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Load a checkpoint's arrays into the network; ``(missing, unexpected)`` names (nothing
        is loaded then).

        Raises:
            ValueError: an array whose shape does not fit.
        """
        return self.net.load_state_dict(state)

    # ----------------------------------------------------------------------- the guard
    @property
    def novelty_threshold(self) -> float | None:
        """The guard's distance threshold, or None for detectors without a guard."""
        guard = getattr(self.net, "novelty", None)
        return None if guard is None else float(guard.threshold)

    def is_novel(self, novelty: float | None) -> bool:
        """Whether a guard distance is past the threshold (the input is unlike the training data)."""
        t = self.novelty_threshold
        return novelty is not None and t is not None and not novelty <= t

    # ------------------------------------------------------------------------------- scoring
    def tensor_logits(self, x: Any, amp: Any = None) -> LogitsAndNovelty:
        """Raw logits and guard distances of a preprocessed batch, as float32 arrays.

        Args:
            x: ``[B, 3, H, W]`` float32, made with :class:`EvalTransform` of
                ``self.spec.preprocessing`` (a numpy array; torch tensors are accepted).
            amp: an autocast dtype, used by torch networks only (None: fp32).

        Raises:
            TypeError: for a combination, which scores images (:meth:`image_logits`).
        """
        if self.members:
            raise TypeError("a fusion detector scores images: use Detector.image_logits")
        arr = x if isinstance(x, np.ndarray) else x.detach().float().cpu().numpy()
        out, nov = self.net.logits_and_novelty(np.ascontiguousarray(arr, dtype=np.float32))
        novelty = None if nov is None else np.asarray(nov, dtype=np.float32)
        return np.asarray(out, dtype=np.float32).reshape(len(arr)), novelty

    def image_logits(
        self, images: Sequence[Image.Image], batch_size: int = 32, amp: Any = None
    ) -> LogitsAndNovelty:
        """Raw logits and guard distances of RGB images: the one scoring method of every family.

        A single detector preprocesses the images its own way and scores them ``batch_size`` at
        a time; a combination scores them with each member and combines the members' calibrated
        logits (:meth:`combine`).
        """
        if not images:
            return np.zeros(0, dtype=np.float32), None
        if self.members:
            z = np.stack(
                [m.calibrated(m.image_logits(images, batch_size, amp)[0]) for m in self.members],
                axis=1,
            )
            return self.combine(z), None
        tf = EvalTransform(self.spec.preprocessing)
        parts = [
            self.tensor_logits(np.stack([tf.array(im) for im in images[i : i + batch_size]]), amp)
            for i in range(0, len(images), max(1, batch_size))
        ]
        logits = np.concatenate([p[0] for p in parts])
        if parts[0][1] is None:
            return logits, None
        return logits, np.concatenate([p[1] for p in parts])

    def combine(self, z: np.ndarray) -> np.ndarray:
        """A combination's logit from its members' calibrated logits ``[rows, members]``."""
        return self.net.combine(np.asarray(z, dtype=np.float32)).astype(np.float32)

    def head_logits(self, feats: np.ndarray) -> np.ndarray:
        """Raw logits ``[B]`` from :attr:`embedder` embeddings ``[B, D]`` (cached or fresh)."""
        x = np.ascontiguousarray(feats, dtype=np.float32)
        return np.asarray(self.net.head_logits(x), dtype=np.float32).reshape(len(x))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits of raw ``logits`` (the stored Platt scaling; identity when none)."""
        z = np.asarray(logits, dtype=np.float32)
        cal = self.spec.calibration
        if not cal:
            return z
        return (z * np.float32(cal["a"]) + np.float32(cal["b"])).astype(np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) of raw ``logits``."""
        return sigmoid(self.calibrated(logits))

    def decide(
        self, score: float | None, novelty: float | None = None, declared: bool = False
    ) -> tuple[str, str | None]:
        """The one verdict rule: ``(verdict, reason)`` from the pixel score, the out-of-depth
        guard's distance and whether the file's metadata declares an AI origin.

        No score: ``"error"``. A declared origin: :data:`DECLARED`, whatever the score. Past the
        guard's threshold: ``"uncertain"``, because the input is unlike the training data.
        Otherwise :meth:`verdict`, with no reason.
        """
        from fakescope.models.novelty import REASON

        if score is None:
            return "error", None
        if declared:
            return DECLARED, DECLARED_REASON
        if self.is_novel(novelty):
            return "uncertain", REASON
        return self.verdict(float(score)), None  # the guard asked once, just above

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


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, float32, without overflow for large ``|z|``."""
    z = np.asarray(z, dtype=np.float32)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
