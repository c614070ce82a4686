"""ZED-lite: a one-class detector from a model of real images only, sized for 2 CPU cores.

ZED (Cozzolino et al., "Zero-shot detection of AI-generated images", ECCV 2024) trains a lossless
image coder on real photos only; an image whose actual coding cost (NLL) is low compared with
the coder's own expected cost (the entropy of its predicted distributions) is suspicious,
because generators produce pixels that are "too predictable". Here the coder is a small causal
(masked-convolution) predictor of luminance with a discretised logistic output, trained for a
few minutes on real photos (the dev train split's reals and the pool's reals not held back).
Each image gets NLL, entropy and their gap at three scales (a native 256 px centre crop, then
the whole 512 px image averaged down twice), nine numbers. Two scores:

* ``zed``: one-class, the Mahalanobis distance of those numbers from the real photos' (no fake
  image is used at all);
* ``zed-gap``: the zero-shot statistic, minus the full-resolution gap.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fakescope.embed.backbones import Backbone
from fakescope.embed.cache import EmbeddingCache, embed_frame
from fakescope.models.detector import Preprocessing
from fakescope.utils import file_digest

log = logging.getLogger("protocol.zed")
STEPS = 1200
PATCH = 48
CROP = 256


class MaskedConv(nn.Conv2d):
    """A convolution that sees only pixels above, and left on the same row (causal order)."""

    def __init__(self, cin: int, cout: int, k: int, first: bool) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones_like(self.weight)
        c = k // 2
        mask[:, :, c, c + (0 if first else 1) :] = 0
        mask[:, :, c + 1 :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class Coder(nn.Module):
    """Predicts each grey level's discretised logistic (mean, log scale) from causal context."""

    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [MaskedConv(1, ch, 7, True)] + [MaskedConv(ch, ch, 3, False) for _ in range(4)]
        )
        self.out = nn.Conv2d(ch, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = (x - 127.5) / 64
        for i, layer in enumerate(self.layers):
            h = F.gelu(layer(h)) + (h if i else 0)
        mu, log_s = self.out(h).chunk(2, 1)
        return mu * 64 + 127.5, log_s.clamp(-3, 5)


def _cdf(v: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    up = torch.sigmoid((v + 0.5 - mu) / s)
    lo = torch.sigmoid((v - 0.5 - mu) / s)
    up = torch.where(v >= 255, torch.ones_like(up), up)
    lo = torch.where(v <= 0, torch.zeros_like(lo), lo)
    return up, lo


def nll_map(model: Coder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel coding cost in nats, and the predicted means and log scales."""
    mu, log_s = model(x)
    up, lo = _cdf(x, mu, log_s.exp())
    return -torch.log((up - lo).clamp_min(1e-9)), mu, log_s


_OFFSETS = torch.arange(-16, 17, dtype=torch.float32).view(1, -1, 1, 1)


def entropy_map(mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """Expected coding cost (nats) of each predicted distribution, over the 33 likeliest levels."""
    v = (torch.round(mu) + _OFFSETS).clamp(0, 255)
    up, lo = _cdf(v, mu, log_s.exp())
    first = torch.cat([torch.ones_like(v[:, :1], dtype=torch.bool), v[:, 1:] != v[:, :-1]], 1)
    p = ((up - lo) * first).clamp_min(1e-12)
    return -(p * p.log()).sum(1, keepdim=True)


def scales(grey: torch.Tensor) -> list[torch.Tensor]:
    """A native centre crop, then the whole image averaged down 2x and 4x (rounded levels)."""
    h, w = grey.shape[-2:]
    t, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    half = torch.round(F.avg_pool2d(grey, 2))
    return [grey[..., t : t + CROP, left : left + CROP], half, torch.round(F.avg_pool2d(half, 2))]


class ZedBackbone(Backbone):
    """The coder as a feature extractor: nine numbers per image, cached like embeddings."""

    def __init__(self, coder_path: Path) -> None:
        self.coder = Coder()
        self.coder.load_state_dict(torch.load(coder_path, weights_only=True))
        self.coder.eval()
        self.sha256 = file_digest(coder_path)
        self.pool = "zed"
        self.batch_size = 1
        self.preprocessing = Preprocessing(
            size=512, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0, resize_mode="crop"
        )

    @torch.no_grad()
    def embed(self, x: np.ndarray) -> np.ndarray:
        rgb = torch.from_numpy(np.asarray(x, np.float32)) * 255
        grey = torch.round(0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])
        out = []
        for g in grey:
            feats = []
            for s in scales(g[None]):
                nll, mu, log_s = nll_map(self.coder, s)
                ent = entropy_map(mu, log_s)
                n, e = nll[..., 4:, 4:-4].mean().item(), ent[..., 4:, 4:-4].mean().item()
                feats += [n, e, n - e]
            out.append(np.array(feats, np.float32) / np.log(2))  # bits per pixel
        return np.stack(out)

    def spec(self) -> dict[str, Any]:
        return {"type": "zed-lite", "sha256": self.sha256, "crop": CROP, "version": 1}


def train_coder(paths: list[str], out: Path, steps: int = STEPS, seed: int = 0) -> Path:
    """Fit the coder on random patches of real photos at the three scales; save its weights."""
    from fakescope.data.images import load_image

    torch.manual_seed(seed)
    model = Coder()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    imgs = [
        torch.round(torch.from_numpy(np.asarray(load_image(p).convert("L"), np.float32)))[
            None, None
        ]
        for p in paths
    ]
    rng = np.random.default_rng(seed)
    for step in range(steps):
        batch = []
        for _ in range(16):
            img = imgs[rng.integers(len(imgs))]
            x = [img, torch.round(F.avg_pool2d(img, 2)), torch.round(F.avg_pool2d(img, 4))][
                rng.integers(3)
            ]
            h, w = x.shape[-2:]
            y0, x0 = rng.integers(0, h - PATCH), rng.integers(0, w - PATCH)
            batch.append(x[..., y0 : y0 + PATCH, x0 : x0 + PATCH])
        nll, _, _ = nll_map(model, torch.cat(batch))
        loss = nll[..., 4:, 4:-4].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            log.info("coder step %d: %.3f bits/pixel", step, loss.item() / np.log(2))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out


def real_training_paths(d: Any) -> list[str]:
    """Real photos the coder may learn from: dev train reals and the pool's training reals."""
    dev = d.dev[(d.dev["split"] == "train") & (d.dev["label"] == 0)]
    return [*dev["path"], *d.reals["path"]]


_STATE: dict[str, Any] = {}


def zed_features(df: pd.DataFrame, root: Path, timing: dict[str, float], d: Any) -> np.ndarray:
    """The nine coder numbers per row (NaN where a file failed), through the embedding cache.

    The coder is trained first (once, saved as ``root/coder.pt``) on ``d``'s real photos.
    """
    if "backbone" not in _STATE:
        coder = root / "coder.pt"
        if not coder.is_file():
            t0 = time.perf_counter()
            train_coder(real_training_paths(d), coder)
            _STATE["train_s"] = time.perf_counter() - t0
        _STATE["backbone"] = ZedBackbone(coder)
    bb = _STATE["backbone"]
    with EmbeddingCache(root / "cache", bb.cache_id) as cache:
        x, _ = embed_frame(bb, df, cache=cache, workers=2)
    if "zed" not in timing:
        from protocol import encoder_speed

        timing["zed"] = encoder_speed(bb, df, n=8)
    return x


def one_class(x_real: np.ndarray) -> Any:
    """Mahalanobis distance from the real photos' feature distribution (a Ledoit-Wolf fit)."""
    from sklearn.covariance import LedoitWolf

    fit = LedoitWolf().fit(x_real[np.isfinite(x_real).all(axis=1)])

    def score(v: np.ndarray) -> np.ndarray:
        out = np.full(len(v), np.nan)
        ok = np.isfinite(v).all(axis=1)
        out[ok] = fit.mahalanobis(v[ok])
        return out

    return score


def supervised(x: np.ndarray, y: np.ndarray) -> Any:
    """A logistic head on the standardised coder numbers (uses the dev fakes too)."""
    from sklearn.linear_model import LogisticRegression

    ok = np.isfinite(x).all(axis=1)
    m, s = x[ok].mean(0), x[ok].std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((x[ok] - m) / s, y[ok])

    def score(v: np.ndarray) -> np.ndarray:
        out = np.full(len(v), np.nan)
        good = np.isfinite(v).all(axis=1)
        out[good] = clf.decision_function((v[good] - m) / s)
        return out

    return score


def zed_rows(f: Any, d: Any, timing: dict[str, float]) -> list[dict[str, Any]]:
    """The ZED family's rows: one-class (real training photos only) and supervised."""
    train = (d.dev["split"] == "train").to_numpy()
    y = d.dev["label"].to_numpy()
    return [
        _row("zed (one-class)", one_class(f.dev[train & (y == 0)]), f, d, timing),
        _row("zed (supervised)", supervised(f.dev[train], y[train]), f, d, timing),
    ]


def _row(name: str, score: Any, f: Any, d: Any, timing: dict[str, float]) -> dict[str, Any]:
    from protocol import in_distribution, score_manifest, summarise

    t0 = time.perf_counter()
    z = score(f.proto)
    res = score_manifest(d.proto, z)
    return {
        "name": name,
        "kind": "zed",
        "in_dist": in_distribution(score(f.dev), d),
        "sets": [r.to_dict() for r in res],
        **summarise(res),
        "logo": None,
        "train_s": _STATE.get("train_s", 0.0) + time.perf_counter() - t0,
        "images_per_s": timing.get("zed"),
        "_z": z,
        "_score": score,
    }
