"""Files to a pandas manifest: one row per image with its path, label, group and source."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakescope.data.images import IMAGE_EXTENSIONS, DataError

logger = logging.getLogger(__name__)

FAKE_NAMES = ("ai", "fake", "generated", "synthetic", "artificial", "1_fake")
REAL_NAMES = ("real", "nature", "human", "authentic", "0_real")
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "group", "source")
MANIFEST_FILENAMES = ("manifest.csv", "manifest.parquet")

# Folder names that mark a dataset split rather than a source or group.
_SPLIT_FOLDER_NAMES = frozenset({"train", "val", "valid", "validation", "test"})
# Folders that zip tools and operating systems leave behind.
_JUNK_DIRS = frozenset({"__macosx", "$recycle.bin", "@eadir"})
# A trailing run of numbers, each at the start or after separators: "green-apple-ohs-1" ->
# "green-apple-ohs", "IMG_0042" -> "IMG", "n01440764_10026" -> "n01440764", "00001" -> "".
_TRAILING_NUMBERS = re.compile(r"(?:(?:^|[\s._-]+)\(?\d+\)?)+[\s._-]*$")
_MAX_BAD_SHOWN = 5


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def build_manifest(
    source: str | os.PathLike[str],
    fake_names: Sequence[str] = FAKE_NAMES,
    real_names: Sequence[str] = REAL_NAMES,
) -> pd.DataFrame:
    """Build a manifest from a folder of class folders or from a manifest file.

    Args:
        source: A ``.csv``/``.parquet`` manifest, a folder with ``manifest.csv`` or
            ``manifest.parquet`` at its top, or a folder tree with class folders (``AI``/``Real``,
            ``ai``/``nature``, ``1_fake``/``0_real``, ...) somewhere below it.
        fake_names: Folder names (case-insensitive) whose images are fake (label 1).
        real_names: Folder names (case-insensitive) whose images are real (label 0).

    Returns:
        A DataFrame with the columns ``path`` (absolute), ``label`` (0 real, 1 fake), ``group``
        and ``source`` (plus ``split`` when a manifest file has one), sorted by path.

    Raises:
        DataError: When the source is missing, is an unsupported file, or has no labelled images.
    """
    fake, real = _name_sets(fake_names, real_names)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data source not found: {path}")
    if path.is_file():
        return read_manifest_file(path, fake_names=fake_names, real_names=real_names)
    for name in MANIFEST_FILENAMES:
        candidate = path / name
        if candidate.is_file():
            logger.info("using the manifest %s instead of scanning the folders", candidate)
            return read_manifest_file(candidate, fake_names=fake_names, real_names=real_names)
    return _scan_folder(path.resolve(), fake, real)


def _name_sets(
    fake_names: Sequence[str], real_names: Sequence[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Lower-case the class names and make sure no name means both classes."""
    if isinstance(fake_names, str) or isinstance(real_names, str):
        raise DataError("fake_names and real_names must be sequences of names, not one string")
    fake = frozenset(n.strip().lower() for n in fake_names)
    real = frozenset(n.strip().lower() for n in real_names)
    if not fake or not real:
        raise DataError("fake_names and real_names must each hold at least one name")
    both = sorted(fake & real)
    if both:
        raise DataError(f"names listed as both fake and real: {both}")
    return fake, real


# --------------------------------------------------------------------------------------------
# Folder scan
# --------------------------------------------------------------------------------------------


@dataclass
class _ScanCounts:
    """What the scan skipped, for the log and the error message."""

    not_image: int = 0
    unlabelled: int = 0
    unlabelled_examples: list[str] = field(default_factory=list)


