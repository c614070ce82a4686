"""Reading a file's provenance: :func:`read_provenance`, which never raises.

C2PA is read from any file ``c2pa-python`` supports; for images, Pillow's header gives EXIF,
XMP and PNG text, and the decoded pixels the watermark. Each reader's failure is recorded in
:attr:`Provenance.error <fakescope.provenance.evidence.Provenance.error>`, not raised.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from fakescope.data.images import file_problem
from fakescope.data.video.media import VIDEO_EXTENSIONS
from fakescope.provenance.c2pa import read_c2pa
from fakescope.provenance.evidence import Evidence, Provenance, describe
from fakescope.provenance.metadata import exif_evidence, png_evidence, xmp_evidence
from fakescope.provenance.summary import summarise
from fakescope.provenance.watermark import watermark_eligible, watermark_evidence

logger = logging.getLogger(__name__)


def read_provenance(
    path: str | os.PathLike, watermark: bool = True, video: bool | None = None
) -> Provenance:
    """Read the provenance evidence of one file. Never raises.

    Only headers and metadata blocks are read, except for the watermark check, which decodes
    the pixels of images between 256x256 and 2048x2048 pixels in area. On a PNG, text chunks
    stored after the pixel data are read only when the pixels are decoded for that check.

    Args:
        path: The file (any image format Pillow opens; C2PA is also read from the other formats
            ``c2pa-python`` supports, such as HEIC, AVIF and MP4).
        watermark: Also look for Stable Diffusion's invisible watermark: a full decode of the
            pixels plus about 10 ms per megapixel (a 512x512 PNG takes about 8 ms in all).
        video: The file is a video container (MP4, MOV, WebM, MKV, AVI): only its C2PA manifest
            is read, since the image readers (EXIF, XMP, PNG text, watermark) do not apply to
            it, and their not applying is no error. None: decided by the file's extension
            (animated GIF and WebP files are images here).

    Returns:
        The evidence, a one-line summary, and the readers that failed in ``error``.
    """
    if video is None:
        video = Path(path).suffix.lower() in VIDEO_EXTENSIONS
    try:
        return _read(Path(path), watermark, video)
    except Exception as exc:  # the promise is "never raises": this is the last resort
        logger.debug("provenance of %s failed", path, exc_info=True)
        reason = f"could not read provenance: {describe(exc)}"
        return Provenance(False, [], f"provenance could not be read ({reason})", reason)


def _read(file: Path, watermark: bool, video: bool = False) -> Provenance:
    """The body of :func:`read_provenance`."""
    problem = file_problem(file, "a file")
    if problem is not None:
        return Provenance(False, [], f"provenance could not be read ({problem})", problem)
    items: list[Evidence] = []
    errors: list[str] = []
    _guard("c2pa", errors, read_c2pa, file, items, errors)
    if not video:  # EXIF, XMP, PNG text and the watermark are image metadata
        _guard("image", errors, _read_image, file, watermark, items, errors)
    return Provenance(
        declared_ai=any(item.ai for item in items),
        evidence=items,
        summary=summarise(items, video),
        error="; ".join(errors) or None,
    )


def _guard(name: str, errors: list[str], reader: Any, *args: Any) -> bool:
    """Run one reader; an exception becomes an entry in ``errors`` (and False)."""
    try:
        reader(*args)
    except Exception as exc:
        logger.debug("%s reader failed", name, exc_info=True)
        errors.append(f"{name}: {describe(exc)}")
        return False
    return True


def _read_image(file: Path, watermark: bool, items: list[Evidence], errors: list[str]) -> None:
    """Add the evidence Pillow can see: EXIF, XMP/IPTC, PNG text and the watermark."""
    try:
        img = Image.open(file)
    except UnidentifiedImageError:
        if not items:  # a format c2pa read needs no image reader
            errors.append("image: not a recognised image format")
        return
    except Image.DecompressionBombError as exc:
        errors.append(f"image: over Pillow's pixel limit, metadata not read: {describe(exc)}")
        return
    except Exception as exc:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        errors.append(f"image: truncated or corrupt header: {describe(exc)}")
        return
    with img:
        seen_png: set[str] = set()
        _guard("exif", errors, exif_evidence, img, items)
        _guard("xmp", errors, xmp_evidence, img, items)
        is_png = img.format == "PNG"
        if is_png:
            _guard("png", errors, png_evidence, img.info, seen_png, items)
        if watermark and watermark_eligible(img):
            decoded = _guard("watermark", errors, watermark_evidence, img, items, errors)
            if is_png and decoded:
                # The pixels are decoded now, so text chunks after them cost nothing more.
                _guard("png", errors, png_evidence, img.text, seen_png, items)
