"""Where the evidence is: heatmaps of the image regions that push a detector towards "fake".

Two methods:

* **Grad-CAM** (Selvaraju et al., 2017) for timm networks, CNNs and ViTs alike: the gradient of
  the single (calibrated) logit with respect to the last feature stage, so positive heat is
  evidence for *fake*. Any input filter (NPR) stays in the forward pass. It needs torch (the
  ``train`` extra): :mod:`fakescope.infer.gradcam`.
* **Occlusion** (Zeiler & Fergus, 2014) for every detector kind, probes and fusions included:
  grey out one cell of a ``grid x grid`` lattice at a time and measure how much P(fake) drops.
  numpy and the detector's own scoring only, in batches.

Heatmaps are ``float32 [H, W]`` in ``[0, 1]`` at the model's input size, aligned with
:attr:`Explanation.input_image` (the image after resize/crop, before normalisation), and laid back
on the image at its own size (:attr:`Explanation.image_heatmap`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fakescope.data.images import ImageLoadError, load_image
from fakescope.data.transforms import Preprocessing
from fakescope.infer.heatmaps import fit_heatmap, interp_matrix, jet, preprocess, resize_bilinear
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

__all__ = ["Explanation", "explain_image", "explain_paths", "overlay", "save_explanation"]

METHODS = ("auto", "gradcam", "occlusion")
DEFAULT_GRID = 4
DEFAULT_BATCH = 16
_MIN_PANEL = 256
_MAX_PANEL = 1024
_CAPTION_HEIGHT = 36
_STEM_MAX = 80


@dataclass
class Explanation:
    """One image's heatmap and score.

    Attributes:
        heatmap: float32 ``[H, W]`` in ``[0, 1]`` at the model input size (1 = strongest
            evidence for fake).
        method: ``"gradcam"`` or ``"occlusion"``.
        score: P(fake) of the image.
        input_image: the image as the model saw it (after resize/crop, before normalisation).
        image: the image as given (RGB).
        image_heatmap: float32 ``[H, W]`` at the image's own size and aspect ratio: the heatmap
            laid back where the model's view lies on the image (:func:`on_image`), NaN outside
            that view (the parts the centre crop left out).
    """

    heatmap: np.ndarray
    method: str
    score: float
    input_image: Image.Image
    image: Image.Image | None = None
    image_heatmap: np.ndarray | None = None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def explain_image(
    detector: Detector,
    image: Image.Image,
    method: str = "auto",
    grid: int = DEFAULT_GRID,
    batch_size: int = DEFAULT_BATCH,
) -> Explanation:
    """Explain one image's score with a heatmap.

    Args:
        detector: any detector (``timm``, ``probe`` or ``fusion``).
        image: a PIL image of any size and mode (converted to RGB).
        method: ``"gradcam"`` (timm networks only), ``"occlusion"`` (any detector) or ``"auto"``
            (Grad-CAM for timm networks, falling back to occlusion when no target layer is
            found; occlusion otherwise).
        grid: occlusion lattice size (``grid x grid`` cells).
        batch_size: occluded copies scored per forward pass.

    Returns:
        The :class:`Explanation`.

    Raises:
        ValueError: an unknown method, Grad-CAM asked of a non-timm detector, or no usable
            Grad-CAM target layer.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {METHODS}")
    rgb = image.convert("RGB")
    expl = _explain(detector, rgb, method, grid, batch_size)
    expl.image = rgb
    expl.image_heatmap = on_image(expl.heatmap, rgb.size, detector.spec.preprocessing)
    return expl


def _explain(
    detector: Detector, rgb: Image.Image, method: str, grid: int, batch_size: int
) -> Explanation:
    """The heatmap in the model's view, by ``method`` (see :func:`explain_image`)."""
    if method == "gradcam" and not detector.torch_network:
        raise ValueError(f"Grad-CAM needs a timm network; this detector is {detector.spec.kind!r}")
    if method == "occlusion" or not detector.torch_network:
        return _occlusion(detector, rgb, grid, batch_size)
    from fakescope.infer.gradcam import gradcam, target_layer

    if method == "auto":
        try:
            target_layer(detector.net)
        except ValueError as exc:
            logger.warning("no Grad-CAM target layer (%s); using occlusion", exc)
            return _occlusion(detector, rgb, grid, batch_size)
    heat, score, seen = gradcam(detector, rgb)
    return Explanation(fit_heatmap(heat, (seen.height, seen.width)), "gradcam", score, seen)


