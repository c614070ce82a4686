"""A run's ``skipped.csv``: the files left out of it, and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["path", "label", "reason"]


def write_skipped(path: Path, skipped: pd.DataFrame) -> None:
    """Write the skipped-files table (always, so an empty one says "nothing skipped")."""
    cols = [c for c in SKIPPED_COLUMNS if c in skipped.columns]
    out = skipped[cols] if len(skipped) else pd.DataFrame(columns=SKIPPED_COLUMNS)
    out.to_csv(path, index=False)


def add_failures(run_dir: Path, df: pd.DataFrame, failures: list[tuple[int, str]]) -> None:
    """Append files that failed at load time during training to ``skipped.csv`` (no duplicates)."""
    if not failures:
        return
    path = run_dir / "skipped.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=SKIPPED_COLUMNS)
    new = pd.DataFrame(
        [
            {"path": df["path"].iloc[i], "label": df["label"].iloc[i], "reason": r}
            for i, r in failures
        ]
    )
    both = pd.concat([old, new], ignore_index=True).drop_duplicates(subset=["path"])
    both.to_csv(path, index=False)
    logger.warning("%d file(s) failed to load during training; listed in %s", len(new), path)
