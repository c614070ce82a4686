"""Small CLIP-shaped towers for the tests: built with timm, exported and quantised like the
shipped int8 file (timm's names, opset 14, dynamic int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakescope.embed.tower import TIMM_ARCH, ClipTower

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
    vit = vit.vit if isinstance(vit, ClipTower) else vit
    size = int(vit.patch_embed.img_size[0])
    with torch.no_grad():
        torch.onnx.export(
            ClipTower(vit),
            torch.zeros(1, 3, size, size),
            str(dest),
            input_names=["pixel_values"],
            output_names=["image_embeds", "last_hidden_state"],
            dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
            opset_version=14,
            dynamo=False,
        )
    return dest


def export_int8(vit: torch.nn.Module, dest: Path) -> Path:
    """Export, then quantise weights to int8 with activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = dest.with_suffix(".fp32.onnx")
    export_fp32(vit, fp32)
    quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8)
    fp32.unlink()
    return dest


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
