"""Benchmark: every family on the generalisation protocol, with the rank check first.

The protocol (``fakescope.experiments.heldout``) leaves each generator of 2024-2026 out in turn,
and the pool's 2022 generators out together, and scores what was left out against today's
photos (held-out Unsplash and 2025 phone photos), with 95% intervals, ECE, train time and
images/s. Before any family is compared, the four detectors the team's held-out benchmark ranked
(``clip-baseline`` and ``clip-layers`` as they shipped before this protocol, and the retired
``clip-probe`` and ``clip-effnet-fusion``, taken from the git history where they shipped) are
scored on the same sets, and the benchmark's relations are checked one by one.

Run it by hand (it is not a test)::

    python bench/heldout.py --pool POOL_DIR            # builds the corpus once, then the table
    python bench/heldout.py --pool POOL_DIR --only layers,baseline

It only measures. The built-ins are made by the package, from the same corpus, with this bench's
saved row as their recorded figures::

    fakescope recipe clip-layers --corpus runs/heldout/corpus --out clip_layers.safetensors \
        --protocol "runs/heldout/family-layers_C300@dev+2024+.json"

POOL_DIR is built by ``../shared/tools/build_pool.py``; the dev set, the video clips and the int8
CLIP tower come from ``../shared``. Everything is cached under ``runs/heldout``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fakescope.data.corpus import build_corpus, read_corpus
from fakescope.experiments import heldout as H
from fakescope.train.families import CorpusFeatures, ProbeFamily, TunedFamily
from fakescope.train.recipes import POOL_2022, WEB_PHOTOS
from fakescope.train.tune import TuneConfig

ROOT = Path(__file__).resolve().parents[2]
REPO = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
CLIP = SHARED / "weights/clip_vit_b16_openai_visual.int8.onnx"
OUT = REPO / "runs/heldout"

#: The detectors the held-out benchmark ranked, as they shipped: (git commit, file).
REFERENCES = {
    "clip-baseline": ("cdb745c", "src/fakescope/zoo/clip_baseline.safetensors"),
    "clip-layers": ("cdb745c", "src/fakescope/zoo/clip_layers.safetensors"),
    "clip-probe": ("26fccf4^", "src/fakescope/zoo/clip_probe.safetensors"),
    "clip-effnet-fusion": ("26fccf4^", "src/fakescope/zoo/clip_effnet_fusion.safetensors"),
}
#: clip-layers trained on the video frames: its frames figure is its leave-one-scene-out one.
LAYERS_FRAMES_LOSO = (0.988, (0.97, 1.00))

FAMILIES = {
    f.name: f
    for f in (
        ProbeFamily("baseline C=10", pool="embed", c=10.0),
        ProbeFamily("baseline C=30", pool="embed", c=30.0),
        ProbeFamily("baseline C=100", pool="embed", c=100.0),
        ProbeFamily("layers C=3", pool="layers", c=3.0),
        ProbeFamily("layers C=30", pool="layers", c=30.0),
        ProbeFamily("layers C=100", pool="layers", c=100.0),
        ProbeFamily("layers C=300", pool="layers", c=300.0),
        ProbeFamily("layers C=1000", pool="layers", c=1000.0),
        TunedFamily("effort", TuneConfig(method="effort", rank=1, blocks=4, lr=1e-3)),
        TunedFamily("lora", TuneConfig(method="lora", rank=8, blocks=4, lr=1e-3)),
    )
}
#: Data choices (corpus rows no fold trains on). ``dev+2024+`` is the team's own check and what
#: the built-ins train on; ``no-web`` drops the dev set's COCO and ImageNet photos instead.
DATA = {"dev+2024+": POOL_2022, "no-web": WEB_PHOTOS, "all": ()}
log = logging.getLogger("heldout")


def corpus(pool: Path) -> Path:
    """The corpus folder (built once)."""
    out = OUT / "corpus"
    if not (out / "manifest.csv").is_file():
        build_corpus(out, SHARED / "data/sd14-coco-imagenet", pool, SHARED / "data/video-spotdiff")
    return out


def references() -> dict[str, Path]:
    """The four ranked detectors, checked out of the git history into ``runs/heldout/ref``."""
    out = {}
    for name, (rev, path) in REFERENCES.items():
        dest = OUT / "ref" / f"{name}.safetensors"
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True, capture_output=True
            ).stdout
            dest.write_bytes(blob)
        out[name] = dest
    return out


def reference_rows(feats: CorpusFeatures) -> dict[str, H.Row]:
    """The ranked detectors scored on the protocol's sets (they never saw the pool)."""
    import os

    from fakescope.eval.protocol import detector_scores
    from fakescope.models.checkpoint import load_detector

    os.environ.setdefault("FAKESCOPE_WEIGHTS", str(CLIP.parent))
    rows = {}
    for name, path in references().items():
        scores_file = OUT / "ref" / f"{name}.scores.npy"
        if scores_file.is_file():
            scores = np.load(scores_file)
        else:
            det = load_detector(path)
            scores = detector_scores(det, feats.corpus, workers=2, cache_dir=feats.cache_dir)
            np.save(scores_file, scores)
        frames = None
        if name == "clip-layers":
            auc, ci = LAYERS_FRAMES_LOSO
            frames = H.Cell("video frames", "video", 72, 72, auc, ci)
        rows[name] = H.score_fixed(name, feats.corpus, scores, frames_override=frames)
    return rows


