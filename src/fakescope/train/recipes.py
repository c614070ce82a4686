"""The recipes that build the shipped detectors: family, data and calibration, in one place.

``fakescope recipe NAME --corpus DIR --out FILE`` (or :func:`build`) fits a built-in detector
from the development corpus (:mod:`fakescope.data.corpus`) exactly as the generalisation
protocol (:mod:`fakescope.experiments.heldout`) fitted it fold by fold, but on all of it:

* training rows: every corpus image except the video frames (a test in the protocol), the dev
  set's own test split (the in-distribution figure) and the sources the recipe excludes;
* calibration: Platt scaling on a share of the training rows chosen by group
  (:func:`~fakescope.train.families.calibration_rows`), so it mixes every generator;
* the head is fitted on the features the shipped detector computes: for a tuned family, the
  int8 tower with the tuned deltas written in (:mod:`fakescope.embed.deltas`), not the torch
  blocks it was tuned with;
* the out-of-depth guard on the training features, as for every probe.

The checkpoint stores the family, the data it saw (sources and counts), the calibration rows,
and the backbone by file name only, so it works on any machine that has the tower file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakescope.train.families import (
    CorpusFeatures,
    Family,
    ProbeFamily,
    TunedFamily,
    calibration_rows,
    fit_family,
    fit_head,
    l2_rows,
)
from fakescope.train.tune import TuneConfig

logger = logging.getLogger(__name__)

#: The guard's threshold: the 99th percentile of the training images' own distances. Measured on
#: the default: at the 99.5th a text screenshot (0.94 of the threshold) and a scanned page (1.00)
#: slipped under it, the training data now holding posters and stickers; at the 99th every
#: far-away test input is past it (1.06 to 1.96) and the skimage photos inside (0.74 to 0.92),
#: with 0 to 2.2% of the held-out photo sources flagged (docs/generalisation.md).
GUARD_QUANTILE = 0.99


@dataclass(frozen=True)
class Recipe:
    """A shipped detector: its family and the sources it does not train on (its file and its
    one-line description are in :data:`fakescope.zoo.BUILTINS`).

    Attributes:
        name: the built-in's name (``builtin:NAME``).
        family: how it is fitted.
        exclude: corpus sources left out of training (a data choice made on the protocol).
        activations: how a probe's int8 tower runs once shipped: ``fixed`` activation ranges
            (:mod:`fakescope.embed.quant`: an image scores the same alone or in a batch, so it
            runs in batches of :data:`SHIPPED_BATCH`) or ``dynamic`` (as exported, one image at
            a time). The head is fitted on the tower as exported either way; the same heads on
            fixed ranges score within 0.003 of it on the protocol (``bench/static_quant.py``).
    """

    name: str
    family: Family
    exclude: tuple[str, ...] = ()
    activations: str = "fixed"

    @property
    def file(self) -> str:
        """The file name it ships as (the zoo's for a built-in, else ``NAME.safetensors``)."""
        from fakescope.zoo import BUILTINS

        return BUILTINS.get(self.name, (f"{self.name}.safetensors",))[0]


#: The dev set's COCO and ImageNet photos (and the pool's ImageNet samples): low-quality web
#: photos, one of the data choices compared on the protocol (docs/generalisation.md).
WEB_PHOTOS = ("coco", "imagenet")
#: The pool's 2022 part (art-heavy fakes of 2022 and the photos that came with them). The
#: built-ins train on the dev set and the pool's 2024+ part, as the team's held-out check did.
POOL_2022 = ("era:2022",)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("clip-layers", ProbeFamily("layers C=300", pool="layers", c=300.0), POOL_2022),
        Recipe("clip-baseline", ProbeFamily("baseline C=30", pool="embed", c=30.0), POOL_2022),
    )
}


#: Images per run of a shipped tower with fixed activation ranges.
SHIPPED_BATCH = 16
#: Images per source for the tower's fixed activation ranges (:mod:`fakescope.embed.quant`).
RANGES_PER_SOURCE = 16


