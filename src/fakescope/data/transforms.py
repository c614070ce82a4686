"""Image → tensor transforms built from a detector's stored preprocessing, plus training augmentations."""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
    "lanczos": T.InterpolationMode.LANCZOS,
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


AUGMENTATIONS = ("flip", "blur", "jpeg")


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
    size = pre.size
    if pre.resize_mode == "crop":
        crop = T.RandomCrop if train else T.CenterCrop
        return [crop(size, pad_if_needed=True)] if train else [crop(size)]
    if pre.resize_mode != "resize":
        raise ValueError(f"unknown resize_mode {pre.resize_mode!r}; use 'resize' or 'crop'")
    scale = int(round(size / max(pre.crop_pct, 1e-6)))
    interp = _INTERP.get(pre.interpolation, T.InterpolationMode.BICUBIC)
    crop = T.RandomCrop(size) if train else T.CenterCrop(size)
    return [T.Resize(scale, interpolation=interp, antialias=True), crop]


def _to_tensor(pre: Preprocessing) -> list[Callable]:
    return [T.ToTensor(), T.Normalize(mean=list(pre.mean), std=list(pre.std))]


def eval_transform(pre: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """The deterministic transform used by evaluate, predict and serve."""
    return T.Compose(_geometry(pre, train=False) + _to_tensor(pre))


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
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _to_tensor(pre))
