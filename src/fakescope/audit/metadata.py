"""Per-file metadata read from image headers: format, size, JPEG quality, subsampling, EXIF, mode.

Nothing here decodes pixels: PIL parses the header (and, for JPEG, the quantisation tables and the
frame header) when a file is opened, which is fast enough for tens of thousands of files. A file
that cannot be read becomes a row whose ``error`` column says why, so one bad file never stops an
audit.

JPEG quality is estimated the way libjpeg (IJG) builds its tables: quality ``q`` scales the
standard luminance table (ITU-T T.81, Annex K) by ``5000 // q`` percent below 50 and ``200 - 2q`` from 50 on,
rounds and clamps to 1..255. The estimate is the ``q`` in 1..100 whose scaled table is closest
(mean absolute difference) to the file's luminance table; ``jpeg_table_error`` keeps that distance
so that non-IJG tables (cameras, Photoshop) can be told apart: it is 0 for a libjpeg/Pillow file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

logger = logging.getLogger(__name__)

# ITU-T T.81 Annex K.1 luminance quantisation table, natural (row-major) order.
STD_LUMINANCE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
).reshape(-1)

SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
EXIF_MAKE_TAG = 0x010F
EXIF_MODEL_TAG = 0x0110

NUMERIC_FEATURES = (
    "width",
    "height",
    "aspect",
    "megapixels",
    "jpeg_quality",
    "bytes_per_pixel",
)
CATEGORICAL_FEATURES = (
    "format",
    "subsampling",
    "exif",
    "camera_make",
    "mode",
    "icc_profile",
    "progressive",
)
FEATURE_COLUMNS = (
    "path",
    "format",
    "width",
    "height",
    "aspect",
    "megapixels",
    "file_bytes",
    "bytes_per_pixel",
    "mode",
    "jpeg_quality",
    "jpeg_table_error",
    "subsampling",
    "progressive",
    "exif",
    "camera_make",
    "camera_model",
    "icc_profile",
    "error",
)

_OPEN_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)


def ijg_table(quality: int, base: np.ndarray = STD_LUMINANCE_TABLE) -> np.ndarray:
    """The quantisation table libjpeg builds for ``quality`` from ``base`` (baseline, 1..255).

    Args:
        quality: JPEG quality, 1..100.
        base: The standard table to scale (default: luminance).

    Returns:
        A float array of the scaled table, same shape as ``base``.
    """
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q  # integer arithmetic, as in jcparam.c
    return np.clip((base.astype(np.int64) * scale + 50) // 100, 1, 255).astype(np.float64)


_IJG_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])


def estimate_jpeg_quality(table: Sequence[int] | np.ndarray) -> tuple[int, float]:
    """Estimate the IJG quality that produced a luminance quantisation table.

    Args:
        table: 64 values in natural (row-major) order, as ``PIL`` gives ``img.quantization[0]``.

    Returns:
        ``(quality, error)``: the closest quality in 1..100 and the mean absolute difference
        between ``table`` and that quality's IJG table (0.0 for a table libjpeg made).

    Raises:
        ValueError: If ``table`` does not hold 64 values.
    """
    values = np.asarray(list(table), dtype=np.float64).reshape(-1)
    if values.shape[0] != 64:
        raise ValueError(f"a quantisation table has 64 values, got {values.shape[0]}")
    errors = np.abs(_IJG_TABLES - values[None, :]).mean(axis=1)
    best = int(np.argmin(errors))
    return best + 1, float(errors[best])


def _subsampling(img: Image.Image) -> str:
    """``4:4:4``, ``4:2:2``, ``4:2:0``, ``grey`` or ``other`` for a JPEG image."""
    layers = getattr(img, "layers", 0)
    if layers == 1:
        return "grey"
    code = JpegImagePlugin.get_sampling(img)
    return SUBSAMPLING_NAMES.get(code, "other")


def _jpeg_fields(img: Image.Image) -> dict[str, Any]:
    """Quality, table error, subsampling and progressive flag of a JPEG file."""
    out: dict[str, Any] = {"subsampling": _subsampling(img)}
    tables = getattr(img, "quantization", None) or {}
    if 0 in tables:
        out["jpeg_quality"], out["jpeg_table_error"] = estimate_jpeg_quality(tables[0])
    out["progressive"] = bool(img.info.get("progressive") or img.info.get("progression"))
    return out


def _exif_fields(img: Image.Image) -> dict[str, Any]:
    """EXIF presence and camera make/model (empty strings when absent)."""
    try:
        exif = img.getexif()
    except _OPEN_ERRORS:
        return {"exif": False, "camera_make": "", "camera_model": ""}
    make = str(exif.get(EXIF_MAKE_TAG, "") or "").strip("\x00 ").strip()
    model = str(exif.get(EXIF_MODEL_TAG, "") or "").strip("\x00 ").strip()
    return {"exif": len(exif) > 0, "camera_make": make, "camera_model": model}


def _empty_row(path: str) -> dict[str, Any]:
    """A row with every feature missing."""
    row: dict[str, Any] = dict.fromkeys(FEATURE_COLUMNS)
    row.update(
        path=path,
        format="",
        mode="",
        subsampling=None,
        progressive=None,
        exif=False,
        camera_make="",
        camera_model="",
        icc_profile=False,
        error=None,
    )
    return row


def _header_fields(img: Image.Image, file_bytes: int) -> dict[str, Any]:
    """The features that every format has, from an opened image."""
    width, height = img.size
    pixels = max(width * height, 1)
    return {
        "format": (img.format or "unknown").upper(),
        "width": int(width),
        "height": int(height),
        "aspect": float(width) / float(max(height, 1)),
        "megapixels": width * height / 1e6,
        "bytes_per_pixel": file_bytes / pixels,
        "mode": img.mode,
        "icc_profile": bool(img.info.get("icc_profile")),
    }


def read_features(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one file's metadata features from its header.

    Args:
        path: An image file.

    Returns:
        A dict with the keys of :data:`FEATURE_COLUMNS`. On failure every feature is missing and
        ``error`` holds the reason; it never raises for a bad file.
    """
    row = _empty_row(str(path))
    try:
        row["file_bytes"] = int(Path(path).stat().st_size)
        with Image.open(path) as img:
            row.update(_header_fields(img, row["file_bytes"]))
            if row["format"] == "JPEG":
                row.update(_jpeg_fields(img))
            row.update(_exif_fields(img))
    except FileNotFoundError:
        row["error"] = "file not found"
    except UnidentifiedImageError:
        row["error"] = "not a recognised image format"
    except Image.DecompressionBombError as exc:
        row["error"] = f"possible decompression bomb: {exc}"
    except _OPEN_ERRORS as exc:
        row["error"] = f"cannot read header: {type(exc).__name__}: {exc}"
    return row


