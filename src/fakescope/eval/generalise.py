"""Generalisation tools: one detector on several datasets, and leave-one-source-out training."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.config import TrainConfig
from fakescope.data.manifest import DataError, build_manifest
from fakescope.data.splits import make_splits, save_splits
from fakescope.eval.metrics import exact_binomial_ci
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def summary_row(name: str, m: dict[str, Any]) -> dict[str, Any]:
    """One table row from a metrics dict: AUC, AP, accuracies with 95% intervals."""
    real_ci = exact_binomial_ci(round((m.get("real_acc") or 0) * m["n_real"]), m["n_real"])
    fake_ci = exact_binomial_ci(round((m.get("fake_acc") or 0) * m["n_fake"]), m["n_fake"])
    return {
        "dataset": name,
        "n": m["n"],
        "n_real": m["n_real"],
        "n_fake": m["n_fake"],
        "auc": m.get("roc_auc"),
        "auc_ci": m.get("roc_auc_ci"),
        "ap": m.get("average_precision"),
        "ap_ci": m.get("average_precision_ci"),
        "acc": m["accuracy"],
        "acc_ci": m.get("accuracy_ci"),
        "real_acc": m.get("real_acc") if m["n_real"] else None,
        "real_acc_ci": real_ci if m["n_real"] else None,
        "fake_acc": m.get("fake_acc") if m["n_fake"] else None,
        "fake_acc_ci": fake_ci if m["n_fake"] else None,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`summary_row` rows."""
    head = (
        f"{'dataset':<28} {'n':>6}  {'AUC [95% CI]':<24} {'AP':>6}  "
        f"{'acc [95% CI]':<24} {'real acc':>8} {'fake acc':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{str(r['dataset'])[:28]:<28} {r['n']:>6}  {_fmt(r['auc']) + ' ' + _ci(r['auc_ci']):<24} "
            f"{_fmt(r['ap']):>6}  {_fmt(r['acc']) + ' ' + _ci(r['acc_ci']):<24} "
            f"{_fmt(r['real_acc']):>8} {_fmt(r['fake_acc']):>8}"
        )
    return "\n".join(lines)


def _unique_names(paths: Sequence[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = Path(p).stem if Path(p).suffix in (".csv", ".parquet") else Path(p).name
        name, k = base or "data", 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def evaluate_many(
    detector: Detector, datasets: Sequence[str], out: str | Path, split: str = "all", **kwargs: Any
) -> list[dict[str, Any]]:
    """Evaluate one detector on several labelled datasets; a report per dataset plus ``summary.csv``."""
    from fakescope.eval.evaluate import verify_and_evaluate

    out, rows = Path(out), []
    for data, name in zip(datasets, _unique_names(datasets), strict=True):
        df = build_manifest(data)
        if split != "all" and "split" in df.columns:
            df = df[df["split"] == split].reset_index(drop=True)
        elif split != "all":
            logger.warning("%s has no split column: evaluating all of it", data)
        target = out / name if len(datasets) > 1 else out
        meta = {"model": detector.spec.arch, "data": str(data), "split": split}
        m = verify_and_evaluate(
            detector, df, target, history=detector.meta.get("history"), meta=meta, **kwargs
        )
        rows.append(summary_row(name, m))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    return rows


def _fold_sets(df: pd.DataFrame, source: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training rows (other sources, split train/val/test) and the held-out evaluation rows."""
    held = df[df["source"] == source].drop(columns=["split"], errors="ignore")
    rest = make_splits(
        df[df["source"] != source].drop(columns=["split"], errors="ignore"), seed=seed
    )
    note = ""
    if held["label"].nunique() < 2:
        # A source of one class (e.g. a generator, or a photo collection) has no AUC on its own:
        # pair it with the other class from the held-back test rows of the training sources.
        other = 1 - int(held["label"].iloc[0])
        pair = rest[(rest["split"] == "test") & (rest["label"] == other)].drop(columns=["split"])
        note = f"paired with {len(pair)} {'fake' if other else 'real'} test images of the other sources"
        held = pd.concat([held, pair], ignore_index=True)
    return rest, held.reset_index(drop=True), note


def leave_one_source_out(
    cfg: TrainConfig, out: str | Path, sources: Sequence[str] | None = None, **eval_kwargs: Any
) -> list[dict[str, Any]]:
    """For each source: train on the others (per ``cfg``), evaluate on the held-out source."""
    from fakescope.eval.evaluate import evaluate_frame
    from fakescope.models.checkpoint import load_detector
    from fakescope.train.run import calibrate_run, fit

    df, out, rows = build_manifest(cfg.data), Path(out), []
    all_sources = sorted(df["source"].astype(str).unique())
    if len(all_sources) < 2:
        raise DataError(
            f"{cfg.data}: leave-one-source-out needs at least two sources, found {all_sources}"
        )
    for source in sources or all_sources:
        rest, held, note = _fold_sets(df, source, cfg.seed)
        fold = out / f"holdout-{source}"
        fold.mkdir(parents=True, exist_ok=True)
        save_splits(rest, fold / "train-splits.csv")
        fcfg = dataclasses.replace(
            cfg, splits=str(fold / "train-splits.csv"), out=str(fold / "run")
        )
        print(
            f"\n== hold out {source!r}: train on {sorted(set(all_sources) - {source})} ==",
            flush=True,
        )
        run_dir = fit(fcfg, force=True)
        calibrate_run(run_dir, fcfg)
        det = load_detector(run_dir / "best.safetensors")
        m = evaluate_frame(
            det, held, fold / "report", meta={"held_out": source, "note": note}, **eval_kwargs
        )
        rows.append({**summary_row(source, m), "note": note})
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    return rows