def on_image(heat: np.ndarray, size: tuple[int, int], pre: Preprocessing) -> np.ndarray:
    """Lay a heatmap of the model's view back onto the image it came from.

    Args:
        heat: ``[s, s]`` values over the model's input (the resized, centre-cropped image).
        size: the image's ``(width, height)``.
        pre: the preprocessing that made the model's view (``resize``: short side to
            ``s / crop_pct``, then the centre square; ``crop``: the centre square at the
            native resolution, zero-padded when smaller).

    Returns:
        float32 ``[height, width]``: each image pixel's value from the point of the model's view
        it became (bilinear), NaN where the crop left it out.
    """
    from fakescope.data.transforms import crop_origin, resized_size

    w, h = int(size[0]), int(size[1])
    s = int(pre.size)
    nw, nh = resized_size((w, h), pre)
    left, top = crop_origin((nw, nh), s)  # where the model's view starts in the resized image
    xs = (np.arange(w, dtype=np.float32) + 0.5) * (nw / w) - 0.5 - left
    ys = (np.arange(h, dtype=np.float32) + 0.5) * (nh / h) - 0.5 - top
    grid = fit_heatmap(np.asarray(heat, dtype=np.float32), (s, s))
    out = interp_matrix(ys, s) @ grid @ interp_matrix(xs, s).T
    inside = ((ys >= -0.5) & (ys <= s - 0.5))[:, None] & ((xs >= -0.5) & (xs <= s - 0.5))[None, :]
    out[~inside] = np.nan
    return out.astype(np.float32)


@contextlib.contextmanager
def _eval_mode(detector: Detector) -> Iterator[None]:
    """A torch network in eval mode for the duration (restored after); others have no modes."""
    was_training = getattr(detector, "training", None)
    if was_training is None:
        yield
        return
    detector.eval()
    try:
        yield
    finally:
        detector.train(was_training)


