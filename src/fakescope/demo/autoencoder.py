"""The demo's simulated generator: a tiny conv autoencoder, trained for a few seconds, whose
transposed convolutions leave checkerboard/upsampling artefacts like those of image generators
(the idea of AutoGAN, Zhang, Karaman & Chang 2019). torch is imported only when it runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from fakescope.demo.photos import _crop

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_BATCH_SIZE = 16
_LEARNING_RATE = 2e-3
_FULL_RES_WEIGHT = 0.01  # smaller: stronger checkerboard artefacts in the fakes


def _build_autoencoder() -> torch.nn.Module:
    """Build the small generator: two stride-2 convs down, two transposed convs up."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 32, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(32, 3, kernel_size=4, stride=2, padding=1),
        nn.Sigmoid(),
    )


def _to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 HxWx3 crops into a float NCHW tensor in [0, 1], padded to a multiple of 4."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    pad_h, pad_w = -x.shape[2] % 4, -x.shape[3] % 4
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def _generator_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 loss at half resolution plus a small full-resolution L1 term.

    Like a GAN generator's loss, the half-resolution term does not pin down pixel-level
    detail: the 2x2-periodic checkerboard that the transposed convolutions make is
    invisible to it, so those artefacts stay in the output. The small full-resolution
    term only keeps their amplitude to a few grey levels.
    """
    import torch.nn.functional as F

    half = (F.avg_pool2d(y, 2) - F.avg_pool2d(x, 2)).abs().mean()
    return half + _FULL_RES_WEIGHT * (y - x).abs().mean()


def _train_autoencoder(
    photos: dict[str, tuple[np.ndarray, bool]], size: int, steps: int, seed: int
) -> torch.nn.Module:
    """Train the autoencoder briefly with Adam on random crops of all photos."""
    import torch

    names = list(photos)
    rng = np.random.default_rng([seed, 1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_autoencoder()
        opt = torch.optim.Adam(model.parameters(), lr=_LEARNING_RATE)
        model.train()
        for step in range(steps):
            batch = []
            for i in rng.integers(0, len(names), _BATCH_SIZE):
                img = photos[names[i]][0]
                h, w = img.shape[:2]
                pos = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))
                batch.append(_crop(img, pos, size))
            x = _to_tensor(batch)
            loss = _generator_loss(model(x), x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0 or step + 1 == steps:
                logger.debug("Autoencoder step %d/%d: L1 %.4f", step + 1, steps, loss.item())
    model.eval()
    return model


def _resynthesise(
    model: torch.nn.Module, crops: list[np.ndarray], grey: list[bool]
) -> list[np.ndarray]:
    """Pass crops through the autoencoder; outputs of greyscale sources stay greyscale."""
    import torch

    size_h, size_w = crops[0].shape[:2]
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(crops), 64):
            y = model(_to_tensor(crops[i : i + 64]))[:, :, :size_h, :size_w]
            y = y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
            out += list(y.permute(0, 2, 3, 1).numpy())
    for i, is_grey in enumerate(grey):
        if is_grey:
            g = np.round(out[i].astype(np.float32).mean(axis=2)).astype(np.uint8)
            out[i] = np.repeat(g[:, :, None], 3, axis=2)
    return out
