"""Toy real-vs-fake image set built offline from scikit-image's bundled sample photographs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fakescope.demo.autoencoder import _resynthesise, _train_autoencoder
from fakescope.demo.photos import _crop, _load_photos

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "demo.json"
README_NAME = "README.txt"
README_MARKER = "fakescope demo dataset"
CLASS_DIRS = ("real", "fake")
_MIN_CROP_STD = 0.01  # crops flatter than this (e.g. retina's black border) are re-drawn
_MAX_TRIES = 2000
README_TEXT = f"""{README_MARKER}
======================

What this is: a TOY data set for showing the fakescope pipeline end to end without
downloading anything.

real/<photo>/*.png  Square crops of the sample photographs that ship inside the
                    scikit-image package (astronaut, chelsea, coffee, rocket, ...).
                    Greyscale photographs are stored as RGB with R = G = B.
fake/<photo>/*.png  Crops of the same photographs, taken at other positions than the
                    real crops, passed through a tiny convolutional autoencoder
                    (stride-2 convolutions down, transposed convolutions up) that was
                    trained for a few seconds. The transposed convolutions leave
                    checkerboard/upsampling artefacts like those of image generators
                    (the idea of AutoGAN, Zhang, Karaman & Chang 2019).

Both classes are PNG files of the same size, drawn from every photograph in equal
numbers, so the folder name under real/ and fake/ is the photo "group".

These are not images from any real generator. Numbers measured on this set show that
the pipeline runs; they say nothing about how well a detector finds images from real
generators (GANs, diffusion models, ...).

The parameters used are in {MANIFEST_NAME}, which is written last.
"""


def make_demo_dataset(
    out_dir: str | Path,
    n_per_class: int = 160,
    size: int = 96,
    seed: int = 0,
    train_steps: int = 200,
) -> Path:
    """Write a small real-vs-fake image set made from scikit-image's sample photographs.

    Real images are random crops of the photographs bundled with scikit-image; fake
    images are crops taken at other positions and re-synthesised by a small conv
    autoencoder with transposed-convolution upsampling. If ``out_dir`` already holds a
    complete set made with the same parameters, it is returned untouched.

    Args:
        out_dir: Folder to write ``real/``, ``fake/``, ``README.txt`` and ``demo.json`` to.
        n_per_class: Number of images per class.
        size: Side length in pixels of every (square) image.
        seed: Seed for crop positions and for the autoencoder.
        train_steps: Adam steps used to train the autoencoder.

    Returns:
        The output folder as a ``Path``.

    Raises:
        ValueError: If a parameter is out of range or no photograph is usable.
        FileExistsError: If ``out_dir`` has ``real/`` or ``fake/`` folders that this
            function did not write.
    """
    _check_params(n_per_class, size, train_steps)
    out = Path(out_dir)
    params = _params(n_per_class, size, seed, train_steps)
    if _is_complete(out, params):
        logger.info("Demo data set in %s is complete; reusing it", out)
        return out

    start = time.perf_counter()
    photos = _load_photos(size)
    _prepare_dir(out)
    real_crops, fake_crops = _sample_crops(photos, n_per_class, size, seed)
    logger.info("Training the demo autoencoder for %d steps", train_steps)
    model = _train_autoencoder(photos, size, train_steps, seed)
    fakes = _resynthesise(model, [c for _, c in fake_crops], [photos[n][1] for n, _ in fake_crops])
    _write_class(out / "real", real_crops)
    _write_class(
        out / "fake", [(name, img) for (name, _), img in zip(fake_crops, fakes, strict=True)]
    )
    _write_manifest(out, params, real_crops)
    logger.info("Demo data set written to %s in %.1f s", out, time.perf_counter() - start)
    return out


def _check_params(n_per_class: int, size: int, train_steps: int) -> None:
    """Reject parameters the generator cannot honour."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    if size < 8:
        raise ValueError(f"size must be at least 8, got {size}")
    if train_steps < 0:
        raise ValueError(f"train_steps must be non-negative, got {train_steps}")


def _params(n_per_class: int, size: int, seed: int, train_steps: int) -> dict[str, int]:
    """Return the parameters that identify a generated data set."""
    return {
        "format_version": FORMAT_VERSION,
        "n_per_class": n_per_class,
        "size": size,
        "seed": seed,
        "train_steps": train_steps,
    }


def _is_complete(out: Path, params: dict[str, int]) -> bool:
    """Tell whether ``out`` holds a finished data set made with ``params``."""
    try:
        meta = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("params") != params:
        return False
    n = params["n_per_class"]
    return all(len(list((out / c).glob("*/*.png"))) == n for c in CLASS_DIRS)


