"""The inner training loop: one epoch, on one process or one rank of several (and gathering ranks' scores).

Scoring a loader is :func:`fakescope.eval.scoring.score_loader`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fakescope.eval.scoring import Scores


@dataclass
class EpochStats:
    """Mean loss and accuracy over the images a loop saw, plus the files that failed to load."""

    loss: float = float("nan")
    acc: float = float("nan")
    n: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _bar(loader: DataLoader, desc: str, enabled: bool) -> tqdm:
    return tqdm(loader, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def train_one_epoch(
    detector: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    lr_at: Callable[[int], float] | None = None,
    start_step: int = 0,
    progress: bool = False,
    desc: str = "train",
    world_size: int = 1,
) -> EpochStats:
    """Run one pass over ``loader``; ``lr_at(global_step)`` sets the learning rate per step.

    Args:
        detector: a :class:`Detector`, or one wrapped in ``DistributedDataParallel``.
        loader: batches from :func:`fakescope.data.datasets.collate_skip`.
        optimizer: steps once per batch.
        device: where the model is.
        amp_dtype: autocast dtype, or None for fp32.
        lr_at: learning rate per global step (None: leave it).
        start_step: global step of the first batch.
        progress: show a progress bar.
        desc: the bar's label.
        world_size: ranks taking part (>1: each rank holds its share of every global batch; the
            loss is weighted so DDP's gradient average is the mean over the global batch, and the
            returned stats are summed over ranks).
    """
    if world_size > 1:
        return _train_one_epoch_ddp(
            detector, loader, optimizer, device, amp_dtype, lr_at, start_step, progress, desc
        )
    detector.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total_loss, correct, n, failures = 0.0, 0, 0, []
    bar = _bar(loader, desc, progress)
    for step, batch in enumerate(bar, start=start_step):
        failures += batch["failures"]
        if batch["x"].numel() == 0:
            continue
        _set_lr(optimizer, lr_at, step)
        x, y = batch["x"].to(device, non_blocking=True), batch["y"].to(device)
        with _autocast(device, amp_dtype):
            logits = detector(x)
        loss = loss_fn(logits.float(), y)
        _check_finite(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int(((logits.detach() >= 0).float() == y).sum())
        n += len(y)
        bar.set_postfix(loss=f"{total_loss / n:.4f}", acc=f"{correct / n:.3f}")
    return EpochStats(loss=total_loss / max(n, 1), acc=correct / max(n, 1), n=n, failures=failures)


def _set_lr(optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float] | None, step: int):
    if lr_at is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"training loss is {loss.item()} at step {step}; lower --lr")


def _dummy_input(detector: nn.Module, device: torch.device) -> torch.Tensor:
    """One zero image, for a rank whose share of a global batch is empty (DDP needs its backward)."""
    size = getattr(detector, "module", detector).spec.preprocessing.size
    return torch.zeros(1, 3, size, size, device=device)


def _train_one_epoch_ddp(
    detector: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    lr_at: Callable[[int], float] | None,
    start_step: int,
    progress: bool,
    desc: str,
) -> EpochStats:
    """:func:`train_one_epoch` for one rank of several (see its ``world_size``)."""
    from fakescope import dist

    world = dist.world_size()
    detector.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss x n, correct, n over this rank
    failures: list[tuple[int, str]] = []
    for step, batch in enumerate(_bar(loader, desc, progress), start=start_step):
        failures += batch["failures"]
        n_local = len(batch["y"])
        n_global = int(dist.all_reduce_sum(torch.tensor([n_local], dtype=torch.int64)).item())
        if n_global == 0:  # every rank skips together, as one process would
            continue
        _set_lr(optimizer, lr_at, step)
        x = batch["x"].to(device, non_blocking=True) if n_local else _dummy_input(detector, device)
        y = batch["y"].to(device)
        with _autocast(device, amp_dtype):
            logits = detector(x)
        if n_local:
            loss_sum = nn.functional.binary_cross_entropy_with_logits(
                logits.float(), y, reduction="sum"
            )
        else:
            loss_sum = logits.float().sum() * 0.0
        # DDP averages gradients over ranks: scale so the average is the global-batch mean.
        loss = loss_sum * (world / n_global)
        _check_finite(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if n_local:
            hits = int(((logits.detach() >= 0).float() == y).sum())
            sums += torch.tensor([loss_sum.item(), hits, n_local], dtype=torch.float64)
    total_loss, correct, n = dist.all_reduce_sum(sums).tolist()
    return EpochStats(
        loss=total_loss / max(n, 1), acc=correct / max(n, 1), n=int(n), failures=failures
    )


def gather_scores(scores: Scores) -> Scores:
    """Every rank's :class:`Scores` as one, sorted by row index, repeats dropped.

    A non-shuffling ``DistributedSampler`` pads the last round with repeated rows; those are
    dropped here, so the result is what one process scoring the whole split would return.
    With one process it returns ``scores`` unchanged.
    """
    from fakescope import dist

    if dist.world_size() == 1:
        return scores
    parts = dist.all_gather_objects(scores)
    idx = np.concatenate([p.idx for p in parts])
    logits = np.concatenate([p.logits for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    idx, first = np.unique(idx, return_index=True)  # sorted, first occurrence of each row
    failures = sorted({f for p in parts for f in p.failures})
    return Scores(idx, logits[first], labels[first], failures)
