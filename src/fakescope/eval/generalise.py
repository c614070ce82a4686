"""One detector on several datasets: a report each and one summary table.

Leave-one-source-out, which trains, is :mod:`fakescope.experiments.loso`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fakescope.data.manifest import build_manifest
from fakescope.eval.intervals import exact_binomial_ci
from fakescope.eval.result import Metrics
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _listed(ci: Sequence[float] | None) -> list[float] | None:
    """An interval as a list (as ``summary.csv`` has always shown it), or None."""
    return None if ci is None else list(ci)


def summary_row(name: str, m: Metrics) -> dict[str, Any]:
    """One table row from a metric report: AUC, AP, accuracies with 95% intervals."""
    real_ci = exact_binomial_ci(round((m.real_acc or 0) * m.n_real), m.n_real)
    fake_ci = exact_binomial_ci(round((m.fake_acc or 0) * m.n_fake), m.n_fake)
    return {
        "dataset": name,
        "n": m.n,
        "n_real": m.n_real,
        "n_fake": m.n_fake,
        "auc": m.roc_auc,
        "auc_ci": _listed(m.roc_auc_ci),
        "ap": m.average_precision,
        "ap_ci": _listed(m.average_precision_ci),
        "acc": m.accuracy,
        "acc_ci": _listed(m.accuracy_ci),
        "real_acc": m.real_acc if m.n_real else None,
        "real_acc_ci": real_ci if m.n_real else None,
        "fake_acc": m.fake_acc if m.n_fake else None,
        "fake_acc_ci": fake_ci if m.n_fake else None,
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
