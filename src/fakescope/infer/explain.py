"""Where the evidence is: heatmaps of the image regions that push a detector towards "fake".

Two methods:

* **Grad-CAM** (Selvaraju et al., 2017) for timm networks, CNNs and ViTs alike: the gradient of
  the single (calibrated) logit with respect to the last feature stage, so positive heat is
  evidence for *fake*. Any input filter (NPR) stays in the forward pass.
* **Occlusion** (Zeiler & Fergus, 2014) for every detector kind, probes and fusions included:
  grey out one cell of a ``grid x grid`` lattice at a time and measure how much P(fake) drops.

Heatmaps are ``float32 [H, W]`` in ``[0, 1]`` at the model's input size, aligned with
:attr:`Explanation.input_image` (the image after resize/crop, before normalisation).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from fakescope.data.images import ImageLoadError, load_image
from fakescope.data.transforms import Preprocessing, eval_transform
from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

__all__ = ["Explanation", "explain_image", "explain_paths", "overlay", "save_explanation"]

METHODS = ("auto", "gradcam", "occlusion")
DEFAULT_GRID = 7
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
    if method == "auto":
        try:
            _target_layer(detector.net)
        except ValueError as exc:
            logger.warning("no Grad-CAM target layer (%s); using occlusion", exc)
            return _occlusion(detector, rgb, grid, batch_size)
    return _gradcam(detector, rgb)


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
    grid = _fit_heatmap(np.asarray(heat, dtype=np.float32), (s, s))
    map_x = np.broadcast_to(np.clip(xs, 0, s - 1)[None, :], (h, w)).astype(np.float32)
    map_y = np.broadcast_to(np.clip(ys, 0, s - 1)[:, None], (h, w)).astype(np.float32)
    out = cv2.remap(grid, map_x, map_y, interpolation=cv2.INTER_LINEAR)
    inside = ((ys >= -0.5) & (ys <= s - 0.5))[:, None] & ((xs >= -0.5) & (xs <= s - 0.5))[None, :]
    out[~inside] = np.nan
    return out.astype(np.float32)


def _preprocess(pre: Preprocessing, image: Image.Image) -> tuple[torch.Tensor, Image.Image]:
    """The normalised ``[1, 3, H, W]`` input tensor and the image the model sees."""
    x = eval_transform(pre)(image).unsqueeze(0).float()
    return x, _denormalise(x[0], pre)


def _denormalise(x: torch.Tensor, pre: Preprocessing) -> Image.Image:
    """Undo the normalisation of a ``[3, H, W]`` tensor and return an RGB image."""
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)
    pixels = (x.detach().cpu().float() * std + mean).clamp(0, 1)
    arr = (pixels.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def _module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for none)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


class _LogitWrapper(nn.Module):
    """The whole detector (input filter included) as ``[B, 1]`` calibrated logits."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector.calibrated_logits(self.detector(x).float()).reshape(-1, 1)


class _LogitTarget:
    """Grad-CAM target: the single logit (positive = evidence for fake)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output.reshape(-1)[0]


def _gradcam(detector: Detector, image: Image.Image) -> Explanation:
    """Grad-CAM of the detector's logit on its last feature stage, on the CPU in float32."""
    from pytorch_grad_cam import GradCAM

    pre = detector.spec.preprocessing
    x, seen = _preprocess(pre, image)
    layer, reshape = _target_layer(detector.net)
    with _cpu_float32(detector), _grad_state(detector):
        cam = GradCAM(
            model=_LogitWrapper(detector), target_layers=[layer], reshape_transform=reshape
        )
        try:
            with torch.enable_grad(), torch.autocast("cpu", enabled=False):
                grayscale = cam(input_tensor=x.requires_grad_(True), targets=[_LogitTarget()])
            logit = float(cam.outputs.detach().reshape(-1)[0])
        finally:
            cam.activations_and_grads.release()
    heat = _fit_heatmap(np.asarray(grayscale[0], dtype=np.float32), x.shape[-2:])
    return Explanation(heat, "gradcam", _sigmoid(logit), seen)


