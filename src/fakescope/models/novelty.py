"""Out-of-depth guard: how far an input lies from the images a detector was trained on.

A detector asked about a picture unlike anything it learnt from (a star field, a screenshot of
text, a flat colour, a micrograph) still returns a confident number. The guard keeps a bank of
training embeddings (L2-normalised) and measures the cosine distance from an input to its k-th
nearest neighbour there (Sun et al., "Out-of-distribution detection with deep nearest
neighbors", ICML 2022). The threshold is a high quantile of the same distance for the training
images themselves, each left out of its own neighbourhood, so about ``1 - quantile`` of
in-distribution images are flagged. Inputs past it get the verdict "uncertain" with the reason
:data:`REASON`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REASON = "unlike the training data"
DEFAULT_K = 5
DEFAULT_QUANTILE = 0.995
MAX_BANK = 2000


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True, dtype=np.float32))
    return x / np.maximum(norm, np.float32(1e-12))


def _kth_largest(sims: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th largest value of each row (``k`` clipped to the row length)."""
    k = min(int(k), sims.shape[1])
    return -np.partition(-sims, k - 1, axis=1)[:, k - 1]


class KnnNovelty:
    """Cosine distance to the k-th nearest training embedding, with a stored threshold.

    The bank (float16, L2-normalised rows) travels in the checkpoint's tensors as
    ``novelty.bank``; ``k``, the threshold and the slice of the embedding it looks at (``dims``,
    e.g. the early transformer blocks of a layers probe, whose low-level statistics set star
    fields and flat colours apart) are in the spec (see :meth:`config`).
    """

    def __init__(
        self,
        n: int,
        dim: int,
        k: int = DEFAULT_K,
        threshold: float = float("inf"),
        dims: tuple[int, int] | None = None,
    ) -> None:
        self.bank = np.zeros((int(n), int(dim)), dtype=np.float16)
        self.k = int(k)
        self.threshold = float(threshold)
        self.dims = None if dims is None else (int(dims[0]), int(dims[1]))

    def view(self, feats: np.ndarray) -> np.ndarray:
        """The slice of the embedding the guard looks at (``dims``; all of it when None)."""
        return feats if self.dims is None else feats[:, self.dims[0] : self.dims[1]]

    def distances(self, feats: np.ndarray) -> np.ndarray:
        """``1 - cos`` to the k-th nearest bank row, float32 ``[B]``."""
        sims = _unit(self.view(np.asarray(feats))) @ self.bank.astype(np.float32).T
        return (1.0 - _kth_largest(sims, self.k)).astype(np.float32)

    __call__ = distances

    def config(self) -> dict[str, Any]:
        """What :func:`build_novelty` needs besides the bank tensor."""
        n, dim = self.bank.shape
        out = {"n": int(n), "dim": int(dim), "k": self.k, "threshold": self.threshold}
        if self.dims is not None:
            out["dims"] = list(self.dims)
        return out


def build_novelty(config: dict[str, Any] | None) -> KnnNovelty | None:
    """An empty guard of the stored shape (its bank is then loaded from the checkpoint)."""
    if not config:
        return None
    dims = config.get("dims")
    return KnnNovelty(
        config["n"],
        config["dim"],
        config["k"],
        config["threshold"],
        None if dims is None else tuple(dims),
    )


def fit_novelty(
    feats: np.ndarray,
    k: int = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    max_bank: int = MAX_BANK,
    seed: int = 0,
    dims: tuple[int, int] | None = None,
) -> KnnNovelty:
    """Fit the guard on training embeddings ``[N, D]`` (columns ``dims[0]:dims[1]`` if given).

    The bank is at most ``max_bank`` rows (a seeded sample). The threshold is the ``quantile`` of
    every training image's distance to its k-th nearest bank row, the image itself excluded.

    Raises:
        ValueError: fewer than ``k + 1`` finite rows.
    """
    x = np.asarray(feats, dtype=np.float32)
    x = x[np.isfinite(x).all(axis=1)]
    if dims is not None:
        x = x[:, dims[0] : dims[1]]
    if len(x) < k + 1:
        raise ValueError(f"the novelty guard needs at least {k + 1} training embeddings")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(x))[:max_bank])
    guard = KnnNovelty(len(pick), x.shape[1], k, dims=dims)
    guard.bank = _unit(x[pick]).astype(np.float16)
    sims = _unit(x) @ guard.bank.astype(np.float32).T
    sims[pick, np.arange(len(pick))] = -2.0  # leave each bank row out
    guard.threshold = float(np.quantile(1.0 - _kth_largest(sims, k), quantile))
    return guard
