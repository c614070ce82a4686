"""K-fold cross-validation for sets too small to hold out a test split worth the name.

Every image is scored exactly once, by a model that never saw it: the data is cut into ``K``
folds stratified by label and group (strata too small for ``K`` folds are pooled per label), and
for each fold a detector is trained with the library (:func:`fakescope.train.run.fit`, then
:func:`~fakescope.train.run.calibrate_run`) on the other folds, a stratified slice of which is the
validation split for early stopping and calibration. The pooled out-of-fold predictions get the
usual metrics with bootstrap intervals and an HTML report; the per-fold numbers show the spread.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from fakescope.config import TrainConfig
from fakescope.data.manifest import DataError, build_manifest
from fakescope.data.splits import save_splits
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.result import FoldSummary, Metrics, Spread
from fakescope.eval.summary_text import format_summary

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2
OOF_FILE = "oof_predictions.csv"
FOLDS_FILE = "folds.json"
_RARE = "\x00rare"


class CrossValidation(NamedTuple):
    """What :func:`cross_validate` gives back: the pooled metrics and the report it wrote."""

    metrics: Metrics
    report: Path


def load_frame(cfg: TrainConfig) -> pd.DataFrame:
    """The manifest to cross-validate (any ``split`` column is ignored)."""
    kwargs: dict[str, Any] = {}
    if cfg.fake_names:
        kwargs["fake_names"] = cfg.fake_names
    if cfg.real_names:
        kwargs["real_names"] = cfg.real_names
    df = build_manifest(cfg.data, **kwargs)
    return df.drop(columns=["split"], errors="ignore").reset_index(drop=True)


def fold_keys(df: pd.DataFrame, folds: int) -> np.ndarray:
    """Stratification keys: label and group, with strata under ``folds`` rows pooled per label."""
    labels = df["label"].astype(int).astype(str).to_numpy()
    column = "group" if "group" in df.columns else "source" if "source" in df.columns else None
    groups = df[column].astype(str).to_numpy() if column else np.full(len(df), "")
    keys = pd.Series([f"{lab}|{grp}" for lab, grp in zip(labels, groups, strict=True)])
    small = keys.map(keys.value_counts()) < folds
    keys[small] = [f"{lab}|{_RARE}" for lab in labels[small.to_numpy()]]
    small = keys.map(keys.value_counts()) < folds
    keys[small] = labels[small.to_numpy()]
    return keys.to_numpy()


def assign_folds(df: pd.DataFrame, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..K-1) of each row, stratified by label (and group where possible).

    Args:
        df: A manifest with ``label`` (and ``group``/``source``).
        folds: K, at least 2.
        seed: Shuffling seed.

    Returns:
        An int array aligned with ``df``.

    Raises:
        DataError: When K < 2 or a class has fewer than K images.
    """
    if folds < 2:
        raise DataError(f"--folds needs at least 2 folds, got {folds}")
    counts = df["label"].value_counts()
    if len(counts) < 2 or int(counts.min()) < folds:
        raise DataError(
            f"{folds}-fold cross-validation needs at least {folds} images of each class; "
            f"found {counts.to_dict()}"
        )
    keys = fold_keys(df, folds)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = np.full(len(df), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(df)), keys)):
        out[test] = k
    return out


def fold_splits(df: pd.DataFrame, fold: np.ndarray, k: int, seed: int = 0) -> pd.DataFrame:
    """The splits frame of fold ``k``: the fold is ``test``, a stratified slice of the rest ``val``.

    Args:
        df: The manifest.
        fold: Fold of each row (from :func:`assign_folds`).
        k: The held-out fold.
        seed: Seed for the validation slice.

    Returns:
        A copy of ``df`` with a ``split`` column.
    """
    out = df.copy()
    out["split"] = np.where(fold == k, "test", "train")
    rest = np.flatnonzero(fold != k)
    labels = df["label"].to_numpy()[rest]
    n_val = max(2, round(VAL_FRACTION * len(rest)))
    try:
        _, val = train_test_split(rest, test_size=n_val, stratify=labels, random_state=seed + k)
    except ValueError:
        _, val = train_test_split(rest, test_size=n_val, random_state=seed + k)
    out.loc[out.index[val], "split"] = "val"
    return out


