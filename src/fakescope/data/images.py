"""Robust image loading: any file to 8-bit RGB, or a clear reason why not."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

if TYPE_CHECKING:  # pandas is loaded where tables are made, not by every command
    import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 120_000_000

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        # Listed so that they are attempted; without a decoder plugin they fail with a clear reason.
        ".heic",
        ".heif",
        ".avif",
    }
)

_NEEDS_PLUGIN = {".heic": "pillow-heif", ".heif": "pillow-heif", ".avif": "Pillow >= 11.3"}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_EXIF_ORIENTATION = 0x0112
# What PIL decoders raise on broken data. Image.open itself swallows some of these while it
# guesses the format, but plugins raise them again from load().
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
)
_DRAFT_SIZE = (64, 64)


class DataError(ValueError):
    """A problem with the user's data (folders, manifests, labels, splits) that they can fix."""


class ImageLoadError(Exception):
    """An image file that cannot be used, with a reason a person can act on.

    Attributes:
        path: The file that failed.
        reason: Why, in plain words (for example ``"file not found"``).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[str, str]]:
        # Keeps the two-argument constructor working across process boundaries.
        return (type(self), (self.path, self.reason))


# --------------------------------------------------------------------------------------------
# Mode conversion
# --------------------------------------------------------------------------------------------


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation and convert any PIL mode to 8-bit RGB.

    Choices:
        * ``1``, ``L``, ``P``, ``YCbCr``, ``HSV`` and ``CMYK`` use PIL's conversion. Adobe
          (inverted) CMYK JPEGs are already un-inverted by PIL's JPEG decoder; no ICC colour
          management is applied.
        * 16-bit modes (``I;16``, ``I;16B``, ``I;16L``) are scaled by their true depth,
          ``round(v / 257)``, so 65535 becomes 255 rather than clipping everything above 255.
        * ``I`` (32-bit int): the bit depth from a TIFF ``BitsPerSample`` tag when there is one,
          else 16 bits when all values fit in 0..65535 (16-bit PNG and TIFF open as ``I`` in many
          Pillow versions), else a min/max rescale.
        * ``F`` (float): values within 0..1 are taken as normalised and multiplied by 255;
          anything else is min/max rescaled (a constant image outside 0..1 becomes black). NaN
          becomes 0 and infinities are clipped.
        * ``LAB`` goes through LittleCMS to sRGB when available.
        * Anything with alpha or a transparency key (``RGBA``, ``LA``, ``PA``, ``P`` or ``L`` with
          ``transparency``) is composited onto a white background, so transparent areas do not
          turn black.

    Args:
        img: A loaded (or lazily loadable) PIL image.

    Returns:
        An RGB image. It may be ``img`` itself when no change was needed.
    """
    img = _apply_exif_orientation(img)
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_array_to_rgb(_scale_to_uint8(np.asarray(img), bits=16))
    if mode in ("I", "I;16S", "I;32", "I;32S"):
        return _grey_array_to_rgb(_int_to_uint8(np.asarray(img), _tiff_bits(img)))
    if mode == "F":
        return _grey_array_to_rgb(_float_to_uint8(np.asarray(img, dtype=np.float64)))
    if mode == "LAB":
        return _lab_to_rgb(img)
    if mode in _ALPHA_MODES or img.has_transparency_data:
        return _composite_on_white(img.convert("RGBA"))
    return img.convert("RGB")


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate or flip per the EXIF orientation tag; a broken EXIF block is ignored."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
    return img


def _grey_array_to_rgb(grey: np.ndarray) -> Image.Image:
    """Make an RGB image from a 2-D uint8 array."""
    return Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L").convert("RGB")


