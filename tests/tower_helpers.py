"""Small CLIP-shaped towers for the tests: built with timm, exported and quantised like the
shipped int8 file (timm's names, opset 14, dynamic int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakescope.embed.tower import TIMM_ARCH, export_tower

#: 3 blocks, width 128 (2 heads of 64), 32 px input: fast enough for every test.
TINY = dict(depth=3, embed_dim=128, num_heads=2, num_classes=16, img_size=32)
#: The same at CLIP's own input size (224 px), for code that preprocesses like CLIP.
TINY_224 = {**TINY, "depth": 2, "img_size": 224}


def tiny_vit(seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    """A random CLIP-architecture ViT in which no two tensors are alike (the exporter merges
    identical constants, and a fresh LayerNorm's weights are all ones)."""
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model(TIMM_ARCH, pretrained=False, **(kwargs or TINY)).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vit


def export_fp32(vit: torch.nn.Module, dest: Path) -> Path:
    """Export like fakescope's online rebuild: projected embedding and last hidden state."""
    return export_tower(vit, dest, int8=False)


def export_int8(vit: torch.nn.Module, dest: Path) -> Path:
    """Export, then quantise weights to int8 with activations quantised at run time."""
    return export_tower(vit, dest)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
