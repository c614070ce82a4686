"""Simulated-generator fakes from real photos: re-synthesise them with a small conv autoencoder.

This applies the idea of the demo data set (:mod:`fakescope.demo.dataset`, after AutoGAN, Zhang,
Karaman & Chang 2019) to any folder of real photographs: a tiny autoencoder whose decoder upsamples
with transposed convolutions is trained for a few seconds on crops of the photos, then every photo
is passed through it. The outputs keep the photo's content but carry the checkerboard/upsampling
traces that generators leave, so they can be added to a training set as extra "fake" rows.

The autoencoder is fully convolutional, so a whole ``size`` x ``size`` image is re-synthesised in
one pass. Outputs are written as JPEG (quality 95 by default) so that, next to a data set whose real
and fake images are JPEG q95, the file format is not a shortcut; PNG is available too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fakescope.demo.autoencoder import _resynthesise, _train_autoencoder

logger = logging.getLogger(__name__)

FORMATS = {"jpeg": ".jpg", "png": ".png"}
_CHUNK = 8  # images per autoencoder pass (a 512 px image needs ~40 MB of activations)


def resynthesize_folder(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    size: int = 256,
    seed: int = 0,
    train_steps: int = 200,
    *,
    train_crop: int = 96,
    fmt: str = "jpeg",
    quality: int = 95,
) -> list[Path]:
    """Train the demo's autoencoder on crops of ``paths`` and write a re-synthesis of each photo.

    Each photo is resized (Lanczos) so its short side is ``size`` when it is smaller, centre-cropped
    to ``size`` x ``size`` and passed through the autoencoder in one piece. Greyscale photos (mode
    ``L`` or R = G = B) give greyscale outputs.

    Args:
        paths: the real photos (any format PIL reads).
        out_dir: folder for the outputs (created if missing); files are named
            ``<index:05d>_<stem>.jpg`` (or ``.png``) in input order, so the list is deterministic.
        size: side of the square outputs; at least 8.
        seed: seeds the training crops and the autoencoder's initialisation.
        train_steps: Adam steps of autoencoder training (16 crops per step).
        train_crop: side of the training crops (capped at ``size``); the network is fully
            convolutional, so it is trained on small crops and applied to whole images.
        fmt: ``jpeg`` or ``png``.
        quality: JPEG quality (ignored for PNG).

    Returns:
        The written files, in the order of ``paths``.

    Raises:
        ValueError: no paths, a bad parameter, or an unknown format.
        OSError: a photo cannot be read.
    """
    _check_args(paths, size, train_steps, fmt, quality)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [_load_square(Path(p), size) for p in paths]
    photos = {f"{i:05d}": img for i, img in enumerate(images)}
    crop = max(8, min(train_crop, size))
    logger.info(
        "training the resynthesis autoencoder on %d photos, %d steps", len(paths), train_steps
    )
    model = _train_autoencoder(photos, crop, train_steps, seed)
    written: list[Path] = []
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        fakes = _resynthesise(model, [a for a, _ in chunk], [g for _, g in chunk])
        for offset, arr in enumerate(fakes):
            i = start + offset
            target = out / f"{i:05d}_{Path(paths[i]).stem}{FORMATS[fmt]}"
            _save(arr, target, fmt, quality)
            written.append(target)
    logger.info("wrote %d re-synthesised images to %s", len(written), out)
    return written


def _check_args(
    paths: Sequence[str | Path], size: int, train_steps: int, fmt: str, quality: int
) -> None:
    """Reject arguments the function cannot honour."""
    if isinstance(paths, (str, Path)):
        raise ValueError("paths must be a sequence of files, not one path")
    if len(paths) == 0:
        raise ValueError("no photos given")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    if train_steps < 0:
        raise ValueError(f"train_steps must be non-negative, got {train_steps}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")


def _load_square(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """``(size x size x 3 uint8 centre crop, is_greyscale)`` of one photo."""
    with Image.open(path) as img:
        grey_mode = img.mode in ("L", "LA", "I", "I;16", "F", "1")
        rgb = img.convert("RGB")
    w, h = rgb.size
    if min(w, h) < size:
        scale = size / min(w, h)
        rgb = rgb.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.LANCZOS
        )
        w, h = rgb.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)
    grey = grey_mode or bool(
        np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])
    )
    return arr, grey


def _save(arr: np.ndarray, target: Path, fmt: str, quality: int) -> None:
    """Write one RGB array as JPEG (no chroma-subsampling change from PIL's default) or PNG."""
    img = Image.fromarray(np.ascontiguousarray(arr))
    if fmt == "jpeg":
        img.save(target, format="JPEG", quality=quality)
    else:
        img.save(target, format="PNG")