def _prepare_dir(out: Path) -> None:
    """Remove a previous (incomplete or different) demo set and mark ``out`` as ours."""
    readme = out / README_NAME
    ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_MARKER)
    existing = [out / c for c in CLASS_DIRS if (out / c).exists()]
    if existing and not ours:
        raise FileExistsError(
            f"{out} has {', '.join(p.name for p in existing)}/ but no fakescope demo "
            f"{README_NAME}; refusing to delete it. Pick an empty folder."
        )
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for path in existing:
        logger.info("Removing incomplete or outdated %s", path)
        shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)
    readme.write_text(README_TEXT, encoding="utf-8")


def _allocate(names: list[str], n: int, rng: np.random.Generator) -> dict[str, int]:
    """Split ``n`` crops over photos as evenly as possible (remainder to random photos)."""
    counts = dict.fromkeys(names, n // len(names))
    for i in rng.permutation(len(names))[: n % len(names)]:
        counts[names[i]] += 1
    return counts


def _far_enough(pos: tuple[int, int], avoid: list[tuple[int, int]], min_sep: int) -> bool:
    """Tell whether ``pos`` is at least ``min_sep`` px (Chebyshev) from every ``avoid``."""
    return all(max(abs(pos[0] - a[0]), abs(pos[1] - a[1])) >= min_sep for a in avoid)


def _draw_positions(
    img: np.ndarray,
    size: int,
    k: int,
    rng: np.random.Generator,
    avoid: list[tuple[int, int]],
    min_sep: int,
) -> list[tuple[int, int]]:
    """Draw ``k`` distinct, non-flat crop positions at least ``min_sep`` from ``avoid``.

    The separation is halved whenever the photograph is too crowded to honour it, down
    to 1 px (positions merely distinct). Flat crops are accepted only as a last resort.
    """
    h, w = img.shape[:2]
    taken: list[tuple[int, int]] = []
    tries = 0
    while len(taken) < k:
        pos = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))
        tries += 1
        if tries > _MAX_TRIES:
            if min_sep <= 1:
                raise ValueError(f"Cannot place {k} distinct {size}px crops in a {h}x{w} photo")
            min_sep, tries = min_sep // 2, 0
        if pos in taken or not _far_enough(pos, avoid, min_sep):
            continue
        if tries < _MAX_TRIES // 2 and _crop(img, pos, size).std() < _MIN_CROP_STD * 255:
            continue
        taken.append(pos)
    return taken


def _sample_crops(
    photos: dict[str, tuple[np.ndarray, bool]], n: int, size: int, seed: int
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """Draw ``n`` real and ``n`` fake-source crops, the same count per photo for both.

    Fake-source positions keep at least ``size // 4`` px (where the photo allows) away
    from every real crop of the same photo, so no fake re-synthesises a real crop.

    Returns:
        Two lists of ``(photo name, HxWx3 uint8 crop)``: real crops and fake sources.
    """
    rng = np.random.default_rng([seed, 0])
    counts = _allocate(list(photos), n, rng)
    real: list[tuple[str, np.ndarray]] = []
    fake_src: list[tuple[str, np.ndarray]] = []
    for name, (img, _) in photos.items():
        k = counts[name]
        if k == 0:
            continue
        real_pos = _draw_positions(img, size, k, rng, [], 1)
        fake_pos = _draw_positions(img, size, k, rng, real_pos, max(1, size // 4))
        real += [(name, _crop(img, p, size).copy()) for p in real_pos]
        fake_src += [(name, _crop(img, p, size).copy()) for p in fake_pos]
    return real, fake_src


def _write_class(class_dir: Path, items: list[tuple[str, np.ndarray]]) -> None:
    """Save crops as ``class_dir/<photo>/<photo>_<i>.png`` (numbered per photo)."""
    counters: dict[str, int] = {}
    for name, arr in items:
        i = counters.get(name, 0)
        counters[name] = i + 1
        folder = class_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(
            folder / f"{name}_{i:03d}.png", format="PNG"
        )


def _write_manifest(out: Path, params: dict[str, int], real: list[tuple[str, np.ndarray]]) -> None:
    """Write ``demo.json`` (parameters and counts) atomically; it marks the set complete."""
    per_photo: dict[str, int] = {}
    for name, _ in real:
        per_photo[name] = per_photo.get(name, 0) + 1
    import skimage

    meta = {
        "params": params,
        "skimage_version": skimage.__version__,
        "counts": {c: params["n_per_class"] for c in CLASS_DIRS},
        "per_photo_per_class": per_photo,
        "source": "scikit-image sample photographs; fakes re-synthesised by a conv autoencoder",
    }
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
