"""A trainable fp32 torch CLIP ViT-B/16 image tower, rebuilt from the int8 ONNX file we ship.

The built-in detectors run OpenAI's CLIP ViT-B/16 image tower as a dynamically int8-quantised ONNX
file: each weight matrix is stored as per-output-channel int8 with a scale (and a zero point), so
``W = (q - zero_point) * scale`` gives it back in fp32 to within half a quantisation step.
:func:`build_clip_tower` does that for every matrix, reads the fp32 tensors (embeddings,
LayerNorms, biases) as they are, and loads the lot into timm's
``vit_base_patch16_clip_quickgelu_224`` (CLIP uses QuickGELU). Online, :func:`build_clip_tower`
with ``hub=True`` takes timm's hub weights instead.

Two exporters wrote such files: Hugging Face's (``vision_model.encoder.layers.<k>.self_attn.q_proj``,
the file we ship) and timm's (``blocks.<k>.attn.qkv``, what :mod:`fakescope.embed.fetch` builds
online). Both are read: a matrix's module comes from its ``MatMulInteger`` node's name, since
the exporters leave weight initialisers unnamed.

The rebuilt tower is not the int8 file: the int8 file also quantises *activations* at run time,
so block outputs drift apart with depth (per-block CLS cosine about 0.999 at block 1 and 0.95 to
0.97 at block 12 on dev images). That is the int8 file's error, not the rebuild's; the parity
tests check the mapping where it is exact (the torch tower against its own ONNX export) and where
a wrong mapping would show (the first blocks against the int8 file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fakescope.embed.deltas import module_path

#: The timm architecture of OpenAI's CLIP ViT-B/16 image tower.
TIMM_ARCH = "vit_base_patch16_clip_quickgelu_224"
#: Its hub weights (the same weights as the int8 file, before quantisation).
HUB_NAME = f"{TIMM_ARCH}.openai"
EMBED_DIM = 512

# A module path as the two exporters name it -> timm's name, for the weight matrices.
_HF_LINEAR = re.compile(r"layers\.(\d+)\.(self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")
_TIMM_LINEAR = re.compile(r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|mlp\.fc[12])$")
_HF_TO_TIMM_LINEAR = {
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
# fp32 tensors of the Hugging Face export -> timm's name (``{k}`` is the block index).
_HF_TENSORS = {
    "vision_model.embeddings.class_embedding": "cls_token",
    "vision_model.embeddings.position_embedding.weight": "pos_embed",
    "vision_model.embeddings.patch_embedding.weight": "patch_embed.proj.weight",
    "vision_model.pre_layrnorm.weight": "norm_pre.weight",
    "vision_model.pre_layrnorm.bias": "norm_pre.bias",
    "vision_model.post_layernorm.weight": "norm.weight",
    "vision_model.post_layernorm.bias": "norm.bias",
}
_HF_BLOCK_TENSOR = re.compile(
    r"vision_model\.encoder\.layers\.(\d+)\."
    r"(layer_norm[12]\.(?:weight|bias)|self_attn\.(?:q|k|v|out)_proj\.bias|mlp\.fc[12]\.bias)$"
)


class TowerError(ValueError):
    """An ONNX file that is not a CLIP ViT-B/16 image tower this module can read."""


# --------------------------------------------------------------------------------------------
# Reading the int8 file
# --------------------------------------------------------------------------------------------


def dequantised_matrices(model: Any) -> dict[str, np.ndarray]:
    """Every int8 weight matrix of an ONNX graph, back in fp32, keyed by its module path.

    Matrices are returned in torch's ``[out, in]`` layout (ONNX ``MatMul`` stores ``[in, out]``).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in inits:
            continue
        q_name = node.input[1]
        base = q_name.removesuffix("_quantized")
        scale_name, zp_name = f"{base}_scale", (node.input[3] if len(node.input) > 3 else "")
        if scale_name not in inits:
            raise TowerError(f"no scale {scale_name!r} for the int8 weight {q_name!r}")
        q = numpy_helper.to_array(inits[q_name]).astype(np.float32)
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
        zp = numpy_helper.to_array(inits[zp_name]).astype(np.float32) if zp_name in inits else 0.0
        out[module_path(node.name)] = ((q - zp) * scale).T.copy()
    return out


