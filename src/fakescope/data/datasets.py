"""Torch datasets over a manifest: decode in workers, never let one bad file stop a batch."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from fakescope.data.images import DEFAULT_MAX_PIXELS, decode_item


class ImageDataset(Dataset):
    """Rows of a manifest as ``(tensor, label, index)``; load failures come back as data, not raised.

    Args:
        paths: image files.
        labels: 0 real / 1 fake per file (-1 when unknown).
        transform: PIL image → tensor.
        max_pixels: decompression-bomb limit passed to :func:`load_image`.
        perturb: applied to each decoded image before ``transform`` (robustness), or None.
        seed: when set, the random parts of ``transform`` (crops, flips, blur, JPEG) draw from
            generators seeded by ``(seed, index)``, so an item's augmentation is the same whichever
            process, worker or rank loads it (the global random state is left as it was).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int | None = None,
        perturb: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.perturb = perturb
        self.seed = seed
        self.labels = np.asarray(
            labels if labels is not None else [-1] * len(self.paths), dtype=np.int64
        )
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        with _item_random_state(self.seed, i):
            d = decode_item(self.paths[i], self.transform, self.max_pixels, self.perturb)
        return {"idx": i, "y": int(self.labels[i]), "x": d.x, "error": d.error}


@contextlib.contextmanager
def _item_random_state(seed: int | None, index: int) -> Iterator[None]:
    """Seed torch's CPU generator and Python's ``random`` from ``(seed, index)``, then restore both."""
    if seed is None:
        yield
        return
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(state[0] >> np.uint64(1)))
        random.seed(int(state[1]))
        try:
            yield
        finally:
            random.setstate(py_state)


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


class ShardedBatchSampler(Sampler[list[int]]):
    """Rank ``rank``'s share of each global batch, so ``world_size`` ranks see one run's batches.

    The global batches are exactly those of ``DataLoader(shuffle=..., batch_size=batch_size,
    generator=generator)`` on one process: the same :class:`RandomSampler` draws from the same
    generator (which the DataLoader also passes as its own, so the draws happen in the same order).
    Rank ``r`` gets the contiguous slice ``[r*b//W, (r+1)*b//W)`` of every global batch of ``b``
    items, so the union of the ranks' local batches is the one-process batch, item for item. A
    final partial batch is split as evenly as it goes (a rank may get an empty list).

    Args:
        dataset: the dataset (only its length is used).
        batch_size: the global batch size (over all ranks).
        rank: this process's rank.
        world_size: number of ranks.
        shuffle: shuffle with ``generator`` (else sequential order).
        generator: the torch generator that drives the shuffle.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rank: int,
        world_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        base: Sampler[int] = (
            RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        )
        self.batches = BatchSampler(base, batch_size, drop_last=False)
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        for batch in self.batches:
            b = len(batch)
            yield batch[self.rank * b // self.world_size : (self.rank + 1) * b // self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(
    df: pd.DataFrame,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rank: int = 0,
    world_size: int = 1,
    perturb: Callable[[Image.Image], Image.Image] | None = None,
) -> DataLoader:
    """A DataLoader over a manifest frame (``path`` and optional ``label`` columns).

    A shuffling (training) loader over several ranks also seeds each item's random transform from
    ``(seed, index)`` (see :class:`ImageDataset`), so an item's augmentation is the same whatever
    the number of ranks and workers, and ranks do not repeat each other's random draws. One
    process keeps the global random stream, as it always has.

    With ``world_size`` > 1 it reads this rank's share: for training (``shuffle``) a
    :class:`ShardedBatchSampler` (rank parts of the one-process batches; ``batch_size`` is the
    global batch), otherwise a non-shuffling :class:`DistributedSampler` (which pads the last round
    with repeats: de-duplicate by ``idx``) with ``batch_size // world_size`` per rank.
    """
    labels = df["label"].tolist() if "label" in df.columns else None
    ds = ImageDataset(
        df["path"].tolist(),
        labels,
        transform,
        max_pixels=max_pixels,
        seed=seed if shuffle and world_size > 1 else None,
        perturb=perturb,
    )
    gen = torch.Generator().manual_seed(seed)
    common: dict[str, Any] = {
        "num_workers": workers,
        "collate_fn": collate_skip,
        "generator": gen,
        "persistent_workers": False,
        "worker_init_fn": _worker_init,
    }
    if world_size <= 1:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, **common)
    if shuffle:
        sampler = ShardedBatchSampler(ds, batch_size, rank, world_size, True, gen)
        return DataLoader(ds, batch_sampler=sampler, **common)
    shard = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(ds, batch_size=max(1, batch_size // world_size), sampler=shard, **common)


def _worker_init(worker_id: int) -> None:
    # Each worker decodes images; one intra-op thread each avoids oversubscribing small machines.
    torch.set_num_threads(1)
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    import random

    random.seed(seed)
