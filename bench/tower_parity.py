"""Benchmark: the fp32 torch CLIP tower rebuilt from the int8 file, against the int8 file.

Prints, on corpus images (``bench/heldout.py`` builds the corpus):

* the per-block CLS cosine of the rebuilt tower against the int8 file (blocks 1-6 must be
  0.99 or more: a wrong mapping breaks block 1; later blocks drift with the int8 file's
  activation quantisation);
* the cosine of the rebuilt tower against its own fp32 ONNX export (the exact check);
* a ``layers`` probe fitted on the rebuilt tower's features against the same probe fitted on the
  int8 file's, on the dev test split and on the protocol's modern folds: the AUC of each and the
  difference (the team's bar: within 0.01).

Run by hand: ``python bench/tower_parity.py [--limit N]`` (fp32 forward passes: minutes).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fakescope.data.corpus import read_corpus
from fakescope.data.images import load_image
from fakescope.data.transforms import eval_transform
from fakescope.embed.backbones import CLIP_PREPROCESSING, OnnxBackbone
from fakescope.embed.tower import ClipTower, build_clip_tower
from fakescope.eval.measures import fast_auc
from fakescope.experiments import heldout as H
from fakescope.train.families import CorpusFeatures, calibration_rows, fit_head, l2_rows
from fakescope.train.recipes import POOL_2022

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared/weights/clip_vit_b16_openai_visual.int8.onnx"
OUT = REPO / "runs/heldout"


def torch_layers(tower: ClipTower, paths: list[str], batch: int = 16) -> np.ndarray:
    """The rebuilt tower's ``layers`` features (laid out as the int8 backbone's), fp32."""
    tf = eval_transform(CLIP_PREPROCESSING)
    out = []
    for i in range(0, len(paths), batch):
        x = torch.stack([tf(load_image(p)) for p in paths[i : i + batch]])
        with torch.no_grad():
            cls = [o[:, 0] for o in tower.block_outputs(tower.stem(x))]
        unit = [c / c.norm(dim=1, keepdim=True).clamp_min(1e-12) for c in cls]
        out.append((torch.cat(unit, dim=1) / np.sqrt(len(unit))).numpy())
    return np.concatenate(out)


def export_cosine(tower: ClipTower, paths: list[str]) -> float:
    """Lowest cosine of the rebuilt tower's embedding against its own fp32 ONNX export."""
    tf = eval_transform(CLIP_PREPROCESSING)
    x = torch.stack([tf(load_image(p)) for p in paths])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rebuilt.onnx"
        torch.onnx.export(
            tower,
            torch.zeros(1, 3, 224, 224),
            str(path),
            input_names=["pixel_values"],
            output_names=["image_embeds", "last_hidden_state"],
            dynamic_axes={"pixel_values": {0: "b"}, "image_embeds": {0: "b"}},
            opset_version=14,
            dynamo=False,
        )
        got = OnnxBackbone(path, pool="embed", batch_size=len(paths)).embed(x.numpy())
    with torch.no_grad():
        want = tower(x)[0].numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.min())


def probe_aucs(x: np.ndarray, corpus, rows: np.ndarray) -> dict[str, float]:
    """A ``layers`` probe (the default's C) on ``x``, per modern fold and the dev test split."""
    y = corpus["label"].to_numpy().astype(int)
    src = corpus["source"].astype(str).to_numpy()
    neg = H.negatives(corpus)
    out = {}
    for fold in H.make_folds(corpus, POOL_2022):
        if fold.group != "modern":
            continue
        train = fold.train & rows & ~calibration_rows(corpus, fold.train)
        coef, bias = fit_head(x[train], y[train], src[train], 300.0, True)
        z = l2_rows(np.nan_to_num(x)) @ coef + bias
        ((name, fakes),) = fold.tests.items()
        test = (fakes | neg) & rows
        out[name] = fast_auc(y[test], z[test])
        dev = (corpus["holdout"] == "dev-test").to_numpy() & rows
        out.setdefault("dev test split", fast_auc(y[dev], z[dev]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per source")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    corpus = read_corpus(OUT / "corpus")
    use = (corpus["era"].isin(["dev", "2024+"])).to_numpy()
    if args.limit:
        keep = corpus[use].groupby("source").head(args.limit).index
        use = corpus.index.isin(keep)
    feats = CorpusFeatures(corpus, CLIP, OUT / "cache")
    int8 = feats.get("layers")
    tower = build_clip_tower(CLIP).eval()
    idx = np.flatnonzero(use)
    t0 = time.perf_counter()
    rebuilt = np.full_like(int8, np.nan)
    rebuilt[idx] = torch_layers(tower, corpus["path"].iloc[idx].tolist())
    secs = time.perf_counter() - t0
    blocks = int8.shape[1] // 768
    a = int8[idx].reshape(len(idx), blocks, 768)
    b = rebuilt[idx].reshape(len(idx), blocks, 768)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    print(f"{len(idx)} images, rebuilt tower at {len(idx) / secs:.1f} img/s (fp32, 2 cores)")
    print("per-block CLS cosine vs int8, min:  " + " ".join(f"{v:.3f}" for v in cos.min(0)))
    print("per-block CLS cosine vs int8, mean: " + " ".join(f"{v:.3f}" for v in cos.mean(0)))
    exact = export_cosine(tower, corpus["path"].iloc[idx[:8]].tolist())
    print(f"rebuilt tower vs its own ONNX export: lowest cosine {exact:.6f}")
    on_int8, on_rebuilt = probe_aucs(int8, corpus, use), probe_aucs(rebuilt, corpus, use)
    print(f"{'layers probe (C=300)':<28}{'int8 file':>10}{'rebuilt':>10}{'diff':>8}")
    for name in on_int8:
        d = on_rebuilt[name] - on_int8[name]
        print(f"{name:<28}{on_int8[name]:>10.3f}{on_rebuilt[name]:>10.3f}{d:>+8.3f}")


if __name__ == "__main__":
    main()
