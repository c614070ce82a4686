"""The evaluation transform (Pillow and numpy) against torchvision's, pixel for pixel."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from fakescope.data.transforms import EvalTransform, Preprocessing, eval_transform
from fakescope.embed.backbones import CLIP_PREPROCESSING


def reference(pre: Preprocessing, img: Image.Image) -> np.ndarray:
    """torchvision's composition, as the transform was written before."""
    if pre.resize_mode == "crop":
        geometry = [T.CenterCrop(pre.size)]
    else:
        scale = int(round(pre.size / max(pre.crop_pct, 1e-6)))
        geometry = [
            T.Resize(scale, interpolation=T.InterpolationMode(pre.interpolation), antialias=True),
            T.CenterCrop(pre.size),
        ]
    steps = [*geometry, T.ToTensor(), T.Normalize(list(pre.mean), list(pre.std))]
    return T.Compose(steps)(img).numpy()


def photo(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((h // 8 + 1, w // 8 + 1, 1)))
    arr = np.clip(smooth[:h, :w] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)


@pytest.mark.parametrize(
    ("pre", "size"),
    [
        (CLIP_PREPROCESSING, (1200, 800)),  # landscape, CLIP's short-side resize
        (CLIP_PREPROCESSING, (333, 517)),  # portrait, odd sizes
        (CLIP_PREPROCESSING, (224, 224)),  # already the size: no resize
        (Preprocessing(size=224, crop_pct=0.875), (640, 480)),  # timm's eval transform
        (Preprocessing(size=64, interpolation="bilinear"), (101, 77)),
        (Preprocessing(size=64, interpolation="nearest"), (90, 150)),
        (Preprocessing(size=64, interpolation="lanczos"), (150, 90)),
        (Preprocessing(size=96, resize_mode="crop"), (301, 200)),  # native-resolution crop
        (Preprocessing(size=96, resize_mode="crop"), (51, 70)),  # smaller: zero padding, odd
    ],
)
def test_eval_transform_matches_torchvision(pre: Preprocessing, size: tuple[int, int]) -> None:
    img = photo(*size)
    got = eval_transform(pre)(img).numpy()
    want = reference(pre, img)
    assert got.shape == want.shape == (3, pre.size, pre.size)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_non_rgb_images_become_rgb() -> None:
    """Greyscale and RGBA inputs give three channels (torchvision would give one or four)."""
    tf = EvalTransform(CLIP_PREPROCESSING)
    grey, rgba = photo(300, 200, "L"), photo(300, 200, "RGBA")
    assert tf(grey).shape == tf(rgba).shape == (3, 224, 224)
    np.testing.assert_allclose(tf(grey).numpy(), reference(CLIP_PREPROCESSING, grey.convert("RGB")))


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown resize_mode 'squash'"):
        eval_transform(Preprocessing(resize_mode="squash"))


def test_predicting_imports_no_torchvision() -> None:
    """The inference path's preprocessing does not load torchvision (a second at start-up)."""
    code = (
        "import sys, PIL.Image\n"
        "from fakescope.data.transforms import eval_transform\n"
        "from fakescope.embed.backbones import CLIP_PREPROCESSING\n"
        "eval_transform(CLIP_PREPROCESSING)(PIL.Image.new('RGB', (300, 200)))\n"
        "print('torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
