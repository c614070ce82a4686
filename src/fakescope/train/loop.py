"""The inner loops: one training epoch, and scoring a loader (for validation, test and predict)."""

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

from fakescope.models.detector import Detector


@dataclass
class EpochStats:
    """Mean loss and accuracy over the images a loop saw, plus the files that failed to load."""

    loss: float = float("nan")
    acc: float = float("nan")
    n: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _bar(loader: DataLoader, desc: str, enabled: bool) -> tqdm:
    return tqdm(loader, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True)


def train_one_epoch(
    detector: Detector,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    lr_at: Callable[[int], float] | None = None,
    start_step: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> EpochStats:
    """Run one pass over ``loader``; ``lr_at(global_step)`` sets the learning rate per step."""
    detector.train()
    loss_fn = nn.BCEWithLogitsLoss()
    total_loss, correct, n, failures = 0.0, 0, 0, []
    bar = _bar(loader, desc, progress)
    for step, batch in enumerate(bar, start=start_step):
        failures += batch["failures"]
        if batch["x"].numel() == 0:
            continue
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        x, y = batch["x"].to(device, non_blocking=True), batch["y"].to(device)
        with _autocast(device, amp_dtype):
            logits = detector(x)
        loss = loss_fn(logits.float(), y)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int(((logits.detach() >= 0).float() == y).sum())
        n += len(y)
        bar.set_postfix(loss=f"{total_loss / n:.4f}", acc=f"{correct / n:.3f}")
    return EpochStats(loss=total_loss / max(n, 1), acc=correct / max(n, 1), n=n, failures=failures)


@torch.no_grad()
def score_loader(
    detector: Detector,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "score",
) -> Scores:
    """Raw logits for every loadable image in ``loader`` (in loader order)."""
    detector.eval()
    idx, logits, labels, failures = [], [], [], []
    for batch in _bar(loader, desc, progress):
        failures += batch["failures"]
        if batch["x"].numel() == 0:
            continue
        with _autocast(device, amp_dtype):
            out = detector(batch["x"].to(device, non_blocking=True))
        logits.append(out.float().cpu().numpy())
        idx.append(batch["idx"].numpy())
        labels.append(batch["y"].numpy().astype(np.int64))
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dtype=dt)  # noqa: E731
    return Scores(cat(idx, np.int64), cat(logits, np.float32), cat(labels, np.int64), failures)