def _proba(detector: Detector, x: np.ndarray) -> np.ndarray:
    """P(fake) of a preprocessed batch."""
    return detector.probabilities(detector.tensor_logits(x)[0])


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def _occlusion(detector: Detector, image: Image.Image, grid: int, batch_size: int) -> Explanation:
    """Occlusion heatmap: drop in P(fake) when each lattice cell is greyed out."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    if detector.members:  # members preprocess their own way: occlude the image, not a tensor
        return _occlusion_fusion(detector, image, grid, batch_size)
    x, seen = preprocess(detector.spec.preprocessing, image)
    with _eval_mode(detector):
        base = float(_proba(detector, x)[0])
        cells = _cells(x.shape[-2], x.shape[-1], grid)
        copies = _occluded_arrays(x[0], cells)
        scores = _score_batches(lambda b: _proba(detector, b), copies, batch_size)
    heat = _heat_from_scores(base, scores, grid, x.shape[-2:])
    return Explanation(heat, "occlusion", base, seen)


def _cells(h: int, w: int, grid: int) -> list[tuple[int, int, int, int]]:
    """The ``grid x grid`` lattice as ``(top, bottom, left, right)``, row by row."""
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    return [
        (int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1]))
        for i in range(grid)
        for j in range(grid)
    ]


def _occluded_arrays(x: np.ndarray, cells: list[tuple[int, int, int, int]]) -> Iterator[np.ndarray]:
    """Copies of a normalised ``[3, H, W]`` array with one cell set to 0 (the mean colour)."""
    for top, bottom, left, right in cells:
        copy = x.copy()
        copy[:, top:bottom, left:right] = 0.0
        yield copy


def _score_batches(
    score: Callable[[np.ndarray], np.ndarray], items: Iterator[np.ndarray], batch_size: int
) -> np.ndarray:
    """P(fake) of every item, scored ``batch_size`` at a time."""
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) >= max(1, batch_size):
            out.append(np.asarray(score(np.stack(batch)), dtype=np.float32))
            batch = []
    if batch:
        out.append(np.asarray(score(np.stack(batch)), dtype=np.float32))
    return np.concatenate(out).reshape(-1)


def _heat_from_scores(
    base: float, scores: np.ndarray, grid: int, size: Sequence[int]
) -> np.ndarray:
    """``max(0, base - occluded)`` per cell, scaled to ``[0, 1]`` and upsampled bilinearly."""
    drop = np.maximum(0.0, base - scores.reshape(grid, grid)).astype(np.float32)
    drop = np.nan_to_num(drop, nan=0.0)
    top = float(drop.max()) if drop.size else 0.0
    h, w = int(size[0]), int(size[1])
    if top <= 0.0:
        return np.zeros((h, w), dtype=np.float32)
    return np.clip(resize_bilinear(drop / top, (h, w)), 0.0, 1.0).astype(np.float32)


def _occlusion_fusion(
    detector: Detector, image: Image.Image, grid: int, batch_size: int
) -> Explanation:
    """Occlusion for a fusion detector, whose members each preprocess images their own way.

    The lattice lies on the image at the fusion's (first member's) input geometry; cells are
    filled with that preprocessing's mean colour and each member re-preprocesses the result.
    The reported score is the fusion's P(fake) of the original image.
    """
    pre = detector.spec.preprocessing
    _, seen = preprocess(pre, image)
    score = float(_pil_proba(detector, [image])[0])
    base = float(_pil_proba(detector, [seen])[0])
    cells = _cells(seen.height, seen.width, grid)
    copies = _occluded_images(seen, cells, pre)
    scores = _score_images(lambda ims: _pil_proba(detector, ims), copies, batch_size)
    heat = _heat_from_scores(base, scores, grid, (seen.height, seen.width))
    return Explanation(heat, "occlusion", score, seen)


def _occluded_images(
    image: Image.Image, cells: list[tuple[int, int, int, int]], pre: Preprocessing
) -> Iterator[Image.Image]:
    """Copies of ``image`` with one cell painted in the preprocessing's mean colour."""
    fill = tuple(int(round(m * 255)) for m in pre.mean)
    for top, bottom, left, right in cells:
        copy = image.copy()
        if bottom > top and right > left:
            ImageDraw.Draw(copy).rectangle((left, top, right - 1, bottom - 1), fill=fill)
        yield copy


def _score_images(
    score: Callable[[list[Image.Image]], np.ndarray],
    images: Iterator[Image.Image],
    batch_size: int,
) -> np.ndarray:
    """P(fake) of PIL images, ``batch_size`` at a time."""
    out: list[np.ndarray] = []
    batch: list[Image.Image] = []
    for im in images:
        batch.append(im)
        if len(batch) >= max(1, batch_size):
            out.append(score(batch))
            batch = []
    if batch:
        out.append(score(batch))
    return np.concatenate(out).reshape(-1)


def _pil_proba(detector: Detector, images: list[Image.Image]) -> np.ndarray:
    """P(fake) of PIL images for any detector, fusions included."""
    with _eval_mode(detector):
        logits, _ = detector.image_logits([im.convert("RGB") for im in images], len(images))
    return detector.probabilities(logits)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a jet-coloured heatmap over an image.

    Args:
        image: any PIL image (converted to RGB).
        heatmap: ``[h, w]`` values in ``[0, 1]``; resized (bilinear) to the image when needed.
        alpha: weight of the heatmap colours, in ``[0, 1]``.

    Returns:
        An RGB image of the same size as ``image``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    heat = fit_heatmap(np.asarray(heatmap, dtype=np.float32), rgb.shape[:2])
    cam = alpha * jet(heat) + (1.0 - alpha) * rgb
    cam = cam / max(float(cam.max()), 1e-6)  # brightest pixel at full scale, as Grad-CAM's own
    return Image.fromarray((cam * 255.0).round().clip(0, 255).astype(np.uint8), mode="RGB")


def overlay_on_image(
    image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45, max_side: int | None = None
) -> Image.Image:
    """Blend an :attr:`Explanation.image_heatmap` over its image, at the image's aspect ratio:
    the model's view in heatmap colours, the parts it did not see greyed out.

    Args:
        image: the image the heatmap was laid on.
        heatmap: ``[H, W]``, NaN outside the model's view.
        alpha: weight of the heatmap colours.
        max_side: shrink the result so its long side is at most this many pixels.
    """
    rgb = image.convert("RGB")
    heat = np.asarray(heatmap, dtype=np.float32)
    if max_side and max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(size, Image.Resampling.NEAREST))
    seen = np.isfinite(heat)
    blended = np.asarray(overlay(rgb, np.where(seen, heat, 0.0)), dtype=np.float32)
    grey = 0.35 * np.asarray(rgb, dtype=np.float32) + 0.65 * 200.0
    out = np.where(seen[..., None], blended, grey)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8), mode="RGB")