def _walk_files(root: Path) -> Iterator[Path]:
    """Yield visible files below ``root`` in sorted order, following symlinked folders once."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error, followlinks=True):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            # A symlink loop or a second link to a folder already scanned.
            dirnames[:] = []
            continue
        seen.add(key)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d.lower() not in _JUNK_DIRS
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def _walk_error(exc: OSError) -> None:
    """Log a folder that cannot be listed instead of silently skipping it."""
    logger.warning("cannot list %s: %s", exc.filename, exc.strerror or exc)


def _scan_folder(root: Path, fake: frozenset[str], real: frozenset[str]) -> pd.DataFrame:
    """Label every image below ``root`` by its class folder."""
    counts = _ScanCounts()
    rows: list[tuple[str, int, str, str]] = []
    for file in _walk_files(root):
        if file.suffix.lower() not in IMAGE_EXTENSIONS:
            counts.not_image += 1
            continue
        row = _row_for(root, file, fake, real)
        if row is None:
            counts.unlabelled += 1
            if len(counts.unlabelled_examples) < 3:
                counts.unlabelled_examples.append(str(file.relative_to(root)))
            continue
        rows.append(row)
    _log_scan(root, counts, len(rows))
    if not rows:
        raise DataError(_no_class_message(root, fake, real, counts))
    return _finish(pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), str(root))


def _row_for(
    root: Path, file: Path, fake: frozenset[str], real: frozenset[str]
) -> tuple[str, int, str, str] | None:
    """Derive ``(path, label, group, source)`` for one file, or None if it has no class."""
    parts = file.relative_to(root).parts[:-1]
    found = _class_index(parts, fake, real)
    if found is None:
        return None
    index, label = found
    above = [p for p in parts[:index] if p.lower() not in _SPLIT_FOLDER_NAMES]
    below = parts[index + 1 :]
    source = above[0] if above else root.name
    if below:
        group = "/".join(below)
    elif len(above) > 1:
        group = above[-1]
    else:
        group = group_from_stem(file.stem) or source
    return str(file.resolve()), label, group, source


def _class_index(
    parts: Sequence[str], fake: frozenset[str], real: frozenset[str]
) -> tuple[int, int] | None:
    """The index and label of the last class folder among ``parts``, if any."""
    for index in range(len(parts) - 1, -1, -1):
        name = parts[index].lower()
        if name in fake:
            return index, 1
        if name in real:
            return index, 0
    return None


def group_from_stem(stem: str) -> str:
    """Guess a group from a file name by dropping its trailing numbers.

    Args:
        stem: A file name without its extension, e.g. ``"green-apple-ohs-1"``.

    Returns:
        The lower-cased remainder, e.g. ``"green-apple-ohs"``; empty for an all-number name.
    """
    return _TRAILING_NUMBERS.sub("", stem).strip(" ._-").lower()


def _log_scan(root: Path, counts: _ScanCounts, n_rows: int) -> None:
    """Report what the scan found and what it left out."""
    logger.info("found %d labelled images under %s", n_rows, root)
    if counts.not_image:
        logger.info("ignored %d files without an image extension", counts.not_image)
    if counts.unlabelled and n_rows:
        logger.warning(
            "ignored %d images that are not under a class folder (e.g. %s)",
            counts.unlabelled,
            ", ".join(counts.unlabelled_examples),
        )


def _no_class_message(
    root: Path, fake: frozenset[str], real: frozenset[str], counts: _ScanCounts
) -> str:
    """Explain why a folder gave no labelled images and what layout is expected."""
    try:
        top = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        top = []
    found = (
        f"{counts.unlabelled} images outside class folders"
        if counts.unlabelled
        else "no image files"
    )
    return (
        f"no class folders found under {root} ({found}; {counts.not_image} other files). "
        f"Top-level folders: {top or 'none'}. Put images in folders named one of "
        f"{sorted(fake)} (fake) or {sorted(real)} (real), case-insensitive, at any depth, "
        f"or add a manifest.csv with the columns path,label."
    )


# --------------------------------------------------------------------------------------------
# Manifest files
# --------------------------------------------------------------------------------------------


def read_manifest_file(
    path: str | os.PathLike[str],
    *,
    fake_names: Sequence[str] = FAKE_NAMES,
    real_names: Sequence[str] = REAL_NAMES,
) -> pd.DataFrame:
    """Read a CSV or Parquet manifest into the standard manifest shape.

    Args:
        path: A ``.csv`` or ``.parquet`` file with at least the columns ``path`` and ``label``.
            Relative paths in it are taken relative to the file's folder.
        fake_names: Label strings (case-insensitive) that mean fake, besides ``1``.
        real_names: Label strings (case-insensitive) that mean real, besides ``0``.

    Returns:
        The columns ``path``, ``label``, ``group``, ``source`` and, when present, ``split``;
        other columns are dropped. A missing ``source`` becomes the manifest's folder name and a
        missing ``group`` the row's source.

    Raises:
        DataError: For an unknown suffix, an unreadable file, missing columns, bad labels, empty
            paths or split values other than train/val/test.
    """
    file = Path(path).expanduser().resolve()
    fake, real = _name_sets(fake_names, real_names)
    raw = _read_table(file)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in ("path", "label") if c not in raw.columns]
    if missing:
        raise DataError(
            f"{file}: missing column(s) {missing}; found {list(raw.columns)}. "
            f"A manifest needs at least 'path' and 'label'."
        )
    if raw.empty:
        raise DataError(f"{file}: the manifest has no rows")
    out = pd.DataFrame(
        {
            "path": _resolve_paths(raw["path"], file),
            "label": _parse_labels(raw["label"], file, fake, real),
        }
    )
    out["source"] = _text_column(raw, "source", default=file.parent.name)
    out["group"] = _text_column(raw, "group", default=out["source"])
    out = out[list(MANIFEST_COLUMNS)]
    if "split" in raw.columns:
        out["split"] = _parse_splits(raw["split"], file)
    return _finish(out, str(file))


def _read_table(file: Path) -> pd.DataFrame:
    """Read a CSV (every cell as text) or a Parquet file."""
    suffix = file.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{file}: unsupported manifest type {suffix!r}; use .csv or .parquet")
    if not file.is_file():
        raise DataError(f"manifest not found: {file}")
    try:
        if suffix == ".csv":
            return pd.read_csv(file, dtype=str, keep_default_na=False, skipinitialspace=True)
        return pd.read_parquet(file)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{file}: cannot read the manifest: {exc}") from exc


def _resolve_paths(values: pd.Series, file: Path) -> list[str]:
    """Make every path absolute, taking relative ones from the manifest's folder."""
    base = file.parent
    out: list[str] = []
    empty: list[int] = []
    for row, value in enumerate(values, start=1):
        text = "" if _is_missing(value) else str(value).strip()
        if not text:
            empty.append(row)
            continue
        out.append(str((base / Path(text).expanduser()).resolve()))
    if empty:
        raise DataError(f"{file}: empty path in {len(empty)} row(s), e.g. rows {empty[:5]}")
    return out