def encoder_speed(
    feats: CorpusFeatures, pool: str, deltas: dict | None = None, n: int = 24
) -> float:
    """Images/s of decode + preprocess + int8 encoder, one image at a time."""
    from fakescope.data.images import load_image
    from fakescope.data.transforms import eval_transform
    from fakescope.embed.backbones import OnnxBackbone

    bb = OnnxBackbone(feats.tower_file, pool=pool, deltas=deltas)
    tf = eval_transform(bb.preprocessing)
    paths = feats.corpus["path"].iloc[:n]
    t0 = time.perf_counter()
    for p in paths:
        bb.embed(tf(load_image(p)).numpy()[None])
    return n / (time.perf_counter() - t0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True, type=Path, help="the pool from build_pool.py")
    parser.add_argument("--only", help="comma-separated family names (default: all)")
    parser.add_argument("--data", choices=sorted(DATA), default="dev+2024+", help="data choice")
    parser.add_argument(
        "--modern-only",
        action="store_true",
        help="fit only the modern folds (the ones that choose)",
    )
    parser.add_argument(
        "--rescore", action="store_true", help="score families saved by an earlier run (no fitting)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not CLIP.is_file():
        raise SystemExit(f"needs the CLIP tower at {CLIP}")
    feats = CorpusFeatures(read_corpus(corpus(args.pool)), CLIP, OUT / "cache")
    exclude = DATA[args.data]
    refs = reference_rows(feats)
    anchor = ProbeFamily("dev+2024+ layers", pool="layers", c=3.0)  # the team's own check
    refs[anchor.name] = H.run_family(anchor, feats, exclude=("era:2022",))
    print("== rank check: the held-out benchmark's ranking, on this protocol's sets ==")
    print(H.format_table(list(refs.values())))
    print(H.format_rank_check(H.rank_check(refs, corpus=feats.corpus)))
    names = args.only.split(",") if args.only else list(FAMILIES)
    rows = []
    for name in names:
        fam = FAMILIES[name]
        saved = OUT / f"family-{name.replace(' ', '_').replace('=', '')}@{args.data}.json"
        if args.rescore and saved.with_suffix(".npz").is_file():
            before = json.loads(saved.read_text()) if saved.is_file() else {}
            row = H.score_folds(
                name, feats.corpus, dict(np.load(saved.with_suffix(".npz"))), exclude
            )
            row.train_s, row.images_per_s = before.get("train_s"), before.get("images_per_s")
        else:
            groups = ("modern",) if args.modern_only else None
            row = H.run_family(fam, feats, exclude=exclude, groups=groups)
            row.images_per_s = encoder_speed(feats, fam.pool)
            np.savez_compressed(saved.with_suffix(".npz"), **row.logits)
        saved.write_text(json.dumps(row.to_dict(), indent=2, default=float))
        rows.append(row)
        print(H.format_table(rows), flush=True)
    print(f"\n== families, data {args.data} (not trained on: {', '.join(exclude) or 'nothing'}) ==")
    print(H.format_table(list(refs.values()) + rows))
    by = {r.name: r for r in rows}
    for a, b in (
        ("layers C=300", "baseline C=30"),
        ("effort", "layers C=3"),
        ("lora", "layers C=3"),
    ):
        if a in by and b in by:
            ci = H.paired_difference(feats.corpus, by[a], by[b], "modern")
            diff = by[a].group_mean("modern") - by[b].group_mean("modern")
            span = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "(a fold is missing)"
            print(f"modern: {a} - {b} = {diff:+.3f}, 95% interval {span}")
    print("\n== calibration (ECE; shares at 0.5) ==")
    print(H.format_calibration(rows))


if __name__ == "__main__":
    main()