def _train_fold(cfg: TrainConfig, splits: pd.DataFrame, fold_dir: Path) -> Path:
    """Train and calibrate one fold; return its run directory."""
    from fakescope.train.run import calibrate_run, fit

    fold_dir.mkdir(parents=True, exist_ok=True)
    save_splits(splits, fold_dir / "splits-in.csv")
    fcfg = cfg.replace(splits=str(fold_dir / "splits-in.csv"), out=str(fold_dir / "run"))
    run_dir = fit(fcfg, force=True)
    calibrate_run(run_dir, fcfg)
    return run_dir


def _score_fold(run_dir: Path, test: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.DataFrame, float]:
    """Scores of the held-out rows by the fold's best checkpoint, and its threshold."""
    from fakescope.eval.scoring import score_frame
    from fakescope.infer.backends import open_detector

    det = open_detector(run_dir / "best.safetensors")
    scored, failures = score_frame(
        det, test.reset_index(drop=True), cfg.batch_size, cfg.workers, cfg.device
    )
    if failures:
        logger.warning("%d held-out image(s) failed to score", len(failures))
    return scored, float(det.spec.threshold)


def _fold_summary(k: int, scored: pd.DataFrame, threshold: float, n_boot: int) -> FoldSummary:
    """Per-fold AUC and accuracy with their bootstrap intervals."""
    m = compute_metrics(
        scored["label"].to_numpy(), scored["score"].to_numpy(), threshold=threshold, n_boot=n_boot
    )
    return FoldSummary(
        fold=k,
        n=m.n,
        roc_auc=m.roc_auc,
        roc_auc_ci=m.roc_auc_ci,
        accuracy=m.accuracy,
        accuracy_ci=m.accuracy_ci,
        threshold=threshold,
    )


