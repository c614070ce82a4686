"""Seeded train/val/test splits, stratified by label and group."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fakescope.config import TrainConfig
from fakescope.data.manifest import SPLITS, DataError, build_manifest, read_manifest_file

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "load_dataset", "load_splits", "make_splits", "save_splits", "validate_splits"]

SPLIT_COLUMNS = ("path", "label", "group", "source", "split")
_RARE = "\x00rare"  # cannot clash with a real group name
_RATIO_TOLERANCE = 1e-6


def make_splits(
    df: pd.DataFrame,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> pd.DataFrame:
    """Assign each row to train, val or test, stratified by label and group jointly.

    Strata with too few rows to reach every split are pooled into one "rare" stratum per label;
    a rare stratum that is still too small joins the largest stratum of its label. If
    scikit-learn still cannot stratify, the split falls back to label only, then to none.
    The result depends only on the rows' content and the seed, not on their order.

    Args:
        df: A manifest with ``path`` and ``label``; ``group`` (or else ``source``) gives the
            strata within each label.
        ratios: Train, val and test fractions; non-negative, summing to 1. Val or test may be 0.
        seed: Random seed.

    Returns:
        A copy of ``df`` (same row order and index) with a ``split`` column.

    Raises:
        DataError: For bad ratios, missing columns or an empty table.
    """
    fractions = _check_ratios(ratios)
    _require_columns(df, ("path", "label"), "make_splits")
    if df.empty:
        raise DataError("cannot split an empty dataset")
    order = _content_order(df)
    labels = df["label"].to_numpy()[order].astype(np.int64)
    groups = _group_values(df)[order]
    keys = _strata(labels, groups, _min_stratum_size(fractions))
    assigned = _assign(labels, keys, fractions, np.random.RandomState(seed % 2**32))
    split = np.empty(len(df), dtype=object)
    split[order] = assigned
    out = df.copy()
    out["split"] = pd.Series(split, index=df.index, dtype=str)
    logger.info("split %d rows: %s", len(out), out["split"].value_counts().to_dict())
    return out


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions."""
    values = tuple(float(r) for r in ratios)
    if len(values) != 3:
        raise DataError(f"ratios must be three numbers (train, val, test), got {tuple(ratios)}")
    if any(not math.isfinite(r) or r < 0 for r in values):
        raise DataError(f"ratios must be non-negative numbers, got {values}")
    if abs(sum(values) - 1.0) > _RATIO_TOLERANCE:
        raise DataError(f"ratios must sum to 1, got {values} (sum {sum(values):.6g})")
    if values[0] <= 0:
        raise DataError(f"the train ratio must be above 0, got {values}")
    return values  # type: ignore[return-value]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise DataError naming the columns ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; found {list(df.columns)}")


