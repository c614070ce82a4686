"""Heatmap arithmetic shared by the explanation methods: the model's view of an image, bilinear
resizing with half-pixel centres, and the jet colour map, in numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fakescope.data.transforms import EvalTransform, Preprocessing


def preprocess(pre: Preprocessing, image: Image.Image) -> tuple[np.ndarray, Image.Image]:
    """The normalised ``[1, 3, H, W]`` float32 input and the image the model sees."""
    x = EvalTransform(pre).array(image)[None]
    return x, _denormalise(x[0], pre)


def _denormalise(x: np.ndarray, pre: Preprocessing) -> Image.Image:
    """Undo the normalisation of a ``[3, H, W]`` array and return an RGB image."""
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    pixels = np.clip(np.asarray(x, dtype=np.float32) * std + mean, 0.0, 1.0)
    arr = (pixels.transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def interp_matrix(coords: np.ndarray, n: int) -> np.ndarray:
    """``[len(coords), n]`` weights of linear interpolation at ``coords`` (clamped to the ends)."""
    c = np.clip(np.asarray(coords, dtype=np.float64), 0.0, n - 1)
    lo = np.floor(c).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = c - lo
    m = np.zeros((len(c), n), dtype=np.float32)
    rows = np.arange(len(c))
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def resize_bilinear(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2-D array to ``size = (H, W)`` with half-pixel centres, like OpenCV's
    ``INTER_LINEAR`` and torch's ``align_corners=False``, as float32."""
    h, w = int(size[0]), int(size[1])
    a = np.asarray(arr, dtype=np.float32)
    ys = (np.arange(h) + 0.5) * (a.shape[0] / h) - 0.5
    xs = (np.arange(w) + 0.5) * (a.shape[1] / w) - 0.5
    return (interp_matrix(ys, a.shape[0]) @ a @ interp_matrix(xs, a.shape[1]).T).astype(np.float32)


def fit_heatmap(heat: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (bilinear) to ``size = (H, W)``, clean NaNs and clip to ``[0, 1]``, as float32."""
    h, w = int(size[0]), int(size[1])
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (h, w):
        heat = resize_bilinear(np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0), (h, w))
    heat = np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def jet(values: np.ndarray) -> np.ndarray:
    """The "jet" colour map (blue, cyan, yellow, red) of values in ``[0, 1]``: ``[..., 3]`` RGB
    floats in ``[0, 1]``, quantised to 256 levels as OpenCV's and matplotlib's are."""
    v = np.round(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255.0) / 255.0
    return np.stack(
        [np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)], axis=-1
    ).astype(np.float32)
