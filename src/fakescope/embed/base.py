"""The frozen feature extractor interface (:class:`Backbone`) and what its implementations
share: pools, batch checks and token pooling. ONNX towers are :mod:`fakescope.embed.backbones`;
timm networks (the ``train`` extra) are :mod:`fakescope.embed.timm_backbone`."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fakescope.data.transforms import Preprocessing

POOLS: tuple[str, ...] = ("embed", "cls", "patch_mean", "cls_patch")
TIMM_POOLS: tuple[str, ...] = (*POOLS, "multi")
ONNX_POOLS: tuple[str, ...] = (*POOLS, "layers", "tokens")
DEFAULT_MULTI_LAYERS = 4
_RANDOM_INIT_SEED = 0
# Spec keys that say where things live or how fast to run, not what the embedding is.
_NOT_IDENTITY = frozenset(
    {"path", "weights", "batch_size", "embed_output", "hidden_output", "layer_outputs"}
)


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


class Backbone(abc.ABC):
    """A frozen network mapping normalised image batches to one vector per image.

    Attributes:
        preprocessing: how a PIL image becomes this backbone's input (see ``eval_transform``).
        batch_size: preferred number of images per forward pass (1 for int8 ONNX models, whose
            activations are quantised per batch, so that results do not depend on batch mates).
        pool: which vector to return; one of :data:`POOLS` (timm backbones also allow ``multi``).
    """

    preprocessing: Preprocessing
    batch_size: int
    pool: str

    @abc.abstractmethod
    def embed(self, x: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            x: float32 ``[B, 3, H, W]``, already resized and normalised.

        Returns:
            float32 ``[B, D]``.
        """

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description that :func:`open_backbone` can reopen."""

    def identity(self) -> dict[str, Any]:
        """What determines the embedding values: the spec minus file locations and speed knobs."""
        return {k: v for k, v in self.spec().items() if k not in _NOT_IDENTITY}

    @property
    def cache_id(self) -> str:
        """A short stable hash of :meth:`identity`: moving the model file keeps it, while another
        model, pool or preprocessing changes it."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pool={getattr(self, 'pool', None)!r})"


def _as_batch(x: np.ndarray) -> np.ndarray:
    """Check and convert an input batch to contiguous float32 ``[B, 3, H, W]``."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected a float32 batch of shape [B, 3, H, W], got {arr.shape}")
    return arr


def _chunks(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of at most ``size`` rows."""
    step = max(1, int(size))
    for start in range(0, x.shape[0], step):
        yield x[start : start + step]


def _pool_tokens(tokens: np.ndarray, pool: str, num_prefix: int, source: str) -> np.ndarray:
    """Pool a ``[B, T, C]`` token array whose first ``num_prefix`` tokens are CLS and the like."""
    if tokens.ndim != 3:
        raise ValueError(f"{source}: expected hidden states [B, T, C], got shape {tokens.shape}")
    if pool in ("cls", "cls_patch") and num_prefix < 1:
        raise ValueError(f"{source}: pool {pool!r} needs a CLS token, and this model has none")
    if pool in ("patch_mean", "cls_patch") and tokens.shape[1] <= num_prefix:
        raise ValueError(f"{source}: no patch tokens after {num_prefix} prefix token(s)")
    if pool == "cls":
        return tokens[:, 0]
    patch_mean = tokens[:, num_prefix:].mean(axis=1)
    if pool == "patch_mean":
        return patch_mean
    return np.concatenate([tokens[:, 0], patch_mean], axis=1)


def _check_pool(pool: str, allowed: Sequence[str], kind: str) -> None:
    """Raise a ValueError naming the allowed pools."""
    if pool not in allowed:
        raise ValueError(
            f"unknown pool {pool!r} for {kind} backbones; choose from {tuple(allowed)}"
        )
