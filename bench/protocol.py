"""Benchmark: every detector family on the selection protocol, beside the plain baseline.

The protocol (``fakescope.eval.protocol``) scores detectors on sets that image content cannot
win: AI and real video frames of the same scenes (scored within each scene), photographic fakes
against photos only, and two shortcut controls (real photos against painterly and squashed
copies of themselves). Every family here is trained on the shared dev set's train split
(``sd14-coco-imagenet``, one seeded split), calibrated on its val split and tested on its test
split for the in-distribution figure, then scored on the protocol.

Families (all on the int8 CLIP ViT-B/16 image tower of ``../shared/weights``):

* ``baseline``: L2-normalised ``image_embeds`` and a logistic head (C = 10), UnivFD-style; the
  20-line baseline that nothing worse may replace.
* ``layers``: the CLS token after every transformer block, each L2-normalised (RINE-style).
* ``crops``: ``image_embeds`` of four native-resolution 224 px crops, averaged (local evidence
  instead of a downscaled whole image).
* ``zed``: a one-class model of real images only, a causal pixel predictor trained on real
  photos, scored by coding surprisal (ZED-style, see ``bench/zed_lite.py``).
* ``+matched``: content-matched training pairs, the AI and real frames of the *other* video
  scenes (the spotdiff set is then scored leave-one-scene-out, so no test scene is trained on).
* ``+reals``: the pool's real photos that the protocol does not hold back.
* ``fusion``: a family's logit plus the ZED score, with the weight chosen on the protocol.
* the retired built-ins, scored as they shipped.

Leave-one-generator-out on the pool is printed beside each probe family, for reference only:
its fakes are art and its reals photos, so it rewards the content shortcut.

Run it by hand (it is not a test): ``python bench/protocol.py --pool POOL_DIR``, where POOL_DIR
is built by ``../shared/tools/build_pool.py``. ``--ship`` writes the chosen families into
``src/fakescope/zoo/``. Embeddings are cached under ``runs/protocol/cache``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fakescope.data.protocol_sets import build_protocol_sets, read_pool, split_pool_reals
from fakescope.data.splits import make_splits
from fakescope.embed.backbones import OnnxBackbone
from fakescope.embed.cache import EmbeddingCache, embed_frame
from fakescope.eval.metrics import bootstrap_ci
from fakescope.eval.protocol import (
    detector_scores,
    read_protocol_manifest,
    score_manifest,
    summarise,
)
from fakescope.train.probe import l2_normalise

ROOT = Path(__file__).resolve().parents[2]
REPO = Path(__file__).resolve().parents[1]
DEV = ROOT / "shared/data/sd14-coco-imagenet"
VIDEO = ROOT / "shared/data/video-spotdiff"
CLIP = ROOT / "shared/weights/clip_vit_b16_openai_visual.int8.onnx"
OUT = REPO / "runs/protocol"
ZOO = REPO / "src/fakescope/zoo"
SCENES = ("cat", "cooking", "sunset")
RETIRED = ("clip-probe", "clip-effnet-fusion")

log = logging.getLogger("protocol")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class Data:
    """Every table the families use: the dev split, the protocol sets, the pool's reals."""

    dev: pd.DataFrame  # path, label (0/1), source, split
    proto: pd.DataFrame  # the protocol manifest
    reals: pd.DataFrame  # the pool's real photos not held back by the protocol
    pool: pd.DataFrame  # the whole pool (for leave-one-generator-out)


def load_data(pool_dir: Path) -> Data:
    """Read the dev set (split once, seeded), the pool, and the protocol sets (built once)."""
    dev = pd.read_csv(DEV / "manifest.csv")
    dev["path"] = [str(DEV / p) for p in dev["path"]]
    dev["label"] = (dev["label"] == "fake").astype(int)
    dev["group"] = dev["source"]
    dev = make_splits(dev, seed=0)
    sets = OUT / "sets"
    if not (sets / "manifest.csv").is_file():
        log.info("building the protocol sets in %s", sets)
        build_protocol_sets(sets, VIDEO, pool_dir)
    proto = read_protocol_manifest(sets)
    proto["label"] = (proto["label"] == "fake").astype(int)
    pool = read_pool(pool_dir)
    pool["label"] = (pool["label"] == "fake").astype(int)
    reals, _ = split_pool_reals(pool.assign(label=np.where(pool["label"] == 1, "fake", "real")))
    return Data(dev, proto, pool.loc[reals.index], pool)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


