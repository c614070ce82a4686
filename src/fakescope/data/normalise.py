"""Format parity: push every image through one pipeline (size, crop, JPEG quality) before use.

When an audit finds a format or size shortcut (say, every fake is a 512 px PNG and every real a
large JPEG), ``--normalise`` removes it: each image is resized so its short side is ``size``,
centre-cropped to ``size`` x ``size`` and JPEG-encoded at ``quality`` (4:2:0, no metadata), so
both classes reach the detector with the same size, format and compression.

Two ways in:

* :class:`Normalise` is a PIL-to-PIL transform, for composing in front of any transform in the
  data path (``Compose([Normalise(512, 90), eval_transform(pre)])``).
* :func:`normalise_dataset` writes normalised copies once (cached by content hash and parameters)
  and returns a manifest that points at them, so that training, evaluation and audits use the
  normalised files without any other change. :func:`normalise_data_arg` and
  :func:`normalise_train_config` wrap it for the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from fakescope.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 512
DEFAULT_QUALITY = 90
PIPELINE_VERSION = 1
_SUBSAMPLING_420 = 2
_CHUNK = 1 << 20


def _resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the short side is ``size`` (bicubic, antialiased), keeping the aspect."""
    short = min(img.size)
    if short == size:
        return img
    scale = size / short
    width = max(size, round(img.width * scale))
    height = max(size, round(img.height * scale))
    return img.resize((width, height), Image.Resampling.BICUBIC)


def _centre_square(img: Image.Image, size: int) -> Image.Image:
    """The central ``size`` x ``size`` crop."""
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def normalised_jpeg_bytes(
    img: Image.Image, size: int = DEFAULT_SIZE, quality: int = DEFAULT_QUALITY
) -> bytes:
    """The normalised image as JPEG bytes (short side ``size``, centre square, ``quality``).

    Args:
        img: Any PIL image (converted to RGB).
        size: Output side in pixels.
        quality: JPEG quality, 1..100.

    Returns:
        A baseline JPEG, 4:2:0, without EXIF or ICC profile.

    Raises:
        ValueError: For a size under 8 or a quality outside 1..100.
    """
    if size < 8:
        raise ValueError(f"normalise size must be at least 8 pixels, got {size}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be within 1..100, got {quality}")
    rgb = img.convert("RGB")
    square = _centre_square(_resize_short_side(rgb, size), size)
    buf = io.BytesIO()
    square.save(buf, format="JPEG", quality=int(quality), subsampling=_SUBSAMPLING_420)
    return buf.getvalue()


def normalise_image(
    img: Image.Image, size: int = DEFAULT_SIZE, quality: int = DEFAULT_QUALITY
) -> Image.Image:
    """Normalise one image: short side to ``size``, centre crop square, JPEG at ``quality``.

    Args:
        img: Any PIL image.
        size: Output side in pixels.
        quality: JPEG quality.

    Returns:
        The decoded JPEG: mode RGB, ``size`` x ``size``, ``format == "JPEG"``.
    """
    out = Image.open(io.BytesIO(normalised_jpeg_bytes(img, size, quality)))
    out.load()
    return out


@dataclasses.dataclass(frozen=True)
class Normalise:
    """A picklable PIL-to-PIL transform applying :func:`normalise_image`.

    Attributes:
        size: Output side in pixels.
        quality: JPEG quality.
    """

    size: int = DEFAULT_SIZE
    quality: int = DEFAULT_QUALITY

    def __call__(self, img: Image.Image) -> Image.Image:
        return normalise_image(img, self.size, self.quality)


@dataclasses.dataclass(frozen=True)
class NormalisedTransform:
    """Normalise, then apply ``transform`` (e.g. a detector's eval transform); picklable.

    Attributes:
        transform: The transform to run on the normalised image.
        size: Output side in pixels.
        quality: JPEG quality.
    """

    transform: Callable[[Image.Image], Any]
    size: int = DEFAULT_SIZE
    quality: int = DEFAULT_QUALITY

    def __call__(self, img: Image.Image) -> Any:
        return self.transform(normalise_image(img, self.size, self.quality))


# --------------------------------------------------------------------------------------------
# Whole datasets
# --------------------------------------------------------------------------------------------


def default_normalised_dir() -> Path:
    """``$FAKESCOPE_CACHE/normalised`` (default ``~/.cache/fakescope/normalised``)."""
    from fakescope.utils import cache_dir

    return cache_dir("normalised")


def _digest(path: str) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _target(out_dir: Path, digest: str, size: int, quality: int) -> Path:
    """Where the normalised copy of a file with ``digest`` lives."""
    name = f"{digest[:32]}-s{size}-q{quality}-v{PIPELINE_VERSION}.jpg"
    return out_dir / digest[:2] / name


