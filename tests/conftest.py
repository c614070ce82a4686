"""Shared fixtures: synthetic images in the seed's layout and tiny models. Nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download


from .helpers import SHARED, make_seed_layout, pin_worker  # noqa: F401 (SHARED: for the fixtures)

pin_worker()


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