class Crops(OnnxBackbone):
    """``image_embeds`` of four native-resolution 224 px crops (a 448 px centre square), each
    L2-normalised, averaged."""

    def __init__(self, path: Path) -> None:
        from fakescope.embed.backbones import CLIP_PREPROCESSING
        from fakescope.models.detector import Preprocessing

        pre = Preprocessing(**{**CLIP_PREPROCESSING.to_dict(), "size": 448, "resize_mode": "crop"})
        super().__init__(path, pool="embed", preprocessing=pre)

    def embed(self, x: np.ndarray) -> np.ndarray:
        tiles = [x[:, :, i : i + 224, j : j + 224] for i in (0, 224) for j in (0, 224)]
        embs = [super(Crops, self).embed(np.ascontiguousarray(t)) for t in tiles]
        return np.mean([l2_normalise(e) for e in embs], axis=0).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "type": "bench-crops"}


def backbone(kind: str) -> OnnxBackbone:
    """The frozen encoder behind a feature kind."""
    if kind == "crops":
        return Crops(CLIP)
    return OnnxBackbone(CLIP, pool=kind)


def features(kind: str, df: pd.DataFrame, timing: dict[str, float]) -> np.ndarray:
    """Cached embeddings of ``df`` for a feature kind; images/s of the encoder into ``timing``."""
    bb = backbone(kind)
    with EmbeddingCache(OUT / "cache", bb.cache_id) as cache:
        x, failures = embed_frame(bb, df, cache=cache, workers=2)
    for i, reason in failures:
        log.warning("%s: %s", df["path"].iloc[i], reason)
    if kind not in timing:
        timing[kind] = encoder_speed(bb, df)
    return x


def load_feats(kind: str, d: Data, timing: dict[str, float]) -> Feats:
    """A feature kind for every table (:data:`DEV_AND_PROTOCOL_ONLY`: NaN for the pool's rows)."""
    if kind == "zed":
        from zed_lite import zed_features

        def get(t: pd.DataFrame) -> np.ndarray:
            return zed_features(t, OUT / "zed", timing, d)
    else:

        def get(t: pd.DataFrame) -> np.ndarray:
            return features(kind, t, timing)

    dev, proto = get(d.dev), get(d.proto)
    if kind in DEV_AND_PROTOCOL_ONLY:
        nan = np.full((len(d.pool), dev.shape[1]), np.nan, np.float32)
        return Feats(dev, proto, nan[: len(d.reals)], nan)
    return Feats(dev, proto, get(d.reals), get(d.pool))


def encoder_speed(bb: OnnxBackbone, df: pd.DataFrame, n: int = 24) -> float:
    """Images/s of decode + preprocess + encoder on ``n`` files (one image per run)."""
    from fakescope.data.images import load_image
    from fakescope.data.transforms import eval_transform

    tf = eval_transform(bb.preprocessing)
    t0 = time.perf_counter()
    for p in df["path"].iloc[:n]:
        bb.embed(tf(load_image(p)).numpy()[None])
    return n / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A logistic probe on one feature kind, with optional extra training data."""

    name: str
    kind: str
    c: float = 1.0
    matched: bool = False
    reals: bool = False
    l2: bool = True


FAMILIES: tuple[Family, ...] = (
    Family("baseline", "embed", c=10.0),
    Family("baseline C=1", "embed", c=1.0),
    Family("baseline+reals", "embed", c=10.0, reals=True),
    Family("baseline+matched", "embed", c=10.0, matched=True),
    Family("crops", "crops", c=10.0),
    Family("crops+matched", "crops", c=10.0, matched=True),
    Family("layers", "layers", c=1.0),
    Family("layers+reals", "layers", c=1.0, reals=True),
    Family("layers+matched", "layers", c=1.0, matched=True),
    Family("layers+matched C=3", "layers", c=3.0, matched=True),
    Family("layers+matched+reals", "layers", c=1.0, matched=True, reals=True),
    Family("layers+matched+reals C=3", "layers", c=3.0, matched=True, reals=True),
)
#: Feature kinds computed on the dev set and the protocol sets only (costly, and dropped).
DEV_AND_PROTOCOL_ONLY = ("zed", "crops")


@dataclass
class Feats:
    """One feature kind for every table."""

    dev: np.ndarray
    proto: np.ndarray
    reals: np.ndarray
    pool: np.ndarray


def training_set(
    fam: Family, f: Feats, d: Data, drop_scene: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The family's training rows: dev train split, plus matched frames and extra reals."""
    train = (d.dev["split"] == "train").to_numpy()
    xs, ys = [f.dev[train]], [d.dev["label"].to_numpy()[train]]
    if fam.matched:
        m = (d.proto["set"] == "spotdiff").to_numpy()
        if drop_scene is not None:
            m = m & (d.proto["scene"] != drop_scene).to_numpy()
        xs.append(f.proto[m])
        ys.append(d.proto["label"].to_numpy()[m])
    if fam.reals:
        xs.append(f.reals)
        ys.append(np.zeros(len(f.reals), dtype=int))
    x, y = np.concatenate(xs), np.concatenate(ys)
    ok = np.isfinite(x).all(axis=1)
    return x[ok], y[ok]