def calibrate_tower(corpus: pd.DataFrame, tower_file: str | Path, out: str | Path) -> Path:
    """Calibrate the int8 tower's activation ranges on a source-balanced sample of the corpus
    (:data:`RANGES_PER_SOURCE` training images of every source, never a held-out one) and write
    them to ``out`` with the tower's sha256; return the path."""
    from fakescope.data.images import load_image
    from fakescope.data.transforms import eval_transform
    from fakescope.embed.backbones import CLIP_PREPROCESSING
    from fakescope.embed.quant import calibrate, save_ranges
    from fakescope.utils import file_digest

    rows = corpus[training_rows(corpus, ()) & (corpus["holdout"].astype(str) != "test").to_numpy()]
    picked = [
        g.sample(min(len(g), RANGES_PER_SOURCE), random_state=0).index
        for _, g in rows.groupby("source", sort=True)
    ]
    sample = rows.loc[np.concatenate(picked)]
    tf = eval_transform(CLIP_PREPROCESSING)
    images = (tf(load_image(p)).numpy()[None] for p in sample["path"])
    ranges = calibrate(tower_file, images)
    meta = {
        "sha256": file_digest(Path(tower_file)),
        "encoder": Path(tower_file).name,
        "images": len(sample),
        "sources": sorted(sample["source"].astype(str).unique()),
        "rule": "mean over images of each tensor's per-image minimum and maximum",
    }
    return save_ranges(out, ranges, meta)


#: The side of the tower's reference images (see :func:`tower_reference`).
REFERENCE_SIDE = 64


