"""The one scoring engine for labelled data: rows of a manifest in, raw logits (and scores) out.

``evaluate``, ``robustness``, ``crossval``, ``loso``, the protocol, fusion fitting and the
training run's calibration all score through :func:`raw_logits` (or :func:`score_frame`, its
labelled-table face). Files are decoded by the one item decoder
(:func:`fakescope.data.images.decode_item`), inside a DataLoader; a perturbation (robustness)
plugs into that decoder. How a detector is scored follows from what it is made of
(:class:`~fakescope.models.detector.Detector`), never from its family's name:

* a combination scores each member here and combines their calibrated logits;
* a detector with a cacheable embedding stage reads and fills the embedding cache (clean images
  only: perturbed images are never mixed into the cache);
* anything else runs batches of preprocessed tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fakescope.data.datasets import make_loader
from fakescope.data.images import DEFAULT_MAX_PIXELS
from fakescope.data.transforms import eval_transform
from fakescope.models.detector import Detector
from fakescope.utils import autocast_dtype, is_interactive, resolve_device

#: Row positions scored, their raw logits, and ``(row position, reason)`` for rows that failed.
Logits = tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]
Perturbation = Callable[[Image.Image], Image.Image]


@dataclass
class Scores:
    """Raw logits and labels per manifest row index, from :func:`score_loader`."""

    idx: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    failures: list[tuple[int, str]] = field(default_factory=list)

    def loss_and_acc(self) -> tuple[float, float]:
        """Binary cross-entropy and accuracy at logit 0 (uncalibrated), over labelled rows."""
        if len(self.logits) == 0:
            return float("nan"), float("nan")
        logits = torch.from_numpy(self.logits.astype(np.float32))
        labels = torch.from_numpy(self.labels.astype(np.float32))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
        acc = float(((self.logits >= 0).astype(int) == self.labels).mean())
        return loss, acc


@torch.no_grad()
def score_loader(
    model: nn.Module | Detector,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "score",
) -> Scores:
    """Raw logits for every loadable image in ``loader`` (in loader order).

    ``model`` is a tensor-scoring detector, or one wrapped in ``DistributedDataParallel`` (the
    training run's validation pass calls it through the wrapper, which keeps the ranks' buffers
    in step). A detector that is not a torch module (a probe, an exported ONNX file) scores the
    batch as a numpy array with :meth:`~fakescope.models.detector.Detector.tensor_logits`.
    """
    model.eval()
    torch_module = isinstance(model, nn.Module)
    idx, logits, labels, failures = [], [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        failures += batch["failures"]
        if batch["x"].numel() == 0:
            continue
        ctx = (
            torch.autocast(device_type=device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        if torch_module:
            with ctx:
                out = model(batch["x"].to(device, non_blocking=True)).float().cpu().numpy()
        else:
            out = model.tensor_logits(batch["x"].numpy())[0]
        logits.append(out)
        idx.append(batch["idx"].numpy())
        labels.append(batch["y"].numpy().astype(np.int64))
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt)  # noqa: E731
    return Scores(cat(idx, np.int64), cat(logits, np.float32), cat(labels, np.int64), failures)


def raw_logits(
    detector: Detector,
    df: pd.DataFrame,
    perturb: Perturbation | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "cpu",
    amp: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: str | Path | None = None,
) -> Logits:
    """Uncalibrated logits of any detector on the rows of ``df`` (positions 0..n-1).

    Args:
        detector: any detector.
        df: rows with ``path`` (and ``label``, unused here).
        perturb: applied to each decoded image before the detector's preprocessing (None: clean).
        batch_size: images per model call.
        workers: decoding processes.
        device: torch device.
        amp: mixed precision for torch networks (see :func:`fakescope.utils.autocast_dtype`).
        max_pixels: decompression-bomb limit.
        cache_dir: the embedding cache for detectors with a cacheable stage (default
            ``$FAKESCOPE_CACHE/embeddings``).

    Returns:
        ``(row positions scored, logits, failures)``, positions ascending.
    """
    df = df.reset_index(drop=True)
    kw = {
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "amp": amp,
        "max_pixels": max_pixels,
        "cache_dir": cache_dir,
    }
    if detector.members:
        ok, z, failures = member_logits(detector.members, df, perturb, **kw)
        return ok, detector.combine(z), failures
    if perturb is None and detector.embedder is not None:
        return _embedded_logits(detector, df, workers, cache_dir)
    return _tensor_logits(detector, df, perturb, kw)


def member_logits(
    members: Sequence[Detector], df: pd.DataFrame, perturb: Perturbation | None = None, **kw: Any
) -> Logits:
    """Calibrated logits of every member ``[rows, members]`` for the rows all members scored."""
    cols, failures, keep = [], {}, set(range(len(df)))
    for m in members:
        idx, logits, fails = raw_logits(m, df, perturb, **kw)
        failures.update(dict(fails))
        cols.append(pd.Series(m.calibrated(logits), index=idx))
        keep &= set(idx.tolist())
    ok = np.array(sorted(keep), dtype=np.int64)
    z = (
        np.stack([c.reindex(ok).to_numpy() for c in cols], axis=1)
        if len(ok)
        else np.zeros((0, len(cols)))
    )
    return ok, z.astype(np.float32), sorted(failures.items())


def _tensor_logits(
    detector: Detector, df: pd.DataFrame, perturb: Perturbation | None, kw: dict[str, Any]
) -> Logits:
    dev = kw["device"]
    device = dev if isinstance(dev, torch.device) else resolve_device(str(dev))
    detector = detector.to(device)
    loader = make_loader(
        df,
        eval_transform(detector.spec.preprocessing),
        kw["batch_size"],
        workers=kw["workers"],
        max_pixels=kw["max_pixels"],
        perturb=perturb,
    )
    amp = autocast_dtype(device, kw["amp"]) if detector.torch_network else None
    s = score_loader(detector, loader, device, amp, progress=is_interactive())
    order = np.argsort(s.idx, kind="stable")
    return s.idx[order], s.logits[order].astype(np.float32), s.failures


def _embedded_logits(
    detector: Detector, df: pd.DataFrame, workers: int, cache_dir: str | Path | None
) -> Logits:
    from fakescope.embed.cache import EmbeddingCache, default_cache_dir, embed_frame

    embedder = detector.embedder
    with EmbeddingCache(cache_dir or default_cache_dir(), embedder.cache_id) as cache:
        x, failures = embed_frame(
            embedder, df, cache=cache, workers=workers, progress=is_interactive()
        )
    ok = np.flatnonzero(~np.isnan(x).any(axis=1)) if x.shape[1] else np.zeros(0, dtype=np.int64)
    return ok, detector.head_logits(x[ok]), failures


def score_frame(
    detector: Detector,
    df: pd.DataFrame,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "cpu",
    amp: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: str | Path | None = None,
    perturb: Perturbation | None = None,
) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Add ``logit``, ``score`` (calibrated P(fake)) and ``pred`` columns for every loadable row.

    Returns:
        The scored rows (manifest order, ``df``'s index) and the ``(row position, reason)`` of
        rows that failed.
    """
    idx, logits, failures = raw_logits(
        detector, df, perturb, batch_size, workers, device, amp, max_pixels, cache_dir
    )
    out = df.iloc[idx].copy()
    out["logit"] = logits
    out["score"] = detector.probabilities(logits)
    out["pred"] = (out["score"] >= detector.spec.threshold).astype(int)
    return out.sort_index(), failures