def fit_head(fam: Family, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the logistic head; return its decision function on raw features."""
    prep = l2_normalise if fam.l2 else (lambda v: v)
    clf = LogisticRegression(C=fam.c, max_iter=5000).fit(prep(x), y)

    def logits(v: np.ndarray) -> np.ndarray:
        out = np.full(len(v), np.nan)
        ok = np.isfinite(v).all(axis=1)
        out[ok] = clf.decision_function(prep(v[ok]))
        return out

    logits.clf = clf  # type: ignore[attr-defined]
    return logits


def protocol_logits(fam: Family, f: Feats, d: Data) -> tuple[np.ndarray, Any, float]:
    """Logits on every protocol row, the head trained on all its data, and the train time.

    With ``matched``, each spotdiff scene is scored by a head that never saw that scene.
    """
    t0 = time.perf_counter()
    head = fit_head(fam, *training_set(fam, f, d))
    train_s = time.perf_counter() - t0
    z = head(f.proto)
    if fam.matched:
        for scene in SCENES:
            held = fit_head(fam, *training_set(fam, f, d, drop_scene=scene))
            m = ((d.proto["set"] == "spotdiff") & (d.proto["scene"] == scene)).to_numpy()
            z[m] = held(f.proto[m])
    return z, head, train_s


def in_distribution(z_dev: np.ndarray, d: Data) -> dict[str, Any]:
    """AUC on the dev test split with a bootstrap interval."""
    test = (d.dev["split"] == "test").to_numpy()
    y, s = d.dev["label"].to_numpy()[test], z_dev[test]
    auc = roc_auc_score(y, s)
    ci = bootstrap_ci(y, s, lambda a, b: roc_auc_score(a, b), n_boot=1000)
    return {"auc": float(auc), "ci": list(ci) if ci else None}


def pool_logo(fam: Family, f: Feats, d: Data) -> float:
    """Leave-one-generator-out on the pool (dev train + the other generators + train reals)."""
    fake = (d.pool["label"] == 1).to_numpy()
    held_reals = ~d.pool.index.isin(d.reals.index) & ~fake
    train = (d.dev["split"] == "train").to_numpy()
    aucs = []
    for gen in sorted(d.pool.loc[fake, "source"].unique()):
        g = (d.pool["source"] == gen).to_numpy()
        x = np.concatenate([f.dev[train], f.pool[fake & ~g], f.reals])
        y = np.concatenate(
            [d.dev["label"].to_numpy()[train], np.ones((fake & ~g).sum()), np.zeros(len(f.reals))]
        )
        head = fit_head(fam, x, y.astype(int))
        test = g | held_reals
        aucs.append(roc_auc_score(d.pool["label"].to_numpy()[test], head(f.pool[test])))
    return float(np.mean(aucs))


# --------------------------------------------------------------------------------------------
# Running the table
# --------------------------------------------------------------------------------------------


def run_family(fam: Family, feats: dict[str, Feats], d: Data, timing: dict) -> dict[str, Any]:
    """One row: in-distribution AUC, the protocol sets, LOGO, train time, images/s."""
    f = feats[fam.kind]
    z, head, train_s = protocol_logits(fam, f, d)
    results = score_manifest(d.proto, z)
    return {
        "name": fam.name,
        "in_dist": in_distribution(head(f.dev), d),
        "sets": [r.to_dict() for r in results],
        **summarise(results),
        "logo": None if fam.kind in DEV_AND_PROTOCOL_ONLY else pool_logo(fam, f, d),
        "train_s": train_s,
        "images_per_s": timing.get(fam.kind),
        "_z": z,
        "_head": head,
    }


def fusion_row(base: dict[str, Any], zed: dict[str, Any], d: Data, feats: dict) -> dict[str, Any]:
    """``base`` logit + w * ZED score (both standardised on dev val), w chosen on the protocol."""
    val = (d.dev["split"] == "val").to_numpy()
    zb_dev = base["_head"](feats[base["kind"]].dev)
    zz_dev = zed["_score"](feats["zed"].dev)
    sb, sz = np.nanstd(zb_dev[val]), np.nanstd(zz_dev[val])
    best = None
    for w in (0.0, 0.25, 0.5, 1.0, 2.0):
        z = base["_z"] / sb + w * zed["_z"] / sz
        res = score_manifest(d.proto, z)
        s = summarise(res)
        if best is None or s["score"] > best[0]["score"]:
            best = (s, res, w)
    s, res, w = best
    return {
        "name": f"fusion({base['name']} + {w:g} {zed['name']})",
        "in_dist": in_distribution(zb_dev / sb + w * zz_dev / sz, d),
        "sets": [r.to_dict() for r in res],
        **s,
        "logo": None,
        "train_s": base["train_s"] + zed["train_s"],
        "images_per_s": 1 / (1 / base["images_per_s"] + 1 / zed["images_per_s"]),
    }


def retired_rows(d: Data) -> list[dict[str, Any]]:
    """The built-ins that shipped before this benchmark, scored as they were."""
    import os

    from fakescope.models.checkpoint import load_detector

    os.environ.setdefault("FAKESCOPE_WEIGHTS", str(CLIP.parent))
    rows = []
    for name in RETIRED:
        path = OUT / "retired" / f"{name}.safetensors"
        if not path.is_file():
            log.warning("retired built-in %s not at %s; skipped", name, path)
            continue
        det = load_detector(path)
        z = detector_scores(det, d.proto, workers=2)
        dev_s = detector_scores(det, d.dev.assign(label=d.dev["label"]), workers=2)
        res = score_manifest(d.proto, z)
        rows.append(
            {
                "name": f"retired {name}",
                "in_dist": in_distribution(dev_s, d),
                "sets": [r.to_dict() for r in res],
                **summarise(res),
                "logo": None,
                "train_s": None,
                "images_per_s": None,
            }
        )
    return rows


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.2f},{ci[1]:.2f}]" if ci else "[n/a]"


def _ci3(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f},{ci[1]:.3f}]" if ci else "[n/a]"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The protocol table with the in-distribution AUC, LOGO, train time and images/s."""
    names = [s["name"] for s in rows[0]["sets"]]
    head = f"{'family':<34}{'in-dist AUC':<20}" + "".join(f"{n:<20}" for n in names)
    head += f"{'test mean':>9}{'penalty':>8}{'score':>7}{'LOGO':>7}{'train s':>8}{'img/s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        by = {s["name"]: s for s in r["sets"]}
        cells = "".join(
            f"{by[n]['auc']:.3f} {_ci(by[n]['ci']):<14}"
            if by[n]["auc"] is not None
            else f"{'n/a':<20}"
            for n in names
        )
        ind = r["in_dist"]
        lines.append(
            f"{r['name']:<34}{ind['auc']:.3f} {_ci3(ind['ci']):<14}{cells}"
            f"{r['test_mean']:>9.3f}{r['control_penalty']:>8.3f}{r['score']:>7.3f}"
            f"{_num(r['logo'], 7, '.3f')}{_num(r['train_s'], 8, '.2f')}"
            f"{_num(r['images_per_s'], 7, '.1f')}"
        )
    return "\n".join(lines)


def _num(x: float | None, width: int, fmt: str) -> str:
    return f"{'—':>{width}}" if x is None else f"{x:>{width}{fmt}}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True, type=Path, help="the pool from build_pool.py")
    parser.add_argument("--only", help="comma-separated family names (default: all)")
    parser.add_argument("--no-zed", action="store_true", help="skip the ZED family and fusion")
    parser.add_argument("--ship", action="store_true", help="write the chosen built-ins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not CLIP.is_file():
        raise SystemExit(f"needs the CLIP tower at {CLIP}")
    d = load_data(args.pool)
    fams = [f for f in FAMILIES if not args.only or f.name in args.only.split(",")]
    timing: dict[str, float] = {}
    kinds = sorted({f.kind for f in fams} | (set() if args.no_zed else {"zed"}))
    feats = {k: load_feats(k, d, timing) for k in kinds}
    rows = [run_family(f, feats, d, timing) | {"kind": f.kind} for f in fams]
    if not args.no_zed:
        from zed_lite import zed_rows

        zeds = zed_rows(feats["zed"], d, timing)
        best = max(rows, key=lambda r: r["score"])
        rows += zeds
        rows.append(fusion_row(best, max(zeds, key=lambda r: r["score"]), d, feats))
    rows += retired_rows(d)
    print(format_rows(rows))
    (OUT / "results.json").write_text(
        json.dumps(
            [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            indent=2,
            default=float,
        )
    )
    if args.ship:
        from ship import ship

        ship(d, feats)


if __name__ == "__main__":
    main()
