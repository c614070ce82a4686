"""Frozen timm networks as feature extractors (the ``train`` extra: torch and timm)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakescope.data.transforms import Preprocessing
from fakescope.embed.base import (
    _RANDOM_INIT_SEED,
    DEFAULT_MULTI_LAYERS,
    TIMM_POOLS,
    Backbone,
    _as_batch,
    _check_pool,
    _chunks,
    _pool_tokens,
)
from fakescope.utils import cpu_supports_bf16, file_digest

logger = logging.getLogger(__name__)


class TimmBackbone(Backbone):
    """A frozen timm network (no classifier) used as a feature extractor.

    Args:
        name: a timm model name.
        weights: a local weights file (safetensors or torch) loaded as timm's pretrained weights.
        pretrained: download timm's pretrained weights when no ``weights`` file is given. Without
            either, the network is randomly initialised (with a fixed seed, so it is repeatable).
        pool: one of :data:`TIMM_POOLS`; ``multi`` concatenates the pooled features of several
            intermediate layers.
        layers: for ``multi``, an int (the last N blocks, default 4) or a list of block indices.
        img_size: input size for models that take one (ViTs); None keeps the default.
        batch_size: preferred images per forward pass.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: an unknown model, or a pool the model cannot give.
    """

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool = False,
        pool: str = "embed",
        layers: int | Sequence[int] | None = None,
        img_size: int | None = None,
        batch_size: int = 32,
    ) -> None:
        _check_pool(pool, TIMM_POOLS, "timm")
        _check_timm_name(name)
        self.name = name
        self.weights = Path(weights).expanduser().resolve() if weights is not None else None
        if self.weights is not None and not self.weights.is_file():
            raise FileNotFoundError(f"weights file for {name} not found: {self.weights}")
        self.pretrained = bool(pretrained) or self.weights is not None
        self.pool = pool
        self.img_size = img_size
        self.batch_size = max(1, int(batch_size))
        self.sha256 = file_digest(self.weights) if self.weights is not None else None
        self.model = _create_timm(name, self.weights, self.pretrained, img_size)
        self.preprocessing = timm_preprocessing(self.model)
        self.layers = _resolve_layers(self.model, layers) if pool == "multi" else layers
        self.bf16 = cpu_supports_bf16()
        self._check_model_pool()

    def _check_model_pool(self) -> None:
        """Fail early, with a clear message, for pools this architecture cannot give."""
        if self.pool == "multi" and not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"{self.name} has no forward_intermediates; pool 'multi' needs it")
        if self.pool in ("cls", "cls_patch") and not self._is_token_model():
            raise ValueError(
                f"pool {self.pool!r} needs a ViT-like model with a CLS token; {self.name} "
                "gives a feature map (use 'embed', 'patch_mean' or 'multi')"
            )

    def _is_token_model(self) -> bool:
        """True for ViT-like models with a class token in ``forward_features``."""
        has_cls = getattr(self.model, "cls_token", None) is not None
        return has_cls and int(getattr(self.model, "num_prefix_tokens", 0)) > 0

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embed a normalised batch under ``no_grad`` (bf16 autocast where the CPU has it)."""
        arr = _as_batch(x)
        parts = [self._embed_chunk(torch.from_numpy(c)) for c in _chunks(arr, self.batch_size)]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CPUs with native bf16, else nothing."""
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _embed_chunk(self, x: torch.Tensor) -> np.ndarray:
        """One forward pass, pooled and returned as float32 numpy."""
        with torch.no_grad(), self._autocast():
            out = self._multi(x) if self.pool == "multi" else self._single(x)
        return out.float().reshape(out.shape[0], -1).numpy().astype(np.float32, copy=False)

    def _single(self, x: torch.Tensor) -> torch.Tensor:
        """The ``embed``, ``cls``, ``patch_mean`` and ``cls_patch`` pools."""
        feats = self.model.forward_features(x)
        if self.pool == "embed":
            return self.model.forward_head(feats, pre_logits=True)
        if feats.ndim == 3:
            prefix = int(getattr(self.model, "num_prefix_tokens", 0))
            pooled = _pool_tokens(feats.float().numpy(), self.pool, prefix, self.name)
            return torch.from_numpy(pooled)
        return _spatial_mean(feats, getattr(self.model, "output_fmt", "NCHW"))

    def _multi(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated pooled features of the chosen intermediate layers."""
        try:
            feats = self.model.forward_intermediates(
                x, indices=self.layers, intermediates_only=True
            )
        except (NotImplementedError, TypeError, AssertionError) as exc:
            raise ValueError(f"{self.name}: forward_intermediates failed: {exc}") from exc
        pooled = [f.mean(dim=1) if f.ndim == 3 else _spatial_mean(f, "NCHW") for f in feats]
        return torch.cat([p.float() for p in pooled], dim=1)

    def spec(self) -> dict[str, Any]:
        """Type, model name, weights path and sha256, pool, layers and preprocessing."""
        random_init = not self.pretrained
        return {
            "type": "timm",
            "name": self.name,
            "weights": str(self.weights) if self.weights is not None else None,
            "sha256": self.sha256,
            "pretrained": self.pretrained,
            "init_seed": _RANDOM_INIT_SEED if random_init else None,
            "pool": self.pool,
            "layers": list(self.layers) if isinstance(self.layers, Sequence) else self.layers,
            "img_size": self.img_size,
            "preprocessing": self.preprocessing.to_dict(),
            "batch_size": self.batch_size,
        }

    def identity(self) -> dict[str, Any]:
        """The spec's identity plus whether bf16 autocast is used (it changes the values)."""
        return {**super().identity(), "autocast": "bf16" if self.bf16 else None}


