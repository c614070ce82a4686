"""The demo's source photographs: the sample photos that ship inside scikit-image, and crops of them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

#: Photographs shipped inside the scikit-image wheel (logos, charts and phantoms left out;
#: ``color.png`` is a synthetic colour wheel, so it is not used either).
PHOTO_FILES: tuple[str, ...] = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "moon.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "brick.png",
    "clock_motion.png",
    "page.png",
    "text.png",
)


def skimage_data_dir() -> Path:
    """Return the folder of sample images inside the installed scikit-image package."""
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data"


def _load_photos(size: int) -> dict[str, tuple[np.ndarray, bool]]:
    """Read the bundled photographs as RGB uint8 arrays.

    Args:
        size: Crop size; photographs with a shorter side are skipped.

    Returns:
        Mapping of photo name (file stem) to ``(HxWx3 uint8 array, is_greyscale)``.
    """
    data_dir = skimage_data_dir()
    photos: dict[str, tuple[np.ndarray, bool]] = {}
    for filename in PHOTO_FILES:
        path = data_dir / filename
        if not path.is_file():
            logger.warning("Sample photo %s not found; skipping it", path)
            continue
        with Image.open(path) as img:
            grey = img.mode in ("L", "I", "I;16", "F", "1")
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if min(arr.shape[:2]) < size:
            logger.warning("Sample photo %s is smaller than %d px; skipping it", path, size)
            continue
        photos[Path(filename).stem] = (arr, grey)
    if not photos:
        raise ValueError(f"No usable sample photographs of at least {size} px in {data_dir}")
    logger.info("Using %d scikit-image sample photos from %s", len(photos), data_dir)
    return photos


def _crop(img: np.ndarray, pos: tuple[int, int], size: int) -> np.ndarray:
    """Cut a ``size`` x ``size`` crop with top-left corner ``pos`` = (y, x)."""
    y, x = pos
    return img[y : y + size, x : x + size]