def _scale_to_uint8(arr: np.ndarray, bits: int) -> np.ndarray:
    """Scale unsigned integers of the given bit depth to 0..255 with rounding."""
    top = (1 << bits) - 1
    values = np.clip(arr.astype(np.int64), 0, top)
    return ((values * 255 + top // 2) // top).astype(np.uint8)


def _tiff_bits(img: Image.Image) -> int | None:
    """The BitsPerSample of a TIFF, or None for other formats."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(258)
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else None


def _int_to_uint8(arr: np.ndarray, bits: int | None) -> np.ndarray:
    """Map a signed or wide integer greyscale array to 0..255 (see ``to_rgb``)."""
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if bits is None and lo >= 0 and hi <= 0xFFFF:
        bits = 16
    if bits is not None and lo >= 0 and hi < (1 << bits):
        return _scale_to_uint8(arr, bits)
    return _minmax_to_uint8(arr.astype(np.float64), float(lo), float(hi))


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a float greyscale array to 0..255 (see ``to_rgb``)."""
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return _minmax_to_uint8(arr, lo, hi)


def _minmax_to_uint8(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Stretch ``lo..hi`` to 0..255; a constant image becomes black."""
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """Convert CIE L*a*b* to sRGB with LittleCMS, or PIL's channel copy without it."""
    try:
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(img, lab, srgb, outputMode="RGB")
    except (ImportError, OSError, ValueError) as exc:
        logger.debug("LittleCMS LAB conversion unavailable (%s); using PIL's convert", exc)
        return img.convert("RGB")
    return converted if converted is not None else img.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    """Flatten an RGBA image onto an opaque white background."""
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


# --------------------------------------------------------------------------------------------
# Loading and checking
# --------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """A short text for an exception, falling back to its type name."""
    text = str(exc).strip()
    return text or type(exc).__name__


def file_problem(path: str | os.PathLike[str], what: str = "an image file") -> str | None:
    """Why ``path`` cannot be read as ``what`` at all (missing, unreadable, a folder, empty), or
    None. The one wording for images, videos and provenance."""
    try:
        info = Path(path).stat()
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"is a directory, not {what}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def _check_file(path: Path) -> None:
    """Fail early, with a plain reason, on files that cannot hold an image."""
    problem = file_problem(path)
    if problem is not None:
        raise ImageLoadError(path, problem)


def _open_header(path: Path) -> Image.Image:
    """Open an image lazily (header only), mapping failures to ImageLoadError.

    PIL's own decompression-bomb guard stays on and is never touched: writing the process-wide
    ``Image.MAX_IMAGE_PIXELS``, even briefly, would switch the guard off for every other thread
    of a server. PIL refuses headers over twice that global here (about 179 million pixels by
    default); our own per-call ``max_pixels`` is applied by :func:`_check_size` right after,
    still before any pixel data is decoded.
    """
    try:
        return Image.open(path)
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory, not an image file") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, _unrecognised_reason(path)) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"possible decompression bomb: {exc}") from None
    except MemoryError:
        raise ImageLoadError(path, "not enough memory to read the image header") from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(path, f"truncated or corrupt image data: {_describe(exc)}") from None


def _unrecognised_reason(path: Path) -> str:
    """The reason for a file no installed decoder recognises, with a hint for HEIC/AVIF."""
    plugin = _NEEDS_PLUGIN.get(path.suffix.lower())
    if plugin is None:
        return "not a recognised image format"
    return f"not a recognised image format (no {path.suffix.lower()} decoder; install {plugin})"


def _check_size(path: Path, img: Image.Image, max_pixels: int | None) -> None:
    """Reject nonsense sizes and images over the pixel limit, from the header alone."""
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageLoadError(path, f"invalid image size {width}x{height}")
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageLoadError(
            path,
            f"image is {width}x{height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (possible decompression bomb)",
        )


MIN_SIDE = 8
MAX_ASPECT = 50.0


def check_dimensions(img: Image.Image, path: str | os.PathLike[str] = "<image>") -> None:
    """Reject images a detector cannot judge: tiny (a side under 8 px) or absurdly long (over 50:1).

    Loading such files is fine; scoring them is not (a 100000x10 strip resized to a 224 short side
    would need gigabytes), so the model-facing paths call this after :func:`load_image`.
    """
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageLoadError(
            path, f"image is too small to judge ({w}x{h}; under {MIN_SIDE} px on a side)"
        )
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageLoadError(path, f"absurd aspect ratio ({w}x{h}; over {MAX_ASPECT:.0f}:1)")


def _decode(img: Image.Image, path: Path, draft: bool) -> Image.Image:
    """Decode all pixel data of the first frame and convert it to RGB."""
    try:
        if draft and isinstance(img, JpegImagePlugin.JpegImageFile):
            # DCT-domain downscale: libjpeg still entropy-decodes every block, so truncation is
            # still caught, at a fraction of the cost of a full decode.
            img.draft("RGB", _DRAFT_SIZE)
        img.load()
        return to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"possible decompression bomb: {exc}") from None
    except MemoryError:
        raise ImageLoadError(path, "not enough memory to decode the image") from None
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(path, f"truncated or corrupt image data: {_describe(exc)}") from None


def _load(path: str | os.PathLike[str], max_pixels: int | None, draft: bool) -> Image.Image:
    """Shared body of ``load_image`` and ``check_image``."""
    file = Path(path)
    _check_file(file)
    img = _open_header(file)
    rgb: Image.Image | None = None
    try:
        _check_size(file, img, max_pixels)
        rgb = _decode(img, file, draft)
        if rgb is img and getattr(img, "fp", None) is not None:
            # Multi-frame formats keep their file open; detach the pixels from it.
            rgb = img.copy()
        return rgb
    finally:
        if rgb is not img:
            img.close()


def load_image(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Load an image file as 8-bit RGB, or explain why it cannot be used.

    The pixel count is checked from the header before any pixel data is decoded. Animated images
    give their first frame. Truncated files are errors (``LOAD_TRUNCATED_IMAGES`` stays off).

    Args:
        path: The image file.
        max_pixels: Refuse images with more pixels than this (``None``: no limit of ours). It
            applies to this call only, so threads with different limits do not affect each
            other. PIL's own guard stays on as well: headers over twice its process-wide
            ``Image.MAX_IMAGE_PIXELS`` (about 179 million pixels by default) are refused
            whatever ``max_pixels`` says; an application that needs larger images sets that
            global once at start-up, never per call.

    Returns:
        The decoded image in mode ``RGB``, EXIF orientation applied.

    Raises:
        ImageLoadError: With a reason such as ``"file not found"``, ``"permission denied"``,
            ``"empty file (0 bytes)"``, ``"not a recognised image format"``,
            ``"truncated or corrupt image data: ..."`` or an over-the-limit size.
    """
    return _load(path, max_pixels, draft=False)


@dataclass
class Decoded:
    """One decoded item: the model input (or the image), its size, or why it failed."""

    x: Any = None
    error: str | None = None
    width: int | None = None
    height: int | None = None


def decode_item(
    path: str,
    transform: Callable[[Image.Image], Any] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    perturb: Callable[[Image.Image], Image.Image] | None = None,
) -> Decoded:
    """The one item decoder: load, (perturb,) check and transform one file; failures are data.

    Used by the data loaders of training and scoring and by the predictor's decode threads, so a
    bad file reads the same everywhere. Without ``transform`` the item is the RGB array.

    Args:
        path: the image file.
        transform: PIL image to model input (None: ``np.asarray`` of the image).
        max_pixels: decompression-bomb limit.
        perturb: applied to the decoded image before the checks and the transform (robustness).
    """
    out = Decoded()
    try:
        img = load_image(path, max_pixels=max_pixels)
        out.width, out.height = img.size
        if perturb is not None:
            img = perturb(img)
        check_dimensions(img, path)
        out.x = transform(img) if transform else np.asarray(img)
    except ImageLoadError as e:
        out.error = e.reason
    except Exception as e:  # a failure on odd input must not stop the batch
        what = "perturb or preprocess" if perturb is not None else "preprocess"
        out.error = f"could not {what}: {type(e).__name__}: {e}"
    return out


def check_image(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> str | None:
    """Check that a file decodes completely, without keeping the pixels.

    JPEGs are decoded at reduced scale (``draft``), which still reads all the compressed data, so
    truncation is found at a fraction of the cost.

    Args:
        path: The image file.
        max_pixels: As in ``load_image``.

    Returns:
        ``None`` when the file is a usable image, else the reason it is not.
    """
    try:
        _load(path, max_pixels, draft=True)
    except ImageLoadError as exc:
        return exc.reason
    return None


# --------------------------------------------------------------------------------------------
# Whole tables
# --------------------------------------------------------------------------------------------


def _check_many(paths: list[str], max_pixels: int | None, workers: int) -> Iterator[str | None]:
    """Yield ``check_image`` results in the order of ``paths``."""
    if workers <= 0 or len(paths) < 2:
        yield from (check_image(p, max_pixels) for p in paths)
        return
    chunksize = max(1, min(64, len(paths) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(check_image, paths, itertools.repeat(max_pixels), chunksize=chunksize)


def _with_progress(results: Iterator[str | None], total: int, progress: bool) -> Iterator:
    """Wrap an iterator in a tqdm bar when asked to and stderr is a terminal."""
    if not (progress and sys.stderr.isatty()):
        return results
    from tqdm import tqdm

    return iter(tqdm(results, total=total, desc="checking images", unit="img"))


def verify_files(
    df: pd.DataFrame,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table of image files into those that decode and those that do not.

    Args:
        df: A table with at least a ``path`` column (a manifest, for instance).
        max_pixels: As in ``load_image``.
        workers: Processes to check files in; 0 checks them in this process.
        progress: Show a progress bar (only when stderr is a terminal).

    Returns:
        ``(good, skipped)``: ``good`` holds the usable rows of ``df`` in their original order with
        all columns and a fresh index; ``skipped`` has the columns ``path``, ``label`` (copied, or
        NA when ``df`` has none) and ``reason``.

    Raises:
        DataError: When ``df`` has no ``path`` column.
    """
    if "path" not in df.columns:
        raise DataError(f"cannot verify files: no 'path' column (columns: {list(df.columns)})")
    paths = [str(p) for p in df["path"]]
    results = _with_progress(_check_many(paths, max_pixels, workers), len(paths), progress)
    reasons = list(results)
    bad = np.array([r is not None for r in reasons], dtype=bool)
    good = df.loc[~bad].reset_index(drop=True)
    skipped = _skipped_table(df, bad, reasons)
    if bad.any():
        logger.warning("skipped %d of %d files that do not load as images", bad.sum(), len(df))
    return good, skipped


def _skipped_table(df: pd.DataFrame, bad: np.ndarray, reasons: list[str | None]) -> pd.DataFrame:
    """Build the ``path, label, reason`` table of the rows flagged in ``bad``."""
    import pandas as pd

    rows = df.loc[bad]
    if "label" in df.columns:
        labels = rows["label"].reset_index(drop=True)
    else:
        labels = pd.Series(pd.array([pd.NA] * len(rows), dtype="Int64"))
    return pd.DataFrame(
        {
            "path": [str(p) for p in rows["path"]],
            "label": labels,
            "reason": [r for r in reasons if r is not None],
        }
    )
