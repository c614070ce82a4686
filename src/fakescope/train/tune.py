"""Fine-tune the last blocks of the CLIP tower with Effort or LoRA, on 2 CPU cores.

Only the last ``blocks`` transformer blocks are tuned, so the tokens that enter them are computed
once by the int8 ONNX tower (the ``tokens`` pool, cached like any embedding) and every epoch
runs just those blocks, in torch, forward and backward. The earlier blocks' CLS tokens come from
the same int8 pass (the ``layers`` pool), so the features a tuned tower gives are laid out
exactly like the frozen ``layers`` probe's: every block's CLS token, each L2-normalised.

:func:`tune_tail` trains adapters (:mod:`fakescope.models.adapters`) and a linear head together
with a source-balanced sampler; :func:`TunedTail.features` then gives the tuned features of any
cached rows, on which the caller fits its final logistic head (as for the frozen probes), and
:meth:`TunedTail.deltas` gives what a detector stores.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.models.adapters import Adapter, effort_regulariser, wrap_block_linears
from fakescope.utils import cpu_supports_bf16

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneConfig:
    """How to tune (defaults: Effort's choices, at a size 2 CPU cores train in minutes).

    Attributes:
        method: ``effort`` (SVD residual) or ``lora``.
        rank: Effort's trainable residual rank per matrix (Effort: 1); LoRA's rank.
        blocks: how many of the last transformer blocks are tuned.
        targets: which linears of each block (timm names).
        epochs: passes of ``per_epoch`` samples.
        per_epoch: images drawn per epoch, balanced over classes and sources.
        batch_size: images per step.
        lr: AdamW learning rate of the adapters (Effort: 2e-4).
        head_lr: AdamW learning rate of the linear head trained with them.
        reg: weight of Effort's orthogonality and norm losses.
        seed: sampling and initialisation seed.
    """

    method: str = "effort"
    rank: int = 1
    blocks: int = 4
    targets: tuple[str, ...] = ("attn.qkv", "attn.proj")
    epochs: int = 3
    per_epoch: int = 1200
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 1e-3
    reg: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "targets": list(self.targets)}


class TunedTail(nn.Module):
    """The tuned blocks and a linear head on the ``layers`` features.

    Args:
        tower: a :class:`~fakescope.models.clip_tower.ClipTower` (its last blocks are copied).
        cfg: the tuning config.
    """

    def __init__(self, tower: nn.Module, cfg: TuneConfig) -> None:
        super().__init__()
        import copy

        self.depth = len(tower.vit.blocks)
        self.start = self.depth - int(cfg.blocks)
        if not 0 < cfg.blocks <= self.depth:
            raise ValueError(f"blocks must be 1 to {self.depth}, got {cfg.blocks}")
        self.blocks = copy.deepcopy(tower.vit.blocks[self.start :])
        self.adapters: dict[str, Adapter] = wrap_block_linears(
            self.blocks, cfg.method, cfg.rank, tuple(cfg.targets)
        )
        dim = tower.vit.embed_dim
        self.width = dim
        self.head = nn.Linear(self.depth * dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def tuned_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLS after each tuned block, ``[B, blocks * C]``."""
        h, outs = tokens, []
        for blk in self.blocks:
            h = blk(h)
            cls = h[:, 0].float()
            outs.append(cls / cls.norm(dim=1, keepdim=True).clamp_min(1e-12))
        return torch.cat(outs, dim=1)

    def features(self, tokens: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """The ``layers`` features: the frozen blocks' part of the cached vector, then the tuned
        blocks' CLS tokens, scaled like :func:`fakescope.embed.backbones._layer_cls`."""
        tuned = self.tuned_cls(tokens) / math.sqrt(self.depth)
        return torch.cat([early[:, : self.start * self.width], tuned], dim=1)

    def forward(self, tokens: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens, early) * math.sqrt(self.depth))[:, 0]

    def deltas(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The trained low-rank deltas, keyed by the tower's module names (``blocks.11.attn.qkv``)."""
        out = {}
        for path, adapter in self.adapters.items():
            i, _, name = path.partition(".")
            a, b = adapter.delta()
            out[f"blocks.{self.start + int(i)}.{name}"] = (
                a.float().numpy().copy(),
                b.float().numpy().copy(),
            )
        return out


def balanced_weights(labels: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Per-row weights giving each class half the total, split equally among its sources."""
    w = np.zeros(len(labels), dtype=np.float64)
    for c in (0, 1):
        in_class = labels == c
        names = np.unique(sources[in_class])
        for name in names:
            rows = in_class & (sources == name)
            w[rows] = 0.5 / len(names) / rows.sum()
    return w / w.sum()


def tune_tail(
    tower: nn.Module,
    tokens: Callable[[np.ndarray], np.ndarray],
    early: np.ndarray,
    labels: np.ndarray,
    sources: np.ndarray,
    cfg: TuneConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[TunedTail, list[dict[str, float]]]:
    """Train a :class:`TunedTail` on cached rows.

    Args:
        tower: the fp32 tower (:func:`fakescope.models.clip_tower.build_clip_tower`).
        tokens: row indices -> the cached tokens entering the first tuned block, ``[n, T, C]``.
        early: the cached ``layers`` features of every row (only the frozen blocks' part is used).
        labels: 0/1 per row.
        sources: source name per row (for the balanced sampler).
        cfg: the tuning config.
        progress: called with a line per epoch.

    Returns:
        The tuned tail, and one record per epoch (loss, accuracy, seconds, images/s).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tail = TunedTail(tower, cfg)
    adapters = [p for p in tail.blocks.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": adapters, "lr": cfg.lr}, {"params": tail.head.parameters(), "lr": cfg.head_lr}],
        weight_decay=0.0,
    )
    weights = balanced_weights(labels, sources)
    bf16 = cpu_supports_bf16()
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        draw = rng.choice(len(labels), size=cfg.per_epoch, replace=True, p=weights)
        tail.train()
        tot_loss, correct = 0.0, 0
        for start in range(0, len(draw), cfg.batch_size):
            idx = np.sort(draw[start : start + cfg.batch_size])
            loss, logits = _step(tail, tokens(idx), early[idx], labels[idx], cfg, bf16)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * len(idx)
            correct += int(((logits > 0).long().numpy() == labels[idx]).sum())
        secs = time.perf_counter() - t0
        rec = {
            "epoch": epoch,
            "train_loss": tot_loss / len(draw),
            "train_acc": correct / len(draw),
            "time_s": secs,
            "images_per_s": len(draw) / secs,
        }
        history.append(rec)
        line = (
            f"tune {cfg.method} epoch {epoch}/{cfg.epochs} loss {rec['train_loss']:.4f} "
            f"acc {rec['train_acc']:.4f} {secs:.0f}s ({rec['images_per_s']:.1f} img/s)"
        )
        logger.info(line)
        if progress is not None:
            progress(line)
    return tail.eval(), history


def _step(
    tail: TunedTail, tok: np.ndarray, early: np.ndarray, y: np.ndarray, cfg: TuneConfig, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: the loss (BCE plus Effort's regulariser) and the logits."""
    x = torch.from_numpy(np.ascontiguousarray(tok, dtype=np.float32))
    e = torch.from_numpy(np.ascontiguousarray(early, dtype=np.float32))
    target = torch.from_numpy(y.astype(np.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = tail(x, e).float()
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
    if cfg.method == "effort" and cfg.reg > 0:
        loss = loss + cfg.reg * effort_regulariser(tail.adapters)
    return loss, logits.detach()


@torch.no_grad()
def tail_features(
    tail: TunedTail,
    tokens: Callable[[np.ndarray], np.ndarray],
    early: np.ndarray,
    rows: np.ndarray,
    batch_size: int = 64,
    bf16: bool | None = None,
) -> np.ndarray:
    """The tuned ``layers`` features of ``rows`` (bf16 autocast where the CPU has it, as in
    training; the shipped detector computes its own with the int8 tower)."""
    bf16 = cpu_supports_bf16() if bf16 is None else bf16
    out = []
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(tokens(idx), dtype=np.float32))
        e = torch.from_numpy(np.ascontiguousarray(early[idx], dtype=np.float32))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(tail.features(x, e).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, tail.depth * tail.width), np.float32)
