"""The development corpus: the dev set, the multi-generator pool and video frames as one manifest.

Every image goes through the held-out benchmark's normalisation (short side 512, centre square,
JPEG 90), so the classes differ in nothing but their pixels' origin. ``manifest.csv`` has:

* ``path, label, source, group``: as everywhere (``source`` is the generator or the photo
  collection; ``group`` the prompt, subject or clip, so near-duplicates share it);
* ``era``: ``dev`` (the shared ``sd14-coco-imagenet`` set), ``2022`` and ``2024+`` (the pool's
  two parts), ``video`` (frames of the ``video-spotdiff`` clips);
* ``scene``: for video frames, the scene shared by an AI clip and a real clip;
* ``holdout``: ``test`` for the real photos that the generalisation protocol keeps out of every
  training set (a fixed share of each real source, chosen by a hash of the group, so the same
  photos are held out on every machine); ``dev-test`` for the dev set's own test split; empty for
  the rest.

Built once by :func:`build_corpus`; read by :func:`read_corpus`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fakescope.data.manifest import DataError

logger = logging.getLogger(__name__)

#: Share of each real source held out of every training set of the protocol.
HELD_OUT_SHARE = 0.4
#: The generators of 2024-2026 the protocol leaves out one at a time.
MODERN_GENERATORS: tuple[str, ...] = (
    "nano-banana-pro",
    "gemini-2.5-flash-image",
    "gpt-4o-image",
    "nano-banana-edit",
)
COLUMNS = ("path", "label", "source", "group", "era", "scene", "holdout")


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (the same on every machine)."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def excluded(corpus: pd.DataFrame, exclude: Sequence[str]) -> np.ndarray:
    """Rows named by ``exclude``: a source (``coco``), or a whole era (``era:2022``)."""
    eras = [e.removeprefix("era:") for e in exclude if e.startswith("era:")]
    sources = [e for e in exclude if not e.startswith("era:")]
    return (
        corpus["source"].isin(sources).to_numpy() | corpus["era"].astype(str).isin(eras).to_numpy()
    )


def resampling_units(df: pd.DataFrame) -> pd.Series:
    """The unit that near-duplicates share, per row: ``source/group`` where a source has at least
    ten groups, else ``source/file name`` (a source that is one repository has one group).

    Held-out photos are chosen, and intervals resample, by these units.
    """
    source = df["source"].astype(str)
    grouped = df.groupby("source")["group"].transform(lambda g: g.astype(str).nunique()) >= 10
    names = df["path"].map(lambda p: Path(str(p)).name)
    return source + "/" + df["group"].astype(str).where(grouped, names)


def held_out_reals(df: pd.DataFrame, share: float = HELD_OUT_SHARE) -> pd.Series:
    """Which real images the protocol holds out: about ``share`` of each real source, chosen by
    :func:`resampling_units` (the same photos on every machine)."""
    real = df["label"].astype(str).isin(["real", "0"])
    units = resampling_units(df)
    return real & units.map(lambda u: unit_hash(u) < share)


def _dev_rows(dev_dir: Path, seed: int) -> pd.DataFrame:
    """The dev set with its seeded split (``dev-test`` rows are the in-distribution test)."""
    from fakescope.data.splits import make_splits

    manifest = dev_dir / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{dev_dir}: no manifest.csv (expected the shared sd14-coco-imagenet set)")
    dev = pd.read_csv(manifest)
    dev["path"] = [str(dev_dir / p) for p in dev["path"]]
    dev["group"] = dev["source"]
    split = make_splits(dev.assign(label=(dev["label"] == "fake").astype(int)), seed=seed)["split"]
    dev["era"] = "dev"
    dev["dev_split"] = split.to_numpy()
    return dev


def _pool_rows(pool_dir: Path) -> pd.DataFrame:
    from fakescope.data.protocol_sets import read_pool

    pool = read_pool(pool_dir)
    pool["era"] = pool["era"].astype(str)
    return pool


def _video_rows(video_dir: Path, out: Path, skipped: list[dict]) -> pd.DataFrame:
    from fakescope.data.protocol_sets import spotdiff_rows

    rows = pd.DataFrame(spotdiff_rows(video_dir, out / "frames", skipped))
    if rows.empty:
        return rows
    rows["source"] = "video-" + rows["label"]
    rows["era"] = "video"
    return rows


def build_corpus(
    out: str | os.PathLike[str],
    dev_dir: str | os.PathLike[str] | None = None,
    pool_dir: str | os.PathLike[str] | None = None,
    video_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Normalise the given sources into ``out/images`` and write ``out/manifest.csv``.

    Args:
        out: the corpus folder.
        dev_dir: the shared ``sd14-coco-imagenet`` folder (with ``manifest.csv``), or None.
        pool_dir: the pool built by ``build_pool.py``, or None.
        video_dir: ``video-spotdiff`` (``fake/`` and ``real/`` clips of the same scenes), or None.
        workers: processes for normalising.
        seed: the dev set's split seed.

    Returns:
        The manifest (absolute paths). Files that could not be read are left out and listed
        with their reason in ``out/skipped.csv``.

    Raises:
        DataError: no source given, or a source folder without its manifest.
    """
    from fakescope.data.normalise import normalise_dataset

    if dev_dir is None and pool_dir is None and video_dir is None:
        raise DataError("build_corpus needs at least one of the dev set, the pool or the videos")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    parts = []
    if dev_dir is not None:
        parts.append(_dev_rows(Path(dev_dir), seed))
    if pool_dir is not None:
        parts.append(_pool_rows(Path(pool_dir)))
    if video_dir is not None:
        parts.append(_video_rows(Path(video_dir), out, skipped))
    df = pd.concat(parts, ignore_index=True)
    df = normalise_dataset(df, out / "images", workers=workers)
    failed = df["path"] == df["original_path"]
    failed &= ~df["path"].astype(str).str.startswith(str(out))
    skipped += [{"path": p, "reason": "could not be normalised"} for p in df.loc[failed, "path"]]
    df = df[~failed].reset_index(drop=True)
    df = _finish(df)
    _write(df, out, skipped)
    return df


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the protocol's columns: ``scene``, ``holdout``."""
    df = df.copy()
    df["scene"] = df["scene"].fillna("") if "scene" in df.columns else ""
    held = held_out_reals(df) & (df["era"] != "video")
    df["holdout"] = ""
    df.loc[held, "holdout"] = "test"
    if "dev_split" in df.columns:
        df.loc[df["dev_split"] == "test", "holdout"] = "dev-test"
    return df


