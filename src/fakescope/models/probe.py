"""Probe detectors: a linear head on embeddings from a frozen backbone (UnivFD, Ojha et al. 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fakescope.models.detector import Detector, DetectorSpec
from fakescope.models.novelty import build_novelty


class TowerDeltas:
    """A tuned tower's low-rank weight deltas (``B @ A`` per matrix), saved and loaded with the
    detector (:mod:`fakescope.embed.deltas` applies them to the tower).

    Args:
        shapes: timm module name -> ``[rank, in, out]``.
    """

    def __init__(self, shapes: dict[str, list[int]]) -> None:
        self.keys = sorted(shapes)
        self.tensors: dict[str, np.ndarray] = {}
        for i, key in enumerate(self.keys):
            k, n_in, n_out = (int(v) for v in shapes[key])
            self.tensors[f"A{i}"] = np.zeros((k, n_in), dtype=np.float32)
            self.tensors[f"B{i}"] = np.zeros((n_out, k), dtype=np.float32)

    def set(self, deltas: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Install trained deltas (same keys and shapes)."""
        for i, key in enumerate(self.keys):
            a, b = deltas[key]
            _copy_into(self.tensors[f"A{i}"], a, f"deltas.A{i}")
            _copy_into(self.tensors[f"B{i}"], b, f"deltas.B{i}")

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The deltas as float32 numpy pairs ``(A, B)``."""
        return {
            key: (self.tensors[f"A{i}"], self.tensors[f"B{i}"]) for i, key in enumerate(self.keys)
        }


def _copy_into(dst: np.ndarray, src: Any, name: str) -> None:
    """Copy ``src`` into ``dst`` in place, as float32 of the same shape."""
    arr = np.asarray(src, dtype=np.float32)
    if arr.shape != dst.shape:
        raise ValueError(f"{name}: shape {tuple(arr.shape)} does not fit {tuple(dst.shape)}")
    dst[...] = arr


def delta_shapes(deltas: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, list[int]]:
    """``[rank, in, out]`` of each delta, as a tuned probe's spec stores them."""
    return {k: [int(a.shape[0]), int(a.shape[1]), int(b.shape[0])] for k, (a, b) in deltas.items()}