def _check_timm_name(name: str) -> None:
    """Raise a ValueError for a name timm does not know (hub names are left to timm)."""
    import timm

    if ":" not in name and not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}")


def _spatial_mean(feats: torch.Tensor, fmt: str) -> torch.Tensor:
    """Global average pool of a 4-D feature map in ``NCHW`` or ``NHWC`` layout."""
    if feats.ndim != 4:
        raise ValueError(f"expected a 4-D feature map, got shape {tuple(feats.shape)}")
    return feats.mean(dim=(1, 2)) if fmt == "NHWC" else feats.mean(dim=(2, 3))


def create_timm(
    name: str, weights: str | Path | None = None, pretrained: bool = False, **kwargs: Any
) -> torch.nn.Module:
    """``timm.create_model`` with the weights from a local file (timm's ``pretrained_cfg_overlay``)
    when one is given, from the hub when ``pretrained``, else randomly initialised. The one place
    fakescope builds a timm network (backbones here, fine-tuned detectors in
    :mod:`fakescope.models.registry`); callers turn failures into their own errors."""
    import timm

    if weights is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    else:
        kwargs.update(pretrained=pretrained, pretrained_cfg_overlay=None)
    return timm.create_model(name, **kwargs)


def timm_preprocessing(model: torch.nn.Module, size: int | None = None) -> Preprocessing:
    """A timm model's eval data config (``resolve_data_config``) as a :class:`Preprocessing`,
    at ``size`` when given."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(
        size=int(size or cfg["input_size"][-1]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        resize_mode="resize",
    )


def _create_timm(
    name: str, weights: Path | None, pretrained: bool, img_size: int | None
) -> torch.nn.Module:
    """Build a frozen, eval-mode timm model without a classifier."""
    kwargs: dict[str, Any] = {"num_classes": 0}
    if img_size is not None:
        kwargs["img_size"] = int(img_size)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_INIT_SEED)
            model = create_timm(name, weights, pretrained, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as exc:
        if pretrained and weights is None:
            raise RuntimeError(
                f"could not get pretrained weights for {name}: {exc}. Offline? Pass a local "
                f"file as '{name}:/path/to/weights.safetensors'"
            ) from exc
        raise
    model.eval()
    model.requires_grad_(False)
    return model


def _resolve_layers(model: torch.nn.Module, layers: int | Sequence[int] | None) -> int | list[int]:
    """``layers`` for ``forward_intermediates``: an int capped at the model's depth, or a list."""
    if layers is not None and not isinstance(layers, int):
        return [int(i) for i in layers]
    n = DEFAULT_MULTI_LAYERS if layers is None else int(layers)
    if n < 1:
        raise ValueError(f"layers must be at least 1, got {n}")
    depth = len(getattr(model, "feature_info", []) or [])
    return min(n, depth) if depth else n