def _write(df: pd.DataFrame, out: Path, skipped: list[dict]) -> None:
    from fakescope.utils import atomic_write_text

    rel = df.copy()
    rel["path"] = [os.path.relpath(p, out) for p in rel["path"]]
    cols = [c for c in (*COLUMNS, "original_path") if c in rel.columns]
    atomic_write_text(out / "manifest.csv", rel[cols].to_csv(index=False))
    if skipped:
        atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped).to_csv(index=False))
        logger.warning(
            "%d file(s) left out of the corpus: see %s", len(skipped), out / "skipped.csv"
        )
    summary = df.groupby(["era", "label"]).size().to_dict()
    logger.info("corpus in %s: %s", out, summary)


def read_corpus(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A corpus ``manifest.csv`` (or its folder) with absolute paths and labels as 0/1.

    Raises:
        FileNotFoundError: no manifest there.
        DataError: a manifest without the corpus columns.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no corpus manifest at {path}; build it with `fakescope corpus OUT --dev DEV "
            "--pool POOL --video VIDEO`"
        )
    df = pd.read_csv(path, keep_default_na=False)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise DataError(f"{path} is not a corpus manifest: missing column(s) {sorted(missing)}")
    df["path"] = [p if Path(p).is_absolute() else str(path.parent / p) for p in df["path"]]
    df["label"] = (df["label"].astype(str).str.lower() == "fake").astype(int)
    return df
