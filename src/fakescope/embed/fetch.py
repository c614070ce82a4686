"""Fetch, build and check a missing backbone file (see :mod:`fakescope.embed.weights`).

``ensure_file`` is called by code that opens a detector when the file is nowhere on this machine:
it rebuilds the file from hub weights when a :class:`~fakescope.embed.weights.Recipe` knows it,
checks the result against the reference embeddings shipped in ``fakescope/zoo``, and keeps it
(with a ``.verified.json`` record) only when it agrees.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.embed.weights import (
    HUB_HOST,
    MIN_COSINE,
    RECIPES,
    Recipe,
    cache_dir,
    find_file,
    missing_message,
    online,
)

logger = logging.getLogger(__name__)
_ZOO = Path(__file__).resolve().parents[1] / "zoo"


def ensure_file(name: str, sha256: str | None, fetch_missing: bool = True) -> Path:
    """The backbone (or weights) file ``name`` names: the path itself when it is a file, else a
    file of that name in the folders of ``$FAKESCOPE_WEIGHTS`` or the user cache, else fetched,
    built and checked (see the module). The one place a backbone file is looked for.

    Args:
        name: the path stored in a detector's spec, or given on the command line.
        sha256: the file's expected sha256 (for the message when it is missing).
        fetch_missing: build a missing file from hub weights when a recipe knows it.

    Raises:
        FileNotFoundError: not found, and no recipe or no network; the message says what to do.
        ValueError: a rebuilt file that disagrees with the reference embeddings.
    """
    if Path(name).expanduser().is_file():
        return Path(name).expanduser()
    found = find_file(name)
    if found is not None:
        return found
    recipe = RECIPES.get(Path(name).name)
    if recipe is None or not fetch_missing:
        raise FileNotFoundError(missing_message(name, sha256))
    if recipe.pretrained_file is None and not online():
        raise FileNotFoundError(missing_message(name, sha256, f"{HUB_HOST} cannot be reached"))
    return fetch(recipe)


def fetch(recipe: Recipe, build: Callable[[Recipe, Path], None] | None = None) -> Path:
    """Build ``recipe``'s file in the cache from hub weights, check it, and keep it if it passes.

    Raises:
        FileNotFoundError: the hub weights could not be had.
        ValueError: the rebuilt file disagrees with the reference embeddings (it is not kept).
    """
    out = cache_dir() / recipe.file
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    logger.warning("%s is not here: building it from %s (once)", recipe.file, recipe.timm_name)
    try:
        (build or build_clip_onnx)(recipe, tmp)
        cosines = check_reference(tmp, recipe)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    record = {
        "stands_for_sha256": recipe.sha256,
        "file_sha256": _digest(out),
        "source": recipe.timm_name,
        "min_cosine": float(min(cosines)),
        "built_s": round(time.perf_counter() - t0, 1),
    }
    out.with_name(out.name + ".verified.json").write_text(json.dumps(record, indent=2))
    logger.warning("built %s (reference check: cosine >= %.4f)", out, record["min_cosine"])
    return out


def _digest(path: Path) -> str:
    from fakescope.utils import file_digest

    return file_digest(path)


# --------------------------------------------------------------------------------------------
# Reference embeddings
# --------------------------------------------------------------------------------------------


def reference_path(recipe: Recipe) -> Path:
    """The reference ``.npz``: shipped in ``fakescope/zoo``, or an absolute path."""
    return _ZOO / recipe.reference  # an absolute ``reference`` replaces the folder


def reference_features(path: str | os.PathLike[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """What an ONNX image encoder makes of ``images`` (uint8 ``[N, H, W, 3]``): the final
    embedding and the CLS token after every block (the features the built-in detectors use)."""
    from PIL import Image

    from fakescope.embed.backbones import OnnxBackbone

    out = {}
    for pool in ("embed", "layers"):
        bb = OnnxBackbone(path, pool=pool)
        from fakescope.data.transforms import eval_transform

        tf = eval_transform(bb.preprocessing)
        x = np.stack([tf(Image.fromarray(im)).numpy() for im in images])
        out[pool] = np.asarray(bb.embed(x), dtype=np.float32)
    return out


def write_reference(onnx_file: str | os.PathLike[str], images: np.ndarray, dest: Path) -> Path:
    """Store ``images`` and what ``onnx_file`` makes of them (float16), for :func:`check_reference`."""
    feats = reference_features(onnx_file, images)
    np.savez_compressed(dest, images=images, **{k: v.astype(np.float16) for k, v in feats.items()})
    return dest


def check_reference(onnx_file: str | os.PathLike[str], recipe: Recipe) -> list[float]:
    """Cosine similarity, per reference image and feature, of ``onnx_file`` against the original.

    Raises:
        ValueError: any below :data:`MIN_COSINE`, or features of another shape.
    """
    ref = np.load(reference_path(recipe))
    got = reference_features(onnx_file, ref["images"])
    cosines: list[float] = []
    for key in ("embed", "layers"):
        want = ref[key].astype(np.float32)
        if got[key].shape != want.shape:
            raise ValueError(
                f"the rebuilt {recipe.file} gives {key} features of shape {got[key].shape}, "
                f"the original {want.shape}: refusing it"
            )
        num = (got[key] * want).sum(axis=1)
        den = np.linalg.norm(got[key], axis=1) * np.linalg.norm(want, axis=1) + 1e-12
        cosines += (num / den).tolist()
    if min(cosines) < MIN_COSINE:
        raise ValueError(
            f"the rebuilt {recipe.file} disagrees with the reference embeddings shipped with "
            f"fakescope (lowest cosine {min(cosines):.4f} < {MIN_COSINE}): refusing it; get the "
            f"original file (sha256 {recipe.sha256}) and put it in {cache_dir()}"
        )
    return cosines


# --------------------------------------------------------------------------------------------
# Building the CLIP image tower
# --------------------------------------------------------------------------------------------


def build_clip_onnx(recipe: Recipe, dest: Path) -> None:
    """Export the CLIP image tower from timm hub weights and quantise it like the original.

    Outputs match the original file: ``image_embeds`` (projected embedding) and the last hidden
    state before the final LayerNorm (``[B, tokens, width]``). Opset 14 keeps each LayerNorm as
    ``ReduceMean`` nodes, which is how the ``layers`` pooling finds the blocks. Weights are
    quantised dynamically to int8 with onnxruntime, as the original was.
    """
    from fakescope.embed.tower import export_tower

    export_tower(_load_timm(recipe).eval(), dest)


def _load_timm(recipe: Recipe) -> Any:
    """The timm model with its pretrained weights (the hub, or ``recipe.pretrained_file``)."""
    import timm

    overlay = {"file": recipe.pretrained_file} if recipe.pretrained_file else None
    if overlay and "num_classes" in recipe.model_kwargs:  # keep the file's head, not a new one
        overlay["num_classes"] = recipe.model_kwargs["num_classes"]
    try:
        return timm.create_model(
            recipe.timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **recipe.model_kwargs
        )
    except Exception as e:  # hub and network failures come in many types
        raise FileNotFoundError(
            missing_message(recipe.file, recipe.sha256, f"{type(e).__name__}: {str(e)[:200]}")
        ) from e