class ProbeNet:
    """Frozen backbone → (L2-normalise) → standardise → linear head with one logit, in numpy.

    The backbone (ONNX session or frozen timm network) is not stored: its weights live in their
    own file and are referenced by path and sha256, so checkpoints hold only the head (kilobytes)
    and, when fitted, the out-of-depth guard's bank of training embeddings.

    A *tuned* probe's tower differs from the file by low-rank deltas (Effort or LoRA, see
    :mod:`fakescope.models.adapters`), held in :attr:`deltas` and saved with the head. Its
    backbone is then opened on first use, once the deltas are loaded, by ``open_backbone``.

    Its tensors (:meth:`state_dict`) keep the names of the torch module it once was
    (``mean``, ``scale``, ``head.weight``, ``head.bias``, ``novelty.bank``, ``deltas.A0``...), so
    every probe file ever written still loads.

    Args:
        backbone: the frozen feature extractor (None for a tuned probe: see ``open_backbone``).
        dim: embedding size.
        l2: L2-normalise embeddings before the head (UnivFD's set-up for CLIP).
        novelty: the guard's stored config (see :mod:`fakescope.models.novelty`), or None.
        deltas: a tuned tower's delta shapes (:func:`delta_shapes`), or None.
        open_backbone: for a tuned probe, opens the backbone given the deltas.
    """

    def __init__(
        self,
        backbone: Any,
        dim: int,
        l2: bool = False,
        novelty: dict[str, Any] | None = None,
        deltas: dict[str, list[int]] | None = None,
        open_backbone: Any = None,
    ) -> None:
        self._backbone = backbone
        self._open_backbone = open_backbone
        self.l2 = bool(l2)
        self.mean = np.zeros(dim, dtype=np.float32)
        self.scale = np.ones(dim, dtype=np.float32)
        self.weight = np.zeros(dim, dtype=np.float32)
        self.bias = np.zeros(1, dtype=np.float32)
        self.novelty = build_novelty(novelty)
        self.deltas = TowerDeltas(deltas) if deltas else None

    @property
    def backbone(self) -> Any:
        """The frozen feature extractor (a tuned one is opened here, with its deltas)."""
        if self._backbone is None:
            if self._open_backbone is None or self.deltas is None:
                raise RuntimeError("this probe has no backbone")
            self._backbone = self._open_backbone(self.deltas.arrays())
        return self._backbone

    # ------------------------------------------------------------------ tensors in and out
    def _slots(self) -> dict[str, np.ndarray]:
        slots = {"mean": self.mean, "scale": self.scale, "head.bias": self.bias}
        if self.novelty is not None:
            slots["novelty.bank"] = self.novelty.bank
        if self.deltas is not None:
            slots.update({f"deltas.{k}": v for k, v in self.deltas.tensors.items()})
        return slots

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every stored array by name (the head's weight as ``[1, dim]``)."""
        out = {k: v.copy() for k, v in self._slots().items()}
        out["head.weight"] = self.weight.reshape(1, -1).copy()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Load arrays by name; returns ``(missing, unexpected)`` names (nothing is loaded then).

        Raises:
            ValueError: an array whose shape does not fit.
        """
        slots = self._slots()
        expected = set(slots) | {"head.weight"}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            return missing, unexpected
        for name, dst in slots.items():
            _copy_into(dst, state[name], name)
        _copy_into(self.weight, np.asarray(state["head.weight"]).reshape(-1), "head.weight")
        if self.deltas is not None and self._open_backbone is not None:
            self._backbone = None  # reopened with the loaded deltas on first use
        if self.novelty is not None:
            self.novelty.bank = np.asarray(state["novelty.bank"], dtype=np.float16)
        return [], []

    # ------------------------------------------------------------------------------ scoring
    def embed(self, x: np.ndarray) -> np.ndarray:
        """Backbone embeddings of a preprocessed batch, float32 ``[B, dim]``."""
        return np.ascontiguousarray(self.backbone.embed(x), dtype=np.float32)

    def head_logits(self, feats: np.ndarray) -> np.ndarray:
        """Logits from embeddings, shape ``[B]``.

        A row-wise product and sum rather than a GEMM: a GEMM's summation order depends on the
        batch size, and an image's score must not depend on its batch mates, even in the 7th digit.
        """
        feats = np.asarray(feats, dtype=np.float32)
        if self.l2:
            norm = np.sqrt((feats * feats).sum(axis=1, dtype=np.float32))[:, None]
            feats = feats / np.maximum(norm, np.float32(1e-12))
        z = (feats - self.mean) / self.scale
        return (z * self.weight).sum(axis=1, dtype=np.float32) + self.bias[0]

    def logits_and_novelty(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits ``[B]`` and the guard's distances ``[B]`` (None without a guard), one pass."""
        feats = self.embed(x)
        novelty = self.novelty.distances(feats) if self.novelty is not None else None
        return self.head_logits(feats), novelty

    def set_head(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, bias: float) -> None:
        """Install a head fitted elsewhere (e.g. scikit-learn's logistic regression)."""
        _copy_into(self.mean, mean, "mean")
        _copy_into(self.scale, scale, "scale")
        _copy_into(self.weight, np.asarray(coef).reshape(-1), "head.weight")
        self.bias[0] = np.float32(bias)


def probe_arch(backbone_spec: dict[str, Any]) -> str:
    """A readable architecture name, e.g. ``probe:clip_vit_b16_openai_visual.int8.onnx/embed``."""
    name = backbone_spec.get("name") or Path(str(backbone_spec.get("path", "?"))).name
    return f"probe:{name}/{backbone_spec.get('pool', 'embed')}"


def create_probe_detector(
    backbone: Any, dim: int, l2: bool = False, tuning: dict[str, Any] | None = None
) -> Detector:
    """An untrained probe detector on ``backbone`` (the head is fitted by ``train.probe``).

    ``tuning`` (``method``, ``rank``, ``deltas`` as ``{name: (A, B)}``) makes it a tuned probe:
    the backbone must have been opened with the same deltas.
    """
    kwargs: dict[str, Any] = {"backbone": backbone.spec(), "dim": int(dim), "l2": bool(l2)}
    shapes = None
    arch = probe_arch(backbone.spec()) + ("+l2" if l2 else "")
    if tuning:
        shapes = delta_shapes(tuning["deltas"])
        kwargs["tuning"] = {
            "method": str(tuning["method"]),
            "rank": int(tuning["rank"]),
            "deltas": shapes,
        }
        arch += f"+{tuning['method']}"
    spec = DetectorSpec(
        kind="probe", arch=arch, model_kwargs=kwargs, preprocessing=backbone.preprocessing
    )
    net = ProbeNet(backbone, dim, l2=l2, deltas=shapes)
    if tuning:
        net.deltas.set(tuning["deltas"])
    return Detector(net, spec)


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


def backbone_file(backbone: dict[str, Any], backbone_path: str | None = None) -> str | None:
    """Where a probe's frozen backbone file is on this machine: ``backbone_path`` when given, else
    the stored file found (or fetched) by :func:`fakescope.embed.fetch.ensure_file`. None for a
    timm backbone built by name without a weights file.

    Raises:
        FileNotFoundError: the file is nowhere here and cannot be fetched; the message names the
            file, its sha256 and where to put it.
    """
    from fakescope.embed.fetch import ensure_file

    if backbone_path is not None:
        return backbone_path
    stored = backbone.get("path") if backbone.get("type") == "onnx" else backbone.get("weights")
    if not stored:
        return None
    return str(ensure_file(str(stored), backbone.get("sha256"), backbone.get("type") == "onnx"))


def build_probe_from_spec(spec: DetectorSpec, backbone_path: str | None = None) -> Detector:
    """Rebuild a probe detector's shape from its spec, reopening the referenced backbone.

    The backbone file is ``backbone_path`` when given (opening a detector finds it once, in
    :func:`fakescope.infer.backends.resolve`), else found now by :func:`backbone_file`. A tuned
    probe's backbone is opened once its deltas are loaded (:attr:`ProbeNet.backbone`).
    """
    from fakescope.embed.backbones import open_backbone

    kw = spec.model_kwargs
    bb = kw["backbone"]
    where = backbone_file(bb, backbone_path)
    tuning = kw.get("tuning")
    novelty = kw.get("novelty")
    if not tuning:
        backbone = open_backbone(bb, path=where)
        net = ProbeNet(backbone, int(kw["dim"]), l2=bool(kw.get("l2")), novelty=novelty)
        return Detector(net, spec)

    def reopen(deltas: dict[str, tuple[np.ndarray, np.ndarray]]) -> Any:
        return open_backbone(bb, path=where, deltas=deltas)

    net = ProbeNet(
        None,
        int(kw["dim"]),
        l2=bool(kw.get("l2")),
        novelty=novelty,
        deltas=tuning["deltas"],
        open_backbone=reopen,
    )
    return Detector(net, spec)
