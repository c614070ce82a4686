"""Score a labelled dataset with a detector and write predictions, metrics and the HTML report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fakescope.data.datasets import make_loader
from fakescope.data.images import DEFAULT_MAX_PIXELS, load_image, verify_files
from fakescope.data.transforms import eval_transform
from fakescope.models.detector import Detector
from fakescope.train.loop import score_loader
from fakescope.utils import autocast_dtype, is_interactive, resolve_device

logger = logging.getLogger(__name__)


def score_frame(
    detector: Detector,
    df: pd.DataFrame,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "cpu",
    amp: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Add ``logit``, ``score`` (calibrated P(fake)) and ``pred`` columns for every loadable row.

    Probe detectors read and fill the embedding cache (``cache_dir``, default
    ``$FAKESCOPE_CACHE``); fusion detectors score each member and combine their logits.

    Returns:
        The scored rows (manifest order) and the ``(row index, reason)`` of rows that failed.
    """
    kw = {
        "batch_size": batch_size,
        "workers": workers,
        "device": device,
        "amp": amp,
        "max_pixels": max_pixels,
        "cache_dir": cache_dir,
    }
    if detector.spec.kind == "fusion":
        idx, logits, failures = _fusion_logits(detector, df, kw)
    elif detector.spec.kind == "probe":
        idx, logits, failures = _probe_logits(detector, df, workers, cache_dir)
    else:
        idx, logits, failures = _network_logits(detector, df, kw)
    out = df.iloc[idx].copy()
    out["logit"] = logits
    out["score"] = torch.sigmoid(detector.calibrated_logits(torch.from_numpy(logits))).numpy()
    out["pred"] = (out["score"] >= detector.spec.threshold).astype(int)
    return out.sort_index(), failures


Logits = tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]


def _network_logits(detector: Detector, df: pd.DataFrame, kw: dict[str, Any]) -> Logits:
    dev = kw["device"]
    device = dev if isinstance(dev, torch.device) else resolve_device(str(dev))
    detector = detector.to(device)
    loader = make_loader(
        df,
        eval_transform(detector.spec.preprocessing),
        kw["batch_size"],
        workers=kw["workers"],
        max_pixels=kw["max_pixels"],
    )
    s = score_loader(
        detector, loader, device, autocast_dtype(device, kw["amp"]), progress=is_interactive()
    )
    order = np.argsort(s.idx, kind="stable")
    return s.idx[order], s.logits[order].astype(np.float32), s.failures


def _probe_logits(detector: Detector, df: pd.DataFrame, workers: int, cache_dir: Any) -> Logits:
    from fakescope.embed.cache import EmbeddingCache, default_cache_dir, embed_frame

    net = detector.net
    with EmbeddingCache(cache_dir or default_cache_dir(), net.backbone.cache_id) as cache:
        x, failures = embed_frame(
            net.backbone, df, cache=cache, workers=workers, progress=is_interactive()
        )
    ok = np.flatnonzero(~np.isnan(x).any(axis=1)) if x.shape[1] else np.zeros(0, dtype=np.int64)
    with torch.no_grad():
        logits = net.head_logits(torch.from_numpy(x[ok].astype(np.float32)))[:, 0].cpu().numpy()
    return ok, logits.astype(np.float32), failures


def _fusion_logits(detector: Detector, df: pd.DataFrame, kw: dict[str, Any]) -> Logits:
    from fakescope.models.fusion import member_matrix

    ok, z, failures = member_matrix(detector.net.members, df, kw)
    logits = z @ detector.net.weights.numpy() + float(detector.net.bias)
    return ok, logits.astype(np.float32), failures


def evaluate_frame(
    detector: Detector,
    df: pd.DataFrame,
    out_dir: str | Path,
    history: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    skipped: pd.DataFrame | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device = "cpu",
    n_boot: int = 1000,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``df`` (with labels), compute metrics with intervals and write the report into ``out_dir``.

    ``cache_dir`` is the embedding cache for probe detectors (default ``$FAKESCOPE_CACHE``).
    """
    from fakescope.eval.metrics import compute_metrics, format_summary
    from fakescope.eval.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scored, failures = score_frame(detector, df, batch_size, workers, device, cache_dir=cache_dir)
    skipped_rows = _skipped_rows(df, failures, skipped)
    groups = {
        k: scored[k].astype(str).to_numpy() for k in ("group", "source") if k in scored.columns
    }
    metrics = compute_metrics(
        scored["label"].to_numpy(),
        scored["score"].to_numpy(),
        threshold=detector.spec.threshold,
        groups=groups,
        n_boot=n_boot,
        seed=seed,
    )
    metrics["n_skipped"] = len(skipped_rows)
    meta = {**(meta or {}), "skipped": skipped_rows}
    cols = [
        c
        for c in ("path", "label", "score", "pred", "logit", "group", "source", "split")
        if c in scored
    ]
    write_report(
        out_dir,
        metrics,
        scored[cols].reset_index(drop=True),
        history=history,
        meta=meta,
        image_loader=load_image,
    )
    print(format_summary(metrics), flush=True)
    return metrics


def _skipped_rows(
    df: pd.DataFrame, failures: list[tuple[int, str]], skipped: pd.DataFrame | None
) -> list[dict]:
    rows = [] if skipped is None else skipped[["path", "reason"]].to_dict("records")
    rows += [{"path": str(df["path"].iloc[i]), "reason": r} for i, r in failures]
    return rows


def verify_and_evaluate(
    detector: Detector, df: pd.DataFrame, out_dir: str | Path, workers: int = 0, **kwargs: Any
) -> dict[str, Any]:
    """Like :func:`evaluate_frame`, but first leaves out (and reports) files that do not load."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    good, skipped = verify_files(df, workers=workers)
    skipped.to_csv(out_dir / "skipped.csv", index=False)
    if len(skipped):
        logger.warning(
            "skipped %d unreadable file(s); see %s", len(skipped), out_dir / "skipped.csv"
        )
    if len(good) == 0:
        raise ValueError("no readable images to evaluate")
    labels = np.unique(good["label"])
    if len(labels) < 2:
        logger.warning("evaluation set has one class only; AUC will be undefined")
    return evaluate_frame(
        detector, good.reset_index(drop=True), out_dir, skipped=skipped, workers=workers, **kwargs
    )