def _fp32_tensors(model: Any) -> dict[str, np.ndarray]:
    """The graph's named fp32 tensors, plus named weights that the quantiser stored as int8
    (``X_quantized``, ``X_scale``, ``X_zero_point``; timm's export has its patch embedding so)."""
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    aux = ("_quantized", "_scale", "_zero_point")
    out = {
        k: v.astype(np.float32)
        for k, v in arrays.items()
        if v.dtype == np.float32 and not k.endswith(aux)
    }
    for name, q in arrays.items():
        base = name.removesuffix("_quantized")
        if base == name or base.startswith("onnx::") or f"{base}_scale" not in arrays:
            continue
        scale = arrays[f"{base}_scale"].astype(np.float32)
        zp = arrays.get(f"{base}_zero_point", np.zeros_like(scale)).astype(np.float32)
        if scale.ndim == 1 and scale.size == q.shape[0] and q.ndim > 1:  # per output channel
            shape = (-1,) + (1,) * (q.ndim - 1)
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        out[base] = (q.astype(np.float32) - zp) * scale
    return out


def timm_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """timm's state dict for :data:`TIMM_ARCH` (head = the 512-d projection) from an ONNX tower.

    Raises:
        TowerError: the graph lacks a tensor the tower needs, or has one of the wrong shape.
    """
    mats, tensors = dequantised_matrices(model), _fp32_tensors(model)
    sd: dict[str, np.ndarray] = {}
    if any("vision_model" in k for k in mats):
        _hf_into(sd, mats, tensors)
    else:
        _timm_into(sd, mats, tensors)
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    out["cls_token"] = out["cls_token"].reshape(1, 1, -1)
    out["pos_embed"] = out["pos_embed"].reshape(1, -1, out["pos_embed"].shape[-1])
    out["head.bias"] = torch.zeros(out["head.weight"].shape[0])
    return out


def _hf_into(sd: dict[str, np.ndarray], mats: dict, tensors: dict) -> None:
    """Hugging Face names: separate q/k/v projections, fused into timm's ``qkv``."""
    qkv: dict[int, dict[str, np.ndarray]] = {}
    for path, w in mats.items():
        if path.endswith("visual_projection"):
            sd["head.weight"] = w
            continue
        m = _HF_LINEAR.search(path)
        if m is None:
            raise TowerError(f"unexpected int8 matrix {path!r}")
        k, name = int(m.group(1)), m.group(2)
        if name in _HF_TO_TIMM_LINEAR:
            sd[f"blocks.{k}.{_HF_TO_TIMM_LINEAR[name]}.weight"] = w
        else:
            qkv.setdefault(k, {})[name[len("self_attn.") :][0]] = w
    for name, arr in tensors.items():
        if name in _HF_TENSORS:
            sd[_HF_TENSORS[name]] = arr
            continue
        m = _HF_BLOCK_TENSOR.match(name)
        if m is None:
            continue
        k, rest = int(m.group(1)), m.group(2)
        rest = rest.replace("layer_norm", "norm").replace("self_attn.out_proj", "attn.proj")
        if rest.startswith("self_attn."):
            qkv.setdefault(k, {})[f"{rest[len('self_attn.')]}_bias"] = arr
        else:
            sd[f"blocks.{k}.{rest}"] = arr
    for k, parts in qkv.items():
        sd[f"blocks.{k}.attn.qkv.weight"] = np.concatenate([parts[c] for c in "qkv"])
        sd[f"blocks.{k}.attn.qkv.bias"] = np.concatenate([parts[f"{c}_bias"] for c in "qkv"])


def _timm_into(sd: dict[str, np.ndarray], mats: dict, tensors: dict) -> None:
    """timm names (the online rebuild of :mod:`fakescope.embed.fetch`): mostly one to one."""
    for path, w in mats.items():
        m = _TIMM_LINEAR.search(path)
        if m is not None:
            sd[f"blocks.{m.group(1)}.{m.group(2)}.weight"] = w
        elif path.split(".")[-1] == "head" or path.endswith("forward_head"):
            sd["head.weight"] = w
        else:
            raise TowerError(f"unexpected int8 matrix {path!r}")
    for name, arr in tensors.items():
        key = name.removeprefix("vit.")
        if key in ("cls_token", "pos_embed") or key.startswith(("patch_embed.", "norm", "blocks.")):
            sd[key] = arr


# --------------------------------------------------------------------------------------------
# The tower
# --------------------------------------------------------------------------------------------


