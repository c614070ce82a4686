"""Benchmark: the int8 CLIP tower with fixed activation ranges against its dynamic form.

Prints, for the tower with calibrated ranges (fakescope.embed.quant) against the file as
exported (activations quantised per run, so one image at a time):

* per-block CLS cosine on held-out corpus images, and whether an image scores the same alone and
  in a batch;
* model-only images/s on 2 CPU cores at batch sizes 1, 8 and 32;
* the generalisation protocol (fakescope.experiments.heldout) for the default's family and the
  baseline's: heads fitted on the dynamic features and applied to the fixed ones (the parity of
  shipping the same head), and heads refitted on the fixed features, with paired differences.

    python bench/static_quant.py --pool POOL_DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import heldout as B  # noqa: E402  (bench/heldout.py: the corpus, tower and output folder)

from fakescope.data.corpus import read_corpus  # noqa: E402
from fakescope.embed.backbones import OnnxBackbone  # noqa: E402
from fakescope.embed.quant import ranges_file  # noqa: E402
from fakescope.eval.calibration import apply_calibration  # noqa: E402
from fakescope.experiments import heldout as H  # noqa: E402
from fakescope.train.families import CorpusFeatures, ProbeFamily, fit_family, l2_rows  # noqa: E402

FAMILIES = (
    ProbeFamily("layers C=300", pool="layers", c=300.0),
    ProbeFamily("baseline C=30", pool="embed", c=30.0),
)


def held_out_tensors(feats: CorpusFeatures, n: int) -> np.ndarray:
    """``n`` preprocessed held-out images (test photos and modern fakes), fixed seed."""
    from fakescope.data.images import load_image
    from fakescope.data.transforms import eval_transform
    from fakescope.embed.backbones import CLIP_PREPROCESSING

    rows = feats.corpus[feats.corpus["holdout"].astype(str) == "test"]
    rows = rows.sample(min(n, len(rows)), random_state=1)
    tf = eval_transform(CLIP_PREPROCESSING)
    return np.stack([tf(load_image(p)).numpy() for p in rows["path"]])


def block_cosines(x: np.ndarray, tower: Path) -> None:
    """Per-block CLS cosine, fixed against dynamic, and the alone-vs-batch check."""
    dyn = OnnxBackbone(tower, pool="layers", activations="dynamic").embed(x)
    fixed = OnnxBackbone(tower, pool="layers", activations="fixed", batch_size=8)
    fx = fixed.embed(x)
    alone = np.concatenate([fixed.embed(x[i : i + 1]) for i in range(8)])
    blocks = dyn.shape[1] // 768
    cos = np.stack(
        [
            np.sum(dyn[:, k * 768 : (k + 1) * 768] * fx[:, k * 768 : (k + 1) * 768], axis=1)
            * blocks
            for k in range(blocks)
        ],
        axis=1,
    )
    print(f"{len(x)} held-out images; per-block CLS cosine, fixed ranges against dynamic")
    print("  min: ", " ".join(f"{v:.3f}" for v in cos.min(0)))
    print("  mean:", " ".join(f"{v:.3f}" for v in cos.mean(0)))
    print(f"alone vs in a batch of 8, largest difference: {np.abs(alone - fx[:8]).max():.2e}")


def speeds(x: np.ndarray, tower: Path) -> None:
    """Model-only images/s, pool ``layers``."""
    runs = [("dynamic", 1)] + [("fixed", b) for b in (1, 8, 32)]
    for activations, bs in runs:
        bb = OnnxBackbone(tower, pool="layers", activations=activations, batch_size=bs)
        bb.embed(x[:bs])  # warm up
        t0 = time.perf_counter()
        bb.embed(x)
        rate = len(x) / (time.perf_counter() - t0)
        print(f"  {activations:8s} batch {bs:2d}: {rate:6.1f} images/s (model only, 2 cores)")


def cross_row(
    family: ProbeFamily, dyn: CorpusFeatures, fixed: CorpusFeatures, exclude: Sequence[str]
) -> H.Row:
    """Each fold's head and calibration fitted on dynamic features, applied to fixed ones."""
    x_fixed = fixed.get(family.pool)
    logits = {}
    for fold in H.make_folds(dyn.corpus, exclude):
        fitted = fit_family(family, dyn, fold.train)
        z = l2_rows(x_fixed) @ fitted.coef + fitted.bias
        logits[fold.name] = np.stack([z, apply_calibration(z, fitted.calibration)])
    return H.score_folds(f"{family.name} (dynamic head)", dyn.corpus, logits, exclude)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True, type=Path, help="the pool from build_pool.py")
    parser.add_argument("--images", type=int, default=64, help="images for cosines and speed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    corpus = read_corpus(B.corpus(args.pool))
    if not ranges_file(B.CLIP).is_file():
        raise SystemExit(
            f"no ranges for {B.CLIP.name}: make them with `fakescope recipe clip-tower-ranges "
            f"--corpus {B.corpus(args.pool)} --out {ranges_file(B.CLIP)}`"
        )
    dyn = CorpusFeatures(corpus, B.CLIP, B.OUT / "cache")
    fixed = CorpusFeatures(corpus, B.CLIP, B.OUT / "cache", activations="fixed")
    x = held_out_tensors(dyn, args.images)
    block_cosines(x, B.CLIP)
    speeds(x, B.CLIP)
    exclude = B.POOL_2022
    rows = []
    for family in FAMILIES:
        rows.append(H.run_family(family, dyn, exclude=exclude))
        rows[-1].name = f"{family.name} (dynamic)"
        rows.append(cross_row(family, dyn, fixed, exclude))
        refit = H.run_family(family, fixed, exclude=exclude)
        refit.name = f"{family.name} (fixed, refitted)"
        rows.append(refit)
    for i in range(0, len(rows), 3):
        for other in rows[i + 1 : i + 3]:
            ci = H.paired_difference(corpus, other, rows[i], "modern")
            diff = other.group_mean("modern") - rows[i].group_mean("modern")
            span = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
            print(f"modern: {other.name} - dynamic = {diff:+.4f} {span}")
    print(H.format_table(rows))


if __name__ == "__main__":
    main()