def _read_all(paths: Sequence[str], workers: int) -> Iterable[dict[str, Any]]:
    """Read every file's features, in threads when ``workers > 0`` (header reads are I/O bound)."""
    if workers <= 0 or len(paths) < 2:
        return [read_features(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_features, paths, chunksize=64))


def extract_features(df: pd.DataFrame, workers: int = 0) -> pd.DataFrame:
    """Metadata features for every row of a manifest.

    Args:
        df: A manifest with ``path`` and ``label`` (``source``, ``group`` and ``split`` are kept
            when present).
        workers: Threads for reading headers; 0 reads in this thread.

    Returns:
        One row per manifest row, in the same order: the manifest's columns followed by the
        feature columns (see :data:`FEATURE_COLUMNS`); ``error`` is None for readable files.
    """
    paths = [str(p) for p in df["path"]]
    feats = pd.DataFrame(list(_read_all(paths, workers)), columns=list(FEATURE_COLUMNS))
    keep = [c for c in ("label", "source", "group", "split") if c in df.columns]
    out = pd.concat([df[["path"]].reset_index(drop=True), df[keep].reset_index(drop=True)], axis=1)
    out = pd.concat([out, feats.drop(columns=["path"])], axis=1)
    for column in ("exif", "icc_profile"):
        out[column] = out[column].fillna(False).astype(bool)
    bad = out["error"].notna()
    if bad.any():
        logger.warning("could not read the header of %d of %d files", int(bad.sum()), len(out))
    return out
