"""Leave-one-source-out: for each source, train on the others and evaluate on the held-out one.

An experiment that trains, so it sits above :mod:`fakescope.train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.config import TrainConfig
from fakescope.data.manifest import DataError, build_manifest
from fakescope.data.splits import make_splits, save_splits
from fakescope.eval.evaluate import evaluate_frame
from fakescope.eval.generalise import summary_row
from fakescope.infer.backends import open_detector
from fakescope.train.run import calibrate_run, fit


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
        fcfg = cfg.replace(splits=str(fold / "train-splits.csv"), out=str(fold / "run"))
        print(
            f"\n== hold out {source!r}: train on {sorted(set(all_sources) - {source})} ==",
            flush=True,
        )
        run_dir = fit(fcfg, force=True)
        calibrate_run(run_dir, fcfg)
        det = open_detector(run_dir / "best.safetensors")
        m = evaluate_frame(
            det, held, fold / "report", meta={"held_out": source, "note": note}, **eval_kwargs
        )
        rows.append({**summary_row(source, m), "note": note})
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    return rows
