"""Torch datasets over a manifest: decode in workers, never let one bad file stop a batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fakescope.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, check_dimensions, load_image


class ImageDataset(Dataset):
    """Rows of a manifest as ``(tensor, label, index)``; load failures come back as data, not raised.

    Args:
        paths: image files.
        labels: 0 real / 1 fake per file (-1 when unknown).
        transform: PIL image → tensor.
        max_pixels: decompression-bomb limit passed to :func:`load_image`.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(
            labels if labels is not None else [-1] * len(self.paths), dtype=np.int64
        )
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"idx": i, "y": int(self.labels[i]), "x": None, "error": None}
        try:
            img = load_image(self.paths[i], max_pixels=self.max_pixels)
            check_dimensions(img, self.paths[i])
            item["x"] = self.transform(img)
        except ImageLoadError as e:
            item["error"] = e.reason
        except Exception as e:  # a transform failure on odd input must not stop the batch
            item["error"] = f"could not preprocess: {type(e).__name__}: {e}"
        return item


def collate_skip(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good items; report the failed ones as ``failures = [(idx, reason), ...]``."""
    good = [b for b in batch if b["error"] is None]
    failures = [(b["idx"], b["error"]) for b in batch if b["error"] is not None]
    x = torch.stack([b["x"] for b in good]) if good else torch.empty(0)
    return {
        "x": x,
        "y": torch.tensor([b["y"] for b in good], dtype=torch.float32),
        "idx": torch.tensor([b["idx"] for b in good], dtype=torch.long),
        "failures": failures,
    }


def make_loader(
    df: pd.DataFrame,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DataLoader:
    """A DataLoader over a manifest frame (``path`` and optional ``label`` columns)."""
    labels = df["label"].tolist() if "label" in df.columns else None
    ds = ImageDataset(df["path"].tolist(), labels, transform, max_pixels=max_pixels)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_skip,
        generator=gen,
        persistent_workers=False,
        worker_init_fn=_worker_init,
    )


def _worker_init(worker_id: int) -> None:
    # Each worker decodes images; one intra-op thread each avoids oversubscribing small machines.
    torch.set_num_threads(1)
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    import random

    random.seed(seed)