def _is_missing(value: Any) -> bool:
    """True for None, NaN and pandas NA."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _label_value(value: Any, fake: frozenset[str], real: frozenset[str]) -> int | None:
    """Map one label cell to 0/1, or None when it is not a recognised label."""
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer, float, np.floating)):
        return int(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    if text in ("1", "true") or text in fake:
        return 1
    if text in ("0", "false") or text in real:
        return 0
    return None


def _parse_labels(
    values: pd.Series, file: Path, fake: frozenset[str], real: frozenset[str]
) -> np.ndarray:
    """Turn a label column into an int64 array of 0/1, listing bad values when there are any."""
    labels = [_label_value(v, fake, real) for v in values]
    bad = [
        (row, v)
        for row, (v, lab) in enumerate(zip(values, labels, strict=True), start=1)
        if lab is None
    ]
    if bad:
        shown = ", ".join(f"row {row}: {value!r}" for row, value in bad[:_MAX_BAD_SHOWN])
        raise DataError(
            f"{file}: {len(bad)} label(s) not recognised ({shown}"
            f"{', ...' if len(bad) > _MAX_BAD_SHOWN else ''}). Use 0/1, true/false, or one of "
            f"{sorted(fake)} (fake) / {sorted(real)} (real). Rows count from 1 after the header."
        )
    return np.asarray(labels, dtype=np.int64)


def _text_column(raw: pd.DataFrame, name: str, default: str | pd.Series) -> list[str]:
    """A string column from ``raw``, with missing or blank cells taken from ``default``."""
    defaults = list(default) if isinstance(default, pd.Series) else [default] * len(raw)
    if name not in raw.columns:
        return [str(d) for d in defaults]
    out = []
    for value, fallback in zip(raw[name], defaults, strict=True):
        text = "" if _is_missing(value) else str(value).strip()
        out.append(text or str(fallback))
    return out


def _parse_splits(values: pd.Series, file: Path) -> list[str]:
    """Check a split column holds only train/val/test (case-insensitive)."""
    splits = ["" if _is_missing(v) else str(v).strip().lower() for v in values]
    bad = [(row, v) for row, v in enumerate(splits, start=1) if v not in SPLITS]
    if bad:
        shown = ", ".join(f"row {row}: {value!r}" for row, value in bad[:_MAX_BAD_SHOWN])
        raise DataError(f"{file}: {len(bad)} split value(s) not one of {list(SPLITS)} ({shown})")
    return splits


def _finish(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Sort by path, drop duplicate paths and set the column types."""
    df = df.sort_values("path", kind="mergesort").reset_index(drop=True)
    dup = df["path"].duplicated(keep=False)
    if dup.any():
        conflicting = df[dup].groupby("path")["label"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            raise DataError(
                f"{origin}: {len(conflicting)} path(s) listed as both real and fake, "
                f"e.g. {list(conflicting.index[:3])}"
            )
        n_extra = int(df["path"].duplicated().sum())
        logger.warning("%s: dropped %d duplicate rows of the same path", origin, n_extra)
        df = df.drop_duplicates("path", keep="first").reset_index(drop=True)
    df["label"] = df["label"].astype(np.int64)
    for column in ("path", "group", "source", "split"):
        if column in df.columns:
            df[column] = df[column].astype(str)
    return df


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _label_counts(df: pd.DataFrame) -> dict[str, int]:
    """``{"n", "real", "fake"}`` counts of a manifest slice."""
    n_fake = int((df["label"] == 1).sum())
    return {"n": len(df), "real": len(df) - n_fake, "fake": n_fake}


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Count images overall, per source and per split, as plain JSON-ready values.

    Args:
        df: A manifest (optionally with a ``split`` column).

    Returns:
        ``{"n", "n_real", "n_fake", "n_groups", "sources": {source: {"n", "real", "fake"}}}``
        plus ``"splits": {split: {"n", "real", "fake"}}`` when ``df`` has a ``split`` column.
    """
    counts = _label_counts(df)
    summary: dict[str, Any] = {
        "n": counts["n"],
        "n_real": counts["real"],
        "n_fake": counts["fake"],
        "n_groups": int(df["group"].nunique()) if "group" in df.columns else 0,
    }
    if "source" in df.columns:
        summary["sources"] = {
            str(name): _label_counts(part) for name, part in df.groupby("source", sort=True)
        }
    if "split" in df.columns:
        names = [*SPLITS, *sorted(set(map(str, df["split"])) - set(SPLITS))]
        summary["splits"] = {name: _label_counts(df[df["split"] == name]) for name in names}
    return summary