def _sigmoid(z: float) -> float:
    """A numerically safe logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _fit_heatmap(heat: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (bilinear) to ``size = (H, W)``, clean NaNs and clip to ``[0, 1]``, as float32."""
    h, w = int(size[0]), int(size[1])
    if heat.shape != (h, w):
        heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = np.nan_to_num(heat, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


@contextlib.contextmanager
def _cpu_float32(detector: Detector) -> Iterator[None]:
    """Run on the CPU in float32, then put the detector back where and as it was."""
    tensors = list(detector.parameters()) + list(detector.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    moved = device.type != "cpu" or dtype != torch.float32
    if moved:
        detector.to(device="cpu", dtype=torch.float32)
    try:
        yield
    finally:
        if moved:
            detector.to(device=device, dtype=dtype)


@contextlib.contextmanager
def _grad_state(detector: Detector) -> Iterator[None]:
    """Eval mode and frozen parameters (gradients flow from the input); all restored after.

    Grad-CAM only needs gradients of activations, which the input's ``requires_grad`` gives;
    freezing the parameters skips weight gradients and leaves any stored ``.grad`` untouched.
    """
    was_training = detector.training
    params = list(detector.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    detector.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
        detector.train(was_training)


Reshape = Callable[[torch.Tensor], torch.Tensor]


def _target_layer(net: nn.Module) -> tuple[nn.Module, Reshape]:
    """The Grad-CAM target layer of a timm network and the transform to ``[B, C, h, w]``.

    ViT-like models (``blocks`` and ``num_prefix_tokens``): ``blocks[-1].norm1``, tokens reshaped
    to a grid without the prefix (CLS, register) tokens. CNNs: the module of timm's last
    ``feature_info`` stage, else the last ``nn.Conv2d``.

    Raises:
        ValueError: no suitable layer.
    """
    blocks = getattr(net, "blocks", None)
    prefix = getattr(net, "num_prefix_tokens", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) and prefix is not None:
        last = blocks[-1]
        layer = getattr(last, "norm1", None)
        layer = layer if isinstance(layer, nn.Module) else last
        return layer, _TokensToMap(int(prefix), _grid_size(net))
    layer, channels = _feature_stage(net)
    if layer is None:
        layer = _last_conv(net)
        channels = getattr(layer, "out_channels", None)
    if layer is None:
        raise ValueError(f"{type(net).__name__} has no feature stage or Conv2d to attach to")
    return layer, _TokensToMap(0, None, channels)


def _feature_stage(net: nn.Module) -> tuple[nn.Module | None, int | None]:
    """timm's last ``feature_info`` module and its channel count, if it can be found."""
    info = getattr(net, "feature_info", None)
    if not info:
        return None, None
    try:
        last = info[-1]
        name, channels = str(last["module"]), last.get("num_chs")
        module = net.get_submodule(name) if name else None
    except (AttributeError, KeyError, IndexError, TypeError):
        return None, None
    return module, (int(channels) if channels else None)


def _last_conv(net: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` in module order, or None."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def _grid_size(net: nn.Module) -> tuple[int, int] | None:
    """A ViT's patch grid, from ``patch_embed.grid_size`` when it has one."""
    grid = getattr(getattr(net, "patch_embed", None), "grid_size", None)
    if grid is None:
        return None
    try:
        return int(grid[0]), int(grid[1])
    except (TypeError, IndexError, ValueError):
        return None


class _TokensToMap:
    """Reshape a target layer's output to ``[B, C, h, w]``.

    ``[B, T, C]`` tokens lose their ``prefix`` tokens and become a ``grid`` (or the square) map;
    a channels-last ``[B, h, w, C]`` map (Swin and the like) is permuted; ``[B, C, h, w]`` passes.
    """

    def __init__(
        self, prefix: int, grid: tuple[int, int] | None, channels: int | None = None
    ) -> None:
        self.prefix = prefix
        self.grid = grid
        self.channels = channels

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            nhwc = self.channels is not None and t.shape[1] != self.channels
            return t.permute(0, 3, 1, 2) if nhwc and t.shape[-1] == self.channels else t
        if t.ndim != 3:
            raise ValueError(f"cannot make a 2-D map of a target output of shape {tuple(t.shape)}")
        tokens = t[:, self.prefix :]
        h, w = self._hw(tokens.shape[1])
        return tokens.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def _hw(self, n: int) -> tuple[int, int]:
        if self.grid is not None and self.grid[0] * self.grid[1] == n:
            return self.grid
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid")
        return side, side


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def _occlusion(detector: Detector, image: Image.Image, grid: int, batch_size: int) -> Explanation:
    """Occlusion heatmap: drop in P(fake) when each lattice cell is greyed out."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    if detector.members:  # members preprocess their own way: occlude the image, not a tensor
        return _occlusion_fusion(detector, image, grid, batch_size)
    x, seen = _preprocess(detector.spec.preprocessing, image)
    x = x.to(_module_device(detector))
    base = float(detector.predict_proba(x)[0])
    cells = _cells(x.shape[-2], x.shape[-1], grid)
    scores = _score_batches(detector.predict_proba, _occluded_tensors(x[0], cells), batch_size)
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


def _occluded_tensors(
    x: torch.Tensor, cells: list[tuple[int, int, int, int]]
) -> Iterator[torch.Tensor]:
    """Copies of a normalised ``[3, H, W]`` tensor with one cell set to 0 (the mean colour)."""
    for top, bottom, left, right in cells:
        copy = x.clone()
        copy[:, top:bottom, left:right] = 0.0
        yield copy


def _score_batches(
    score: Callable[[torch.Tensor], torch.Tensor], items: Iterator[torch.Tensor], batch_size: int
) -> np.ndarray:
    """P(fake) of every item, scored ``batch_size`` at a time."""
    out: list[np.ndarray] = []
    batch: list[torch.Tensor] = []
    for item in items:
        batch.append(item)
        if len(batch) >= max(1, batch_size):
            out.append(score(torch.stack(batch)).detach().float().cpu().numpy())
            batch = []
    if batch:
        out.append(score(torch.stack(batch)).detach().float().cpu().numpy())
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
    cells = torch.from_numpy(drop / top)[None, None]
    up = nn.functional.interpolate(cells, size=(h, w), mode="bilinear", align_corners=False)
    return np.clip(up[0, 0].numpy(), 0.0, 1.0).astype(np.float32)


def _occlusion_fusion(
    detector: Detector, image: Image.Image, grid: int, batch_size: int
) -> Explanation:
    """Occlusion for a fusion detector, whose members each preprocess images their own way.

    The lattice lies on the image at the fusion's (first member's) input geometry; cells are
    filled with that preprocessing's mean colour and each member re-preprocesses the result.
    The reported score is the fusion's P(fake) of the original image.
    """
    pre = detector.spec.preprocessing
    _, seen = _preprocess(pre, image)
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
    was_training = detector.training
    detector.eval()
    try:
        logits, _ = detector.image_logits([im.convert("RGB") for im in images], len(images))
    finally:
        detector.train(was_training)
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
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    heat = _fit_heatmap(np.asarray(heatmap, dtype=np.float32), rgb.shape[:2])
    blended = show_cam_on_image(
        rgb, heat, use_rgb=True, colormap=cv2.COLORMAP_JET, image_weight=1.0 - alpha
    )
    return Image.fromarray(blended, mode="RGB")


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
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_NEAREST)
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