def _fold_text(rows: list[FoldSummary]) -> str:
    """``"0: AUC 0.91 [0.80, 0.98], acc 0.85 (n=40); 1: ..."`` for the report header."""

    def num(value: float | None, ci: tuple[float, float] | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    return "; ".join(
        f"fold {r.fold}: AUC {num(r.roc_auc, r.roc_auc_ci)}, "
        f"accuracy {num(r.accuracy, r.accuracy_ci)} (n={r.n})"
        for r in rows
    )


def _spread(values: list[float | None]) -> Spread:
    """Mean and standard deviation of the defined values."""
    clean = np.array([v for v in values if v is not None], dtype=float)
    if clean.size == 0:
        return Spread(mean=None, std=None)
    return Spread(mean=float(clean.mean()), std=float(clean.std(ddof=1)) if clean.size > 1 else 0.0)


def _mean_sd(spread: Spread) -> str:
    """``"0.912 ± 0.031"`` or ``n/a``."""
    if spread.mean is None or spread.std is None:
        return "n/a"
    return f"{spread.mean:.3f} ± {spread.std:.3f}"


def _pooled_threshold(thresholds: list[float]) -> tuple[float, str | None]:
    """The threshold for pooled accuracy, and a note when the folds disagree."""
    if np.allclose(thresholds, thresholds[0]):
        return thresholds[0], None
    mean = float(np.mean(thresholds))
    return mean, (
        f"The folds chose different thresholds ({min(thresholds):.3f}–{max(thresholds):.3f}); "
        f"pooled accuracy uses their mean {mean:.3f}, while each fold's own accuracy is listed."
    )


def cross_validate(
    cfg: TrainConfig,
    folds: int,
    out_dir: str | Path,
    n_boot: int = 1000,
) -> CrossValidation:
    """Train K detectors per ``cfg`` and score every image once, out of fold.

    Works for any detector family ``fit`` supports (finetune, probe). ``cfg.out`` and
    ``cfg.splits`` are replaced per fold; everything else (model, epochs, seed, ...) is used as is.

    Args:
        cfg: The training config (``cfg.data`` is the dataset).
        folds: K.
        out_dir: Output folder: ``fold-<k>/`` per fold (its run and splits), ``oof_predictions.csv``
            (one row per image with its ``fold``), ``folds.json`` and ``report/``.
        n_boot: Bootstrap resamples for the pooled intervals.

    Returns:
        The pooled metrics (as :func:`compute_metrics`) with ``folds`` (per-fold rows),
        ``fold_auc`` and ``fold_accuracy`` (mean and std), ``n_rows`` and ``n_skipped`` set,
        and the path of the report's ``report.html``.

    Raises:
        DataError: When the data cannot support K folds.
    """
    from fakescope.eval.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = load_frame(cfg)
    fold = assign_folds(df, folds, cfg.seed)
    parts, thresholds = [], []
    per_fold: list[FoldSummary] = []
    for k in range(folds):
        print(f"\n== fold {k + 1}/{folds}: {int((fold == k).sum())} held-out images ==", flush=True)
        splits = fold_splits(df, fold, k, cfg.seed)
        run_dir = _train_fold(cfg, splits, out / f"fold-{k}")
        scored, threshold = _score_fold(run_dir, df[fold == k], cfg)
        scored["fold"] = k
        parts.append(scored)
        per_fold.append(_fold_summary(k, scored, threshold, n_boot))
        thresholds.append(threshold)
    oof = pd.concat(parts, ignore_index=True)
    oof.to_csv(out / OOF_FILE, index=False)
    threshold, note = _pooled_threshold(thresholds)
    metrics = _pooled_metrics(oof, threshold, n_boot, folds, note)
    metrics.n_rows = len(df)
    metrics.n_skipped = len(df) - len(oof)
    metrics.folds = per_fold
    metrics.fold_auc = fold_auc = _spread([f.roc_auc for f in per_fold])
    metrics.fold_accuracy = _spread([f.accuracy for f in per_fold])
    folds_json = [f.model_dump(mode="json") for f in per_fold]
    (out / FOLDS_FILE).write_text(json.dumps(folds_json, indent=2), encoding="utf-8")
    meta = {
        "data": cfg.data,
        "family": cfg.family,
        "model": cfg.model if cfg.family == "finetune" else cfg.backbone,
        "folds": folds,
        "per fold": _fold_text(per_fold),
        "fold AUC mean ± sd": _mean_sd(fold_auc),
    }
    cols = [
        c
        for c in ("path", "label", "score", "pred", "logit", "group", "source", "fold")
        if c in oof
    ]
    preds = oof[cols].copy()
    preds["pred"] = (preds["score"] >= threshold).astype(int)
    report = write_report(
        out / "report", metrics, preds, meta=meta, title="fakescope cross-validation"
    )
    print(format_summary(metrics), flush=True)
    return CrossValidation(metrics, report)


def _pooled_metrics(
    oof: pd.DataFrame, threshold: float, n_boot: int, folds: int, note: str | None
) -> Metrics:
    """Metrics with intervals on the pooled out-of-fold scores, with cross-validation notes."""
    groups = {k: oof[k].astype(str).to_numpy() for k in ("source", "group") if k in oof.columns}
    metrics = compute_metrics(
        oof["label"].to_numpy(), oof["score"].to_numpy(), threshold, groups=groups, n_boot=n_boot
    )
    notes = [
        f"{folds}-fold cross-validation: every image was scored once by a model trained without "
        "it; the numbers pool the folds' calibrated scores, so they describe the training recipe "
        "on this data, not one saved model."
    ]
    if note:
        notes.append(note)
    metrics.warnings = notes + metrics.warnings
    return metrics
