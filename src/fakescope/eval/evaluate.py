"""Evaluate a detector on a labelled dataset: score it (:mod:`fakescope.eval.scoring`), then write
predictions, metrics with intervals and the HTML report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fakescope.data.images import load_image, verify_files
from fakescope.eval.result import Metrics
from fakescope.eval.scoring import score_frame
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)


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
) -> Metrics:
    """Score ``df`` (with labels), compute metrics with intervals and write the report into ``out_dir``.

    ``cache_dir`` is the embedding cache for probe detectors (default ``$FAKESCOPE_CACHE/embeddings``).
    The metrics' ``n_skipped`` counts the rows left out (unreadable or failed to score).
    """
    from fakescope.eval.metrics import compute_metrics
    from fakescope.eval.report import write_report
    from fakescope.eval.summary_text import format_summary

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
        uncertain_band=detector.spec.uncertain_band,
    )
    metrics.n_skipped = len(skipped_rows)
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
) -> Metrics:
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