def reference_images(side: int = REFERENCE_SIDE) -> np.ndarray:
    """Four ``side`` x ``side`` RGB images: crops of scikit-image's bundled sample photos and a
    synthetic gradient (uint8 ``[4, side, side, 3]``)."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    out = [np.asarray(Image.fromarray(p).resize((side, side), Image.BICUBIC)) for p in photos]
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    gradient = [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.full((side, side), 90.0)]
    out.append(np.stack(gradient, -1).astype(np.uint8))
    return np.stack(out)


def tower_reference(tower_file: str | Path, out: str | Path) -> Path:
    """Write the reference embeddings a rebuilt tower is checked against
    (:func:`fakescope.embed.fetch.check_reference`): :func:`reference_images` and what the
    original ``tower_file`` makes of them.

    Raises:
        ValueError: ``tower_file`` is not the original file its weights recipe names.
    """
    from fakescope.embed.fetch import write_reference
    from fakescope.embed.weights import RECIPES as WEIGHTS
    from fakescope.utils import file_digest

    recipe = WEIGHTS.get(Path(tower_file).name)
    if recipe is None or file_digest(tower_file) != recipe.sha256:
        want = recipe.sha256 if recipe else f"one of {sorted(WEIGHTS)}"
        raise ValueError(f"{tower_file}: not the original tower file ({want})")
    return write_reference(tower_file, reference_images(), Path(out))


def training_rows(corpus: pd.DataFrame, exclude: tuple[str, ...]) -> np.ndarray:
    """Every row a recipe learns from (see the module)."""
    from fakescope.data.corpus import excluded

    return (
        (corpus["era"].astype(str) != "video").to_numpy()
        & (corpus["holdout"].astype(str) != "dev-test").to_numpy()
        & ~excluded(corpus, exclude)
    )


def build(
    recipe: Recipe, feats: CorpusFeatures, out: str | Path, extra_meta: dict[str, Any] | None = None
) -> Path:
    """Fit ``recipe`` on the corpus and write the detector to ``out``; return the path."""
    from fakescope.eval.calibration import fit_platt
    from fakescope.models.checkpoint import save_checkpoint
    from fakescope.models.probe import attach_novelty, create_probe_detector
    from fakescope.train.adapt import STORE_META, make_reference

    corpus = feats.corpus
    y = corpus["label"].to_numpy().astype(int)
    src = corpus["source"].astype(str).to_numpy()
    train = training_rows(corpus, recipe.exclude)
    calib = calibration_rows(corpus, train)
    fit_rows = train & ~calib
    t0 = time.perf_counter()
    fitted = fit_family(recipe.family, feats, train, calib)
    backbone, x = _shipped_features(recipe.family, feats, fitted)
    if fitted.deltas is None and recipe.activations != "dynamic":
        from fakescope.embed.backbones import OnnxBackbone

        backbone = OnnxBackbone(
            feats.tower_file,
            pool=recipe.family.pool,
            activations=recipe.activations,
            batch_size=SHIPPED_BATCH,
        )
    coef, bias, calibration = fitted.coef, fitted.bias, fitted.calibration
    if fitted.deltas is not None:  # the head and calibration on the features that ship
        coef, bias = fit_head(
            x[fit_rows], y[fit_rows], src[fit_rows], recipe.family.c, recipe.family.balanced
        )
        calibration = fit_platt((l2_rows(x) @ coef + bias)[calib], y[calib])
    tuning = None
    if fitted.deltas is not None:
        tuning = {
            "method": recipe.family.tune.method,
            "rank": recipe.family.tune.rank,
            "deltas": fitted.deltas,
        }
    det = create_probe_detector(backbone, x.shape[1], l2=True, tuning=tuning)
    dim = x.shape[1]
    det.net.set_head(np.zeros(dim), np.ones(dim), coef, bias)
    det.spec.calibration = calibration
    attach_novelty(det, x[fit_rows], quantile=GUARD_QUANTILE)
    det.spec.model_kwargs["backbone"]["path"] = Path(feats.tower_file).name  # found by name
    meta = {
        "builtin": recipe.name,
        "recipe": {**recipe.family.describe(), "exclude": list(recipe.exclude)},
        "trained_on": _trained_on(corpus, fit_rows, calib),
        "train_s": time.perf_counter() - t0,
        "history": fitted.history,
        **(extra_meta or {}),
    }
    ref = make_reference(l2_rows(x), y, src, det.head_logits(x), fit_rows, calib)
    path = save_checkpoint(
        out, det, extra_tensors=ref.tensors(), bench=meta, **{STORE_META: ref.meta()}
    )
    logger.info("wrote %s (%s)", path, recipe.name)
    return path


def _shipped_features(family: Family, feats: CorpusFeatures, fitted: Any) -> tuple[Any, np.ndarray]:
    """The backbone the detector ships with and its features of every corpus row."""
    if isinstance(family, ProbeFamily) or fitted.deltas is None:
        return feats.backbone(family.pool), fitted.features
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.embed.cache import EmbeddingCache, embed_frame

    bb = OnnxBackbone(feats.tower_file, pool="layers", deltas=fitted.deltas)
    with EmbeddingCache(feats.cache_dir, bb.cache_id) as cache:
        x, failures = embed_frame(bb, feats.corpus, cache=cache, workers=feats.workers)
    if failures:
        raise RuntimeError(f"{len(failures)} corpus file(s) could not be embedded")
    return bb, x


def _trained_on(corpus: pd.DataFrame, fit_rows: np.ndarray, calib: np.ndarray) -> dict[str, Any]:
    """Images per source and label: those the head learnt from, and those it was calibrated on."""

    def counts(mask: np.ndarray) -> dict[str, int]:
        sub = corpus[mask]
        keys = sub["source"].astype(str) + " (" + np.where(sub["label"] == 1, "fake", "real") + ")"
        return {k: int(v) for k, v in keys.value_counts().sort_index().items()}

    return {"fit": counts(fit_rows), "calibration": counts(calib)}


def tuned_recipe(name: str, method: str, **tune: Any) -> Recipe:
    """A recipe for a tuned family (for the protocol's comparisons and for users' own builds)."""
    return Recipe(name, TunedFamily(name, TuneConfig(method=method, **tune)), exclude=POOL_2022)