def _content_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions sorted by path then label, so input order does not matter."""
    keys = pd.DataFrame(
        {"path": df["path"].astype(str).to_numpy(), "label": df["label"].to_numpy()}
    )
    return keys.sort_values(["path", "label"], kind="mergesort").index.to_numpy()


def _group_values(df: pd.DataFrame) -> np.ndarray:
    """The stratification group of each row: ``group``, else ``source``, else one group."""
    for column in ("group", "source"):
        if column in df.columns:
            return df[column].astype(str).to_numpy(dtype=object)
    return np.full(len(df), "", dtype=object)


def _min_stratum_size(fractions: tuple[float, float, float]) -> int:
    """Rows a stratum needs so that each non-empty split expects at least one of them."""
    smallest = min(f for f in fractions if f > 0)
    return max(2, math.ceil(1.0 / smallest - 1e-9))


def _strata(labels: np.ndarray, groups: np.ndarray, needed: int) -> np.ndarray:
    """Label-and-group keys, with small strata pooled per label."""
    keys = pd.Series(
        [f"{lab}|{grp}" for lab, grp in zip(labels, groups, strict=True)], dtype=object
    )
    counts = keys.map(keys.value_counts())
    rare = (counts < needed).to_numpy()
    keys[rare] = [f"{lab}|{_RARE}" for lab in labels[rare]]
    counts = keys.value_counts()
    for label in np.unique(labels):
        rare_key = f"{label}|{_RARE}"
        if not 0 < counts.get(rare_key, 0) < needed:
            continue
        others = counts[[k.startswith(f"{label}|") and k != rare_key for k in counts.index]]
        if len(others):
            # Largest stratum of the label; ties broken by name for determinism.
            target = min(others.index, key=lambda k: (-others[k], k))
            keys[keys == rare_key] = target
    return keys.to_numpy(dtype=object)


def _split_count(fraction: float, n: int) -> int:
    """Rows for a split of ``fraction`` out of ``n``: at least 1 when asked for, never all."""
    if fraction <= 0 or n < 2:
        return 0
    return min(max(round(fraction * n), 1), n - 1)


def _assign(
    labels: np.ndarray,
    keys: np.ndarray,
    fractions: tuple[float, float, float],
    rng: np.random.RandomState,
) -> np.ndarray:
    """Split rows in two stages: test off the whole, then val off the rest."""
    n = len(labels)
    split = np.full(n, "train", dtype=object)
    pool = np.arange(n)
    n_test = _split_count(fractions[2], n)
    if n_test:
        pool, test = _stratified_split(pool, labels, keys, n_test, rng)
        split[test] = "test"
    n_val = min(round(fractions[1] * n), len(pool) - 1) if fractions[1] > 0 else 0
    if fractions[1] > 0 and len(pool) > 1:
        n_val = max(n_val, 1)
    if n_val > 0:
        pool, val = _stratified_split(pool, labels, keys, n_val, rng)
        split[val] = "val"
    return split


def _stratified_split(
    pool: np.ndarray,
    labels: np.ndarray,
    keys: np.ndarray,
    n_out: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """Take ``n_out`` rows out of ``pool``, as stratified as scikit-learn allows."""
    attempts = (("label and group", keys[pool]), ("label", labels[pool]), ("nothing", None))
    for level, stratify in attempts:
        state = rng.get_state()
        try:
            kept, taken = train_test_split(
                pool, test_size=n_out, stratify=stratify, random_state=rng, shuffle=True
            )
        except ValueError as exc:
            rng.set_state(state)
            logger.debug("cannot stratify by %s: %s", level, exc)
            continue
        if level != "label and group":
            logger.info("too few images to stratify by label and group; stratified by %s", level)
        return np.sort(kept), np.sort(taken)
    raise AssertionError("an unstratified split cannot fail")  # pragma: no cover


def validate_splits(df: pd.DataFrame, required: Sequence[str] = ("train", "val")) -> None:
    """Check that a split dataset can train: both classes overall and in each required split.

    Args:
        df: A manifest with a ``split`` column.
        required: Splits that must be non-empty and hold both real and fake images.

    Raises:
        DataError: Naming the problem and the counts per split.
    """
    _require_columns(df, ("label",), "validate_splits")
    n_fake = int((df["label"] == 1).sum())
    n_real = len(df) - n_fake
    if len(df) == 0:
        raise DataError("the dataset is empty")
    if n_real == 0 or n_fake == 0:
        only, n = ("fake", n_fake) if n_real == 0 else ("real", n_real)
        raise DataError(f"dataset has only {only} images ({n}); training needs both real and fake")
    _require_columns(df, ("split",), "validate_splits")
    table = _split_counts(df)
    for name in required:
        real, fake = table.get(name, (0, 0))
        if real + fake == 0:
            raise DataError(
                f"split '{name}' is empty ({_format_counts(table)}); use more images or a "
                f"larger {name} ratio"
            )
        if real == 0 or fake == 0:
            only = "fake" if real == 0 else "real"
            raise DataError(
                f"split '{name}' has only {only} images ({real} real, {fake} fake); it needs "
                f"both classes ({_format_counts(table)})"
            )


def _split_counts(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """``{split: (n_real, n_fake)}`` for the splits present plus the standard ones."""
    names = [*SPLITS, *sorted(set(map(str, df["split"])) - set(SPLITS))]
    table = {}
    for name in names:
        labels = df.loc[df["split"] == name, "label"]
        n_fake = int((labels == 1).sum())
        table[name] = (len(labels) - n_fake, n_fake)
    return table


def _format_counts(table: dict[str, tuple[int, int]]) -> str:
    """``train: 70 (35 real, 35 fake), val: 0, ...``."""
    parts = []
    for name, (real, fake) in table.items():
        total = real + fake
        parts.append(f"{name}: {total} ({real} real, {fake} fake)" if total else f"{name}: 0")
    return ", ".join(parts)


def save_splits(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a split manifest as CSV (``path,label,group,source,split``), atomically.

    Args:
        df: A manifest with a ``split`` column.
        path: The CSV file to write; its folder is created if needed.

    Raises:
        DataError: When ``df`` lacks one of the columns.
    """
    _require_columns(df, SPLIT_COLUMNS, "save_splits")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        df.loc[:, list(SPLIT_COLUMNS)].to_csv(tmp, index=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %d rows of splits to %s", len(df), target)


def load_splits(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a split manifest written by ``save_splits`` (or any manifest with a split column).

    Args:
        path: A CSV or Parquet manifest; relative paths are resolved against its folder.

    Returns:
        The manifest with its ``split`` column.

    Raises:
        DataError: When the file is not a valid manifest or has no ``split`` column.
    """
    df = read_manifest_file(path)
    if "split" not in df.columns:
        raise DataError(f"{path}: no 'split' column; make one with make_splits and save_splits")
    return df


def load_dataset(cfg: TrainConfig) -> pd.DataFrame:
    """The manifest with a ``split`` column: a reused splits file, the manifest's own, or a new split."""
    if cfg.splits:
        return load_splits(cfg.splits)
    kwargs = {}
    if cfg.fake_names:
        kwargs["fake_names"] = cfg.fake_names
    if cfg.real_names:
        kwargs["real_names"] = cfg.real_names
    df = build_manifest(cfg.data, **kwargs)
    if "split" in df.columns:
        logger.info("using the split given in the manifest")
        return df
    return make_splits(df, ratios=tuple(cfg.split), seed=cfg.seed)