class ClipTower(nn.Module):
    """CLIP's image tower as a timm ViT, with the pieces a fine-tuning loop needs.

    ``forward`` gives what the int8 file gives: the projected embedding and the hidden state after
    the last block (before the final LayerNorm). :meth:`tokens` runs the stem and the first blocks
    (the frozen part whose output can be cached); :meth:`tail` runs the rest.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    @property
    def depth(self) -> int:
        """Number of transformer blocks."""
        return len(self.vit.blocks)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token, positions and the pre-LayerNorm: block 0's input."""
        v = self.vit
        return v.norm_pre(v._pos_embed(v.patch_embed(x)))

    def tokens(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """The input of block ``upto`` (the output of block ``upto - 1``), ``[B, T, C]``."""
        h = self.stem(x)
        for blk in self.vit.blocks[:upto]:
            h = blk(h)
        return h

    def block_outputs(self, h: torch.Tensor, start: int = 0) -> list[torch.Tensor]:
        """The outputs of blocks ``start`` to the last, given block ``start``'s input."""
        outs = []
        for blk in self.vit.blocks[start:]:
            h = blk(h)
            outs.append(h)
        return outs

    def embed(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """The projected CLIP embedding from the last block's output."""
        return self.vit.forward_head(self.vit.norm(last_hidden))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.vit.blocks(self.stem(x))
        return self.embed(hidden), hidden


def empty_tower(state: dict[str, torch.Tensor] | None = None) -> ClipTower:
    """The architecture, randomly initialised: ViT-B/16, or the shape of ``state`` (a timm state
    dict, so that small stand-ins in the tests rebuild too; CLIP's heads are 64 wide)."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": EMBED_DIM}
    if state is not None:
        dim = int(state["cls_token"].shape[-1])
        grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
        kwargs = {
            "num_classes": int(state["head.weight"].shape[0]),
            "embed_dim": dim,
            "depth": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
            "num_heads": max(1, dim // 64),
            "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / dim,
            "img_size": grid * int(state["patch_embed.proj.weight"].shape[-1]),
        }
    vit = timm.create_model(TIMM_ARCH, pretrained=False, **kwargs)
    return ClipTower(vit).eval()


def build_clip_tower(source: str | os.PathLike[str] | None = None, hub: bool = False) -> ClipTower:
    """The fp32 tower: dequantised from an int8 ONNX file, or (``hub=True``) timm's hub weights.

    Raises:
        FileNotFoundError: the ONNX file is not there.
        TowerError: it is not a CLIP ViT-B/16 image tower.
    """
    if hub:
        import timm

        vit = timm.create_model(HUB_NAME, pretrained=True, num_classes=EMBED_DIM)
        return ClipTower(vit).eval()
    if source is None:
        raise ValueError("build_clip_tower needs an ONNX file (or hub=True)")
    import onnx

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        sd = timm_state_dict(onnx.load(str(path)))
        tower = empty_tower(sd)
        tower.vit.load_state_dict(sd, strict=True)
    except (KeyError, RuntimeError) as exc:  # a missing tensor, or one of another shape
        raise TowerError(f"{path} is not a CLIP ViT image tower this can rebuild: {exc}") from exc
    except Exception as exc:  # onnx raises its own types for files that are not ONNX
        if isinstance(exc, TowerError):
            raise TowerError(f"{path}: {exc}") from exc
        raise TowerError(f"{path} is not a loadable ONNX model: {exc}") from exc
    return tower.eval()


def export_tower(vit: nn.Module, dest: str | os.PathLike[str], int8: bool = True) -> Path:
    """Export a timm CLIP ViT (or a :class:`ClipTower`) as the shipped file is laid out:
    ``image_embeds`` (projected) and ``last_hidden_state`` outputs, opset 14 (each LayerNorm as
    ``ReduceMean`` nodes, which is how the ``layers`` pool finds the blocks); with ``int8``, its
    weights then quantised dynamically to int8 with onnxruntime, as the original was."""
    dest = Path(dest)
    tower = vit if isinstance(vit, ClipTower) else ClipTower(vit)
    size = int(tower.vit.patch_embed.img_size[0])
    fp32 = dest.with_name(dest.name + ".fp32") if int8 else dest
    try:
        with torch.no_grad():
            torch.onnx.export(
                tower.eval(),
                torch.zeros(1, 3, size, size),
                str(fp32),
                input_names=["pixel_values"],
                output_names=["image_embeds", "last_hidden_state"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                opset_version=14,
                dynamo=False,
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8)
    finally:
        if int8:
            fp32.unlink(missing_ok=True)
    return dest
