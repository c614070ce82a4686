"""Train a probe detector: embed with a frozen backbone (cached), fit a logistic head, pick C on val."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from fakescope.config import TrainConfig, save_config
from fakescope.data.manifest import DataError, summarize
from fakescope.models.checkpoint import save_checkpoint
from fakescope.models.probe import attach_novelty, create_probe_detector
from fakescope.utils import is_interactive

logger = logging.getLogger(__name__)

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def cache_root(cfg: TrainConfig) -> Path:
    """Where embeddings are cached: ``cfg.cache_dir`` or the default (``$FAKESCOPE_CACHE/embeddings``)."""
    from fakescope.embed.cache import default_cache_dir

    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def embed_split_frame(backbone: Any, df: pd.DataFrame, cfg: TrainConfig) -> tuple[np.ndarray, list]:
    """Embeddings for every row of ``df`` (NaN rows for files that failed), through the cache."""
    from fakescope.embed.cache import EmbeddingCache, embed_frame

    with EmbeddingCache(cache_root(cfg), backbone.cache_id) as cache:
        return embed_frame(
            backbone, df, cache=cache, workers=cfg.workers, progress=is_interactive()
        )


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (the probe's ``l2`` set-up)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_logistic_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    c: float | None = None,
    l2: bool = False,
) -> dict[str, Any]:
    """Fit L2-penalised logistic regression; choose C by validation log loss if not given.

    Features are standardised, or with ``l2`` scaled to unit length and left otherwise as they
    are (UnivFD's set-up, matching :class:`fakescope.models.probe.ProbeNet` with ``l2``).

    Returns:
        ``mean, scale, coef, bias, C`` and train/val loss and accuracy of the chosen head.
    """
    if l2:
        x_train, x_val = l2_normalise(x_train), l2_normalise(x_val)
        mean, scale = np.zeros(x_train.shape[1]), np.ones(x_train.shape[1])
    else:
        mean = x_train.mean(axis=0)
        scale = x_train.std(axis=0) + 1e-6
    ztr, zva = (x_train - mean) / scale, (x_val - mean) / scale
    best: dict[str, Any] | None = None
    for cand in (c,) if c is not None else C_GRID:
        clf = LogisticRegression(C=cand, max_iter=2000).fit(ztr, y_train)
        val_loss = log_loss(y_val, clf.predict_proba(zva)[:, 1], labels=[0, 1])
        logger.debug("probe C=%g val log loss %.4f", cand, val_loss)
        if best is None or val_loss < best["val_loss"]:
            best = {"clf": clf, "C": cand, "val_loss": val_loss}
    clf = best["clf"]
    return {
        "mean": mean,
        "scale": scale,
        "coef": clf.coef_[0],
        "bias": float(clf.intercept_[0]),
        "C": best["C"],
        "train_loss": log_loss(y_train, clf.predict_proba(ztr)[:, 1], labels=[0, 1]),
        "train_acc": float(clf.score(ztr, y_train)),
        "val_loss": best["val_loss"],
        "val_acc": float(clf.score(zva, y_val)),
    }


def _rows(df: pd.DataFrame, x: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    keep = (df["split"].to_numpy() == split) & ~np.isnan(x).any(axis=1)
    return x[keep], df["label"].to_numpy()[keep]


def resolve_backbone_arg(arg: str) -> str:
    """Where the ONNX file ``--backbone`` names is: the path as given when it is a file, else a
    file of that name found as ``predict`` finds a probe's backbone (in the folders of
    ``$FAKESCOPE_WEIGHTS``, then the user cache; fetched once when it is a file fakescope knows
    how to build and the hub answers). timm names are returned as they are.

    Raises:
        FileNotFoundError: no such file anywhere; the message names it and where it was looked for.
    """
    from fakescope.embed.fetch import ensure_file
    from fakescope.embed.weights import search_dirs

    text = arg.strip()
    if not text.lower().endswith(".onnx") or Path(text).expanduser().is_file():
        return text
    try:
        return str(ensure_file(text, None))
    except FileNotFoundError as e:
        folders = ", ".join(str(d) for d in search_dirs())
        raise FileNotFoundError(
            f"--backbone {text}: the ONNX file is not there, and no file named "
            f"{Path(text).name} is in {folders}; give its path, or set FAKESCOPE_WEIGHTS to the "
            "folder that holds it"
        ) from e


def fit_probe(cfg: TrainConfig, run_dir: Path, df: pd.DataFrame) -> Path:
    """Embed ``df`` (with a split column), fit the head, save ``best.safetensors`` in ``run_dir``.

    A bare ONNX file name in ``cfg.backbone`` is looked for as :func:`resolve_backbone_arg` says.
    """
    from fakescope.data.skipped import add_failures
    from fakescope.embed.backbones import open_backbone_arg

    if not cfg.backbone:
        raise DataError("--family probe needs --backbone (an .onnx file or a timm name[:weights])")
    cfg = cfg.replace(backbone=resolve_backbone_arg(cfg.backbone))
    save_config(cfg, run_dir / "config.json")
    backbone = open_backbone_arg(cfg.backbone, pool=cfg.pool)
    t0 = time.time()
    x, failures = embed_split_frame(backbone, df, cfg)
    add_failures(run_dir, df, failures)
    t_embed = time.time() - t0
    x_train, y_train = _rows(df, x, "train")
    fit = fit_logistic_head(x_train, y_train, *_rows(df, x, "val"), c=cfg.probe_c, l2=cfg.probe_l2)
    det = create_probe_detector(backbone, x.shape[1], l2=cfg.probe_l2)
    det.net.set_head(fit["mean"], fit["scale"], fit["coef"], fit["bias"])
    attach_novelty(det, x_train)
    rec = {
        "epoch": 1,
        "train_loss": fit["train_loss"],
        "train_acc": fit["train_acc"],
        "val_loss": fit["val_loss"],
        "val_acc": fit["val_acc"],
        "C": fit["C"],
        "time_s": time.time() - t0,
        "embed_s": t_embed,
    }
    (run_dir / "metrics.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    print(
        f"probe on {det.spec.arch}: embedded {len(df)} images in {t_embed:.1f}s; C={fit['C']}; "
        f"train loss {fit['train_loss']:.4f} acc {fit['train_acc']:.4f} "
        f"val loss {fit['val_loss']:.4f} acc {fit['val_acc']:.4f}",
        flush=True,
    )
    save_checkpoint(
        run_dir / "best.safetensors",
        det,
        config=cfg.to_dict(),
        data=summarize(df),
        history=[rec],
        best_epoch=1,
    )
    return run_dir