def _normalise_file(job: tuple[str, str, int, int]) -> tuple[str | None, str | None]:
    """Write one normalised copy (if not cached); return ``(new path, None)`` or ``(None, why)``."""
    path, out_dir, size, quality = job
    try:
        target = _target(Path(out_dir), _digest(path), size, quality)
        if not target.is_file():
            data = normalised_jpeg_bytes(load_image(path, DEFAULT_MAX_PIXELS), size, quality)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return str(target), None
    except ImageLoadError as exc:
        return None, exc.reason
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def normalise_dataset(
    df: pd.DataFrame,
    out_dir: str | os.PathLike[str] | None = None,
    size: int = DEFAULT_SIZE,
    quality: int = DEFAULT_QUALITY,
    workers: int = 0,
) -> pd.DataFrame:
    """Write normalised copies of every image and return a manifest that points at them.

    Copies are named by the sha256 of the source bytes plus the parameters, so re-runs (and
    identical files) reuse them. Files that fail to load keep their original path, so that the
    usual checks later report them with their reason.

    Args:
        df: A manifest with a ``path`` column (every other column is kept).
        out_dir: Cache folder for the copies (default :func:`default_normalised_dir`).
        size: Output side in pixels.
        quality: JPEG quality.
        workers: Processes; 0 works in this process.

    Returns:
        A copy of ``df`` with ``path`` replaced by the normalised file and ``original_path``
        added.
    """
    target = Path(out_dir) if out_dir is not None else default_normalised_dir()
    target.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(target), int(size), int(quality)) for p in df["path"]]
    if workers > 0 and len(jobs) > 1:
        chunksize = max(1, min(32, len(jobs) // (workers * 4)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_normalise_file, jobs, chunksize=chunksize))
    else:
        results = [_normalise_file(j) for j in jobs]
    out = df.copy()
    out["original_path"] = out["path"].astype(str)
    out["path"] = [new or old for (new, _), old in zip(results, out["original_path"], strict=True)]
    failed = [why for _, why in results if why]
    if failed:
        logger.warning("could not normalise %d file(s), e.g. %s", len(failed), failed[0])
    logger.info("normalised %d files to %dx%d JPEG q%d in %s", len(df), size, size, quality, target)
    return out


def _manifest_digest(df: pd.DataFrame) -> str:
    """A short digest of a manifest's content, for cache file names."""
    text = df.to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_normalised_manifest(
    df: pd.DataFrame, out_dir: Path, name: str, size: int, quality: int
) -> Path:
    """Save a normalised manifest (with its split column when present) as a CSV in ``out_dir``."""
    cols = [c for c in ("path", "label", "group", "source", "split") if c in df.columns]
    tag = _manifest_digest(df[cols])
    path = out_dir / "manifests" / f"{name}-normalised-s{size}-q{quality}-{tag}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df[cols].to_csv(path, index=False)
    return path


def normalise_data_arg(
    data: str | os.PathLike[str],
    size: int = DEFAULT_SIZE,
    quality: int = DEFAULT_QUALITY,
    out_dir: str | os.PathLike[str] | None = None,
    workers: int = 0,
) -> str:
    """Normalise a DATA argument (folder, manifest or splits file) into a manifest CSV path.

    The CSV keeps ``label``, ``group``, ``source`` and ``split``, so it can stand in for the
    original anywhere a DATA path is accepted (``train``, ``evaluate``, ``audit``).

    Args:
        data: A folder tree, a manifest or a ``splits.csv``.
        size: Output side in pixels.
        quality: JPEG quality.
        out_dir: Cache folder (default :func:`default_normalised_dir`).
        workers: Processes.

    Returns:
        The path of the normalised manifest, as a string.
    """
    from fakescope.data.manifest import build_manifest

    root = Path(out_dir) if out_dir is not None else default_normalised_dir()
    df = normalise_dataset(build_manifest(data), root, size, quality, workers)
    stem = Path(data).stem if Path(data).suffix.lower() in (".csv", ".parquet") else Path(data).name
    return str(write_normalised_manifest(df, root, stem or "data", size, quality))


def normalise_train_config(
    cfg: Any,
    size: int = DEFAULT_SIZE,
    quality: int = DEFAULT_QUALITY,
    out_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """A copy of a :class:`~fakescope.config.TrainConfig` that trains on normalised images.

    The split is made (or reused) on the original files first, exactly as ``train`` would, then
    the split manifest is normalised and passed on as ``cfg.splits``, so a normalised run and a
    plain run with the same seed use the same images in each split.

    Args:
        cfg: The training config.
        size: Output side in pixels.
        quality: JPEG quality.
        out_dir: Cache folder (default :func:`default_normalised_dir`).

    Returns:
        ``cfg.replace(splits=<normalised splits CSV>)``.
    """
    from fakescope.data.splits import load_dataset

    root = Path(out_dir) if out_dir is not None else default_normalised_dir()
    df = normalise_dataset(load_dataset(cfg), root, size, quality, cfg.workers)
    stem = Path(str(cfg.data)).stem or "data"
    path = write_normalised_manifest(df, root, stem, size, quality)
    logger.info("training on normalised images: %s", path)
    return cfg.replace(splits=str(path))