def save_explanation(expl: Explanation, out_path: str | Path) -> Path:
    """Write the image and its overlay side by side (at the image's aspect ratio, the parts the
    model did not see greyed out), captioned ``P(fake)=0.93 (gradcam)``.

    Small model inputs are enlarged so that each panel is at least 256 pixels wide.

    Args:
        expl: the explanation.
        out_path: the PNG to write (folders are created).

    Returns:
        The path written.
    """
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if expl.image is not None and expl.image_heatmap is not None:  # the image as given
        heat = overlay_on_image(expl.image, expl.image_heatmap, max_side=_MAX_PANEL)
        panel = _panel(expl.image.resize(heat.size, Image.Resampling.BILINEAR))
        heat = heat.resize(panel.size, Image.Resampling.NEAREST)
    else:
        panel = _panel(expl.input_image)
        heat = overlay(panel, expl.heatmap)
    both = Image.new("RGB", (panel.width * 2, panel.height + _CAPTION_HEIGHT), "white")
    both.paste(panel, (0, _CAPTION_HEIGHT))
    both.paste(heat, (panel.width, _CAPTION_HEIGHT))
    caption = f"P(fake)={expl.score:.2f} ({expl.method})"
    ImageDraw.Draw(both).text((8, 8), caption, fill="black", font=_font(20))
    both.save(path, format="PNG")
    return path


def _panel(image: Image.Image) -> Image.Image:
    """The input image, enlarged to at least ``_MIN_PANEL`` pixels on its short side."""
    rgb = image.convert("RGB")
    short = min(rgb.size)
    if short >= _MIN_PANEL:
        return rgb
    scale = _MIN_PANEL / max(short, 1)
    size = (round(rgb.width * scale), round(rgb.height * scale))
    return rgb.resize(size, Image.Resampling.NEAREST)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` where this Pillow can scale it."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


# --------------------------------------------------------------------------------------------
# Many files
# --------------------------------------------------------------------------------------------


def explain_paths(
    detector: Detector,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    method: str = "auto",
) -> list[tuple[str, Path | None, str | None]]:
    """Explain image files and write one PNG each.

    Output names are ``<stem>-<8 hex of the resolved path's sha1>.png``, so same-named files in
    different folders do not overwrite each other.

    Args:
        detector: any detector.
        paths: image files.
        out_dir: where the PNGs go (created).
        method: as in :func:`explain_image`.

    Returns:
        Per input, in order: ``(path, written PNG or None, error reason or None)``. Files that
        cannot be loaded or explained give an error entry, never an exception.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose from {METHODS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = [_explain_one(detector, Path(p), out, method) for p in paths]
    failed = sum(1 for _, png, _ in results if png is None)
    logger.info("explained %d of %d images into %s", len(results) - failed, len(results), out)
    return results


def _explain_one(
    detector: Detector, path: Path, out_dir: Path, method: str
) -> tuple[str, Path | None, str | None]:
    """One entry of :func:`explain_paths`."""
    try:
        image = load_image(path)
    except ImageLoadError as exc:
        logger.warning("skipping %s: %s", path, exc.reason)
        return str(path), None, exc.reason
    try:
        expl = explain_image(detector, image, method=method)
        written = save_explanation(expl, out_dir / _output_name(path))
    except Exception as exc:  # one bad image must not stop a folder; the reason is reported
        logger.warning(
            "could not explain %s: %s", path, exc, exc_info=logger.isEnabledFor(logging.DEBUG)
        )
        return str(path), None, f"explanation failed: {type(exc).__name__}: {exc}"
    return str(path), written, None


def _output_name(path: Path) -> str:
    """``<stem>-<short hash of the full path>.png``."""
    digest = hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
    return f"{path.stem[:_STEM_MAX] or 'image'}-{digest}.png"
