"""Shared fixtures: synthetic images in the seed's layout and tiny models. Nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY_MODEL = "test_efficientnet"


def synthetic_image(label: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A real-ish smooth image, or the same plus a periodic 2-pixel grid (an upsampling trace) for fakes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack(
        [yy * rng.uniform(60, 200), xx * rng.uniform(60, 200), (xx + yy) * rng.uniform(30, 120)],
        axis=-1,
    )
    base += rng.normal(0, 6, base.shape)
    if label == 1:
        grid = ((np.indices((size, size)).sum(axis=0) % 2) * 40.0)[..., None]
        base += grid
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_seed_layout(root: Path, n_per_group: int = 6, size: int = 40, seed: int = 0) -> Path:
    """The seed's Kaggle layout: AI/ and Real/ with files like green-apple-ohs-1.jpg."""
    rng = np.random.default_rng(seed)
    for cls, label in (("AI", 1), ("Real", 0)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for colour in ("green", "red"):
            for shot in ("ohs", "ss"):
                for i in range(1, n_per_group + 1):
                    img = synthetic_image(label, rng, size)
                    img.save(root / cls / f"{colour}-apple-{shot}-{i}.png")
    return root


@pytest.fixture
def seed_layout(tmp_path: Path) -> Path:
    """A small learnable dataset in the seed's layout (48 images per class)."""
    return make_seed_layout(tmp_path / "apples")


@pytest.fixture
def shared_data() -> Path:
    path = SHARED / "data" / "sd14-coco-imagenet"
    if not path.is_dir():
        pytest.skip(f"shared dev data not found at {path}")
    return path


@pytest.fixture
def shared_weights() -> Path:
    path = SHARED / "weights"
    if not (path / "tf_efficientnet_lite0.in1k.safetensors").is_file():
        pytest.skip(f"shared weights not found in {path}")
    return path


@pytest.fixture(autouse=True)
def _private_embedding_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own cache (embeddings, weights), never the user's, and never
    downloads: the hub counts as unreachable."""
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "embedding-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
