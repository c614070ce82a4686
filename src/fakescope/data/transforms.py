"""Image → tensor transforms built from a detector's stored preprocessing, plus training augmentations.

The evaluation transform (predict, serve, evaluate) is Pillow and numpy only: the same pixels as
torchvision's ``Resize`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` (tested against it), without
importing torchvision, which costs about a second at start-up. :meth:`EvalTransform.array` gives a
numpy array (scoring needs no torch); calling it gives a torch tensor (datasets for training and
evaluation). Training transforms use torchvision.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from fakescope.config import AUGMENTATIONS  # declared with the training options

if TYPE_CHECKING:  # torch comes with the train extra; scoring uses EvalTransform.array
    import torch

_INTERP_NAMES = ("bicubic", "bilinear", "nearest", "lanczos")
_PIL_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass
class Preprocessing:
    """How an image becomes the model's input tensor; travels with every checkpoint.

    ``resize_mode`` is ``"resize"`` (timm's eval transform: resize the short side to
    ``size / crop_pct`` then centre-crop ``size``) or ``"crop"`` (centre-crop ``size`` pixels at the
    native resolution, padding small images, which keeps the pixel-level traces generators leave).
    """

    size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    resize_mode: str = "resize"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; ignores unknown keys so old files still load."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(x) for x in known[key])
        return cls(**known)


@dataclass
class AugmentConfig:
    """Training augmentations (CNNDetection recipe: Gaussian blur and JPEG re-compression).

    Attributes:
        names: which of ``flip``, ``blur``, ``jpeg`` to apply.
        prob: chance of each of blur and JPEG per image.
        blur_sigma: range of the Gaussian sigma.
        jpeg_quality: range of the JPEG quality.
    """

    names: Sequence[str] = ("flip",)
    prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_quality: tuple[int, int] = (30, 100)

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(
                f"unknown augmentation(s) {sorted(unknown)}; choose from {AUGMENTATIONS}"
            )


class BlurJpeg:
    """Randomly blur and/or JPEG re-encode a PIL image, as in Wang et al. (CNNDetection, 2020)."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, img: Image.Image) -> Image.Image:
        if "blur" in self.cfg.names and random.random() < self.cfg.prob:
            sigma = random.uniform(*self.cfg.blur_sigma)
            if sigma > 0:
                img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
        if "jpeg" in self.cfg.names and random.random() < self.cfg.prob:
            img = jpeg_reencode(img, random.randint(*self.cfg.jpeg_quality))
        return img


def jpeg_reencode(img: Image.Image, quality: int) -> Image.Image:
    """Encode and decode an RGB image as JPEG at ``quality``."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _geometry(pre: Preprocessing, train: bool) -> list[Callable]:
    """torchvision's geometry steps (training; evaluation uses :class:`EvalTransform`)."""
    from torchvision import transforms as T

    size = pre.size
    if pre.resize_mode == "crop":
        crop = T.RandomCrop if train else T.CenterCrop
        return [crop(size, pad_if_needed=True)] if train else [crop(size)]
    _check_resize_mode(pre)
    interp = T.InterpolationMode(
        pre.interpolation if pre.interpolation in _INTERP_NAMES else "bicubic"
    )
    crop = T.RandomCrop(size) if train else T.CenterCrop(size)
    return [T.Resize(short_side_for(pre), interpolation=interp, antialias=True), crop]


def _check_resize_mode(pre: Preprocessing) -> None:
    if pre.resize_mode not in ("resize", "crop"):
        raise ValueError(f"unknown resize_mode {pre.resize_mode!r}; use 'resize' or 'crop'")


def short_side_for(pre: Preprocessing) -> int:
    """The short side the ``resize`` mode resizes to before its centre crop."""
    return int(round(pre.size / max(pre.crop_pct, 1e-6)))


def _to_tensor(pre: Preprocessing) -> list[Callable]:
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(mean=list(pre.mean), std=list(pre.std))]


class EvalTransform:
    """The deterministic transform used by evaluate, predict and serve, with Pillow and numpy.

    ``resize``: the short side to ``size / crop_pct`` (Pillow's filter of ``interpolation``), then
    the centre ``size`` square; ``crop``: the centre ``size`` square at the native resolution,
    zero-padded when the image is smaller. Then ``[0, 1]`` floats, normalised by ``mean`` and
    ``std``, as ``[3, size, size]`` float32.
    """

    def __init__(self, pre: Preprocessing) -> None:
        _check_resize_mode(pre)
        self.pre = pre
        self._mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 1, 3)
        self._std = np.asarray(pre.std, dtype=np.float32).reshape(1, 1, 3)

    def array(self, img: Image.Image) -> np.ndarray:
        """The normalised ``[3, size, size]`` float32 array of an image."""
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        rgb = _resize_short_side(rgb, self.pre)
        pixels = _centre_crop(np.asarray(rgb), self.pre.size)
        x = (pixels.astype(np.float32) / np.float32(255.0) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """The same array as a torch tensor (for torch datasets and training code)."""
        import torch

        return torch.from_numpy(self.array(img))


def resized_size(size: tuple[int, int], pre: Preprocessing) -> tuple[int, int]:
    """``(width, height)`` of an image of ``size`` after the resize step (the short side to
    :func:`short_side_for`, torchvision's rule for the long side; unchanged in ``crop`` mode)."""
    w, h = size
    if pre.resize_mode != "resize":
        return w, h
    short = short_side_for(pre)
    lo, hi = (w, h) if w <= h else (h, w)
    return (short, int(short * hi / lo)) if w <= h else (int(short * hi / lo), short)


def crop_origin(size: tuple[int, int], crop: int) -> tuple[int, int]:
    """``(left, top)`` of the centre ``crop`` square in an image of ``size`` (negative where it
    is zero-padded: torchvision's ``CenterCrop``, the extra pixel of an odd padding right and
    bottom)."""
    w, h = size
    pad_w, pad_h = max(crop - w, 0), max(crop - h, 0)
    left = int(round((w + pad_w - crop) / 2.0)) - pad_w // 2
    top = int(round((h + pad_h - crop) / 2.0)) - pad_h // 2
    return left, top


def _resize_short_side(img: Image.Image, pre: Preprocessing) -> Image.Image:
    """The image after the resize step (:func:`resized_size`), with Pillow's filter."""
    size = resized_size(img.size, pre)
    if size == img.size:
        return img
    return img.resize(size, _PIL_INTERP.get(pre.interpolation, Image.Resampling.BICUBIC))


def _centre_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` square of ``[H, W, 3]`` pixels (:func:`crop_origin`), zero-padded
    first where smaller."""
    h, w = pixels.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        pixels = np.pad(pixels, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
    left, top = crop_origin((w, h), size)
    top, left = top + ph // 2, left + pw // 2
    return pixels[top : top + size, left : left + size]


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The deterministic transform used by evaluate, predict and serve (:class:`EvalTransform`)."""
    return EvalTransform(pre)


def train_transform(
    pre: Preprocessing, aug: AugmentConfig | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """The training transform: optional blur/JPEG, then random crop (and flip), then normalise."""
    aug = aug or AugmentConfig()
    steps: list[Callable] = []
    if {"blur", "jpeg"} & set(aug.names):
        steps.append(BlurJpeg(aug))
    steps += _geometry(pre, train=True)
    if "flip" in aug.names:
        from torchvision import transforms as T

        steps.append(T.RandomHorizontalFlip())
    from torchvision import transforms as T

    return T.Compose(steps + _to_tensor(pre))
