"""Grad-CAM (Selvaraju et al., 2017) for detectors that are one torch network: the gradient of
the single calibrated logit with respect to the last feature stage. Needs the ``train`` extra
(torch and grad-cam); :func:`fakescope.infer.explain.explain_image` is the entry point.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakescope.infer.heatmaps import fit_heatmap, preprocess
from fakescope.models.detector import Detector


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


def gradcam(detector: Detector, image: Image.Image) -> tuple[np.ndarray, float, Image.Image]:
    """Grad-CAM of the detector's logit on its last feature stage, on the CPU in float32.

    Returns:
        The heatmap at the model's input size (``[H, W]`` in ``[0, 1]``), P(fake), and the image
        as the model saw it.
    """
    from pytorch_grad_cam import GradCAM

    pre = detector.spec.preprocessing
    arr, seen = preprocess(pre, image)
    x = torch.from_numpy(arr)
    layer, reshape = target_layer(detector.net)
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
    heat = fit_heatmap(np.asarray(grayscale[0], dtype=np.float32), x.shape[-2:])
    return heat, _sigmoid(logit), seen


def _sigmoid(z: float) -> float:
    """A numerically safe logistic function."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


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


def target_layer(net: nn.Module) -> tuple[nn.Module, Reshape]:
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
