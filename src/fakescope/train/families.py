"""Detector families trained on the development corpus: frozen-tower probes and tuned towers.

A family is a recipe for turning labelled corpus rows into a detector on the CLIP ViT-B/16 tower:

* :class:`ProbeFamily`: a logistic head on a frozen int8 tower's features (``embed``, the
  UnivFD-style baseline, or ``layers``, every block's CLS token);
* :class:`TunedFamily`: the last blocks tuned with Effort or LoRA (:mod:`fakescope.train.tune`),
  then the same logistic head on the tuned ``layers`` features.

Both fit their head with source-balanced weights (each class weighs half, split equally among its
sources, so one big source does not dominate) and are calibrated by Platt scaling on a
validation share of the training rows that mixes every generator. The generalisation protocol
(:mod:`fakescope.experiments.heldout`) fits them fold by fold; :mod:`fakescope.train.recipes`
fits them once on everything and writes a detector.

:class:`CorpusFeatures` computes each feature kind once per corpus (through the embedding cache),
so a family's fits cost only the head (and, for tuned families, the tuned blocks).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakescope.train.tune import TuneConfig, balanced_weights

logger = logging.getLogger(__name__)

#: The share of a fold's training rows kept aside to calibrate on (chosen by group).
CALIBRATION_SHARE = 0.2


@dataclass(frozen=True)
class ProbeFamily:
    """A logistic head on a frozen tower's features.

    Attributes:
        name: the family's name in tables.
        pool: the int8 tower's feature kind (``embed`` or ``layers``).
        c: the head's inverse L2 penalty.
        balanced: weigh classes and sources equally (else every row weighs the same).
    """

    name: str
    pool: str = "layers"
    c: float = 3.0
    balanced: bool = True

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for headers and tables)."""
        return {
            "family": "probe",
            "name": self.name,
            "pool": self.pool,
            "C": self.c,
            "balanced": self.balanced,
        }


@dataclass(frozen=True)
class TunedFamily:
    """The tower's last blocks tuned (Effort or LoRA), then a logistic head on ``layers``.

    Attributes:
        name: the family's name in tables.
        tune: how the blocks are tuned.
        c: the final head's inverse L2 penalty.
        balanced: weigh classes and sources equally.
    """

    name: str
    tune: TuneConfig = field(default_factory=TuneConfig)
    c: float = 3.0
    balanced: bool = True

    @property
    def pool(self) -> str:
        return "layers"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "family": "tuned",
            "name": self.name,
            "C": self.c,
            "balanced": self.balanced,
            "tune": self.tune.to_dict(),
        }


Family = ProbeFamily | TunedFamily


class CorpusFeatures:
    """The int8 tower's features of every corpus row, computed once (embedding cache).

    Args:
        corpus: the corpus manifest (:func:`fakescope.data.corpus.read_corpus`).
        tower_file: the int8 CLIP ViT-B/16 ONNX file.
        cache_dir: the embedding cache folder.
        workers: decoding processes.
        activations: how the tower's activations are quantised (``dynamic``, as exported, or
            ``fixed`` ranges: :class:`fakescope.embed.backbones.OnnxBackbone`).
    """

    def __init__(
        self,
        corpus: pd.DataFrame,
        tower_file: str | Path,
        cache_dir: str | Path,
        workers: int = 2,
        activations: str = "dynamic",
    ) -> None:
        self.corpus = corpus.reset_index(drop=True)
        self.activations = activations
        self.tower_file = Path(tower_file)
        self.cache_dir = Path(cache_dir)
        self.workers = workers
        self._feats: dict[tuple[str, int | None], np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def get(self, pool: str, layer: int | None = None) -> np.ndarray:
        """``[N, D]`` features of kind ``pool`` (``tokens`` of block ``layer``: float16, ``T * C``).

        Raises:
            RuntimeError: some corpus file could not be embedded (the corpus should be rebuilt).
        """
        key = (pool, layer)
        if key not in self._feats:
            self._feats[key] = self._compute(pool, layer)
        return self._feats[key]

    def backbone(self, pool: str, layer: int | None = None) -> Any:
        """The frozen int8 backbone of a feature kind."""
        from fakescope.embed.backbones import OnnxBackbone

        return OnnxBackbone(
            self.tower_file,
            pool=pool,
            layers=None if layer is None else [layer],
            activations=self.activations,
            batch_size=16,
        )

    def _compute(self, pool: str, layer: int | None) -> np.ndarray:
        from fakescope.embed.cache import EmbeddingCache, embed_frame

        bb = self.backbone(pool, layer)
        t0 = time.perf_counter()
        with EmbeddingCache(self.cache_dir, bb.cache_id) as cache:
            x, failures = embed_frame(bb, self.corpus, cache=cache, workers=self.workers)
        if failures:
            i, why = failures[0]
            raise RuntimeError(
                f"{len(failures)} corpus file(s) could not be embedded, e.g. "
                f"{self.corpus['path'].iloc[i]}: {why}"
            )
        self.seconds[pool] = time.perf_counter() - t0
        # tokens are big (ViT-B/16: 151,296 numbers an image): half precision halves the memory
        return x.astype(np.float16) if pool == "tokens" else x


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def calibration_rows(
    corpus: pd.DataFrame, train: np.ndarray, share: float = CALIBRATION_SHARE
) -> np.ndarray:
    """The training rows kept for calibration: about ``share`` of each source, by
    :func:`~fakescope.data.corpus.resampling_units` (so they mix every generator)."""
    from fakescope.data.corpus import resampling_units, unit_hash

    units = resampling_units(corpus)
    return train & units.map(lambda u: unit_hash("calibration/" + u) < share).to_numpy()


@dataclass
class Fitted:
    """A family fitted on some rows: raw logits for any row, and its calibration.

    Attributes:
        logits: ``[N]`` raw logits of every corpus row.
        calibration: the Platt scaling fitted on the calibration rows.
        coef: the head's weights (on L2-normalised features) and ``bias``.
        deltas: a tuned family's low-rank deltas (None for probes).
        train_s: seconds to fit (tuning included).
        history: a tuned family's epochs.
    """

    logits: np.ndarray
    calibration: dict[str, Any]
    coef: np.ndarray
    bias: float
    features: np.ndarray
    deltas: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    train_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def fit_family(
    family: Family, feats: CorpusFeatures, train: np.ndarray, calibrate: np.ndarray | None = None
) -> Fitted:
    """Fit ``family`` on the ``train`` rows of the corpus; calibrate on ``calibrate`` rows.

    Args:
        family: the recipe.
        feats: the corpus and its features.
        train: boolean mask of rows to learn from (calibration rows are taken out of it).
        calibrate: rows for Platt scaling (default: :func:`calibration_rows` of ``train``).
    """
    from fakescope.eval.calibration import fit_platt

    corpus = feats.corpus
    y = corpus["label"].to_numpy().astype(int)
    src = corpus["source"].astype(str).to_numpy()
    calibrate = calibration_rows(corpus, train) if calibrate is None else calibrate
    fit_rows = train & ~calibrate
    t0 = time.perf_counter()
    x, deltas, history = _features(family, feats, fit_rows, y, src)
    coef, bias = fit_head(x[fit_rows], y[fit_rows], src[fit_rows], family.c, family.balanced)
    logits = l2_rows(x) @ coef + bias
    train_s = time.perf_counter() - t0
    cal = fit_platt(logits[calibrate], y[calibrate])
    if isinstance(family, ProbeFamily):
        unseen = unseen_generator_logits(family, x, y, src, fit_rows, calibrate, logits)
        cal = temper(cal, fit_platt(unseen[calibrate], y[calibrate]))
    return Fitted(logits, cal, coef, bias, x, deltas, train_s, history)


def unseen_generator_logits(
    family: ProbeFamily,
    x: np.ndarray,
    y: np.ndarray,
    src: np.ndarray,
    fit_rows: np.ndarray,
    calibrate: np.ndarray,
    logits: np.ndarray,
) -> np.ndarray:
    """Logits of the calibration rows in which each fake comes from a head fitted without its
    generator: how a generator the head never saw scores.

    Photos keep the full head's logits: leaving out a photo collection (there is one collection
    of today's photos, Unsplash) makes that kind of photo look fake and the fitted slope
    negative. Only probes: a tuned family would need a tuning run per generator.
    """
    out = logits.copy()
    for source in np.unique(src[calibrate & (y == 1)]):
        rows = fit_rows & (src != source)
        if len(np.unique(y[rows])) < 2:
            continue
        coef, bias = fit_head(x[rows], y[rows], src[rows], family.c, family.balanced)
        mine = calibrate & (src == source)
        out[mine] = l2_rows(x[mine]) @ coef + bias
    return out


def temper(seen: dict[str, Any], unseen: dict[str, Any]) -> dict[str, Any]:
    """Platt scaling with the slope fitted on unseen generators (when flatter) and the 0.5 point
    fitted on the seen ones.

    Fitted on the generators it trained on, Platt scaling reads many of a new generator's fakes
    as "real, 0.000" (42% of the held-out Nano Banana Pro fakes below 0.05, on the protocol).
    Fitted with each generator left out (:func:`unseen_generator_logits`) it is flatter, but it
    also moves the decision point: 7% to 68% of today's photos were then called real, against
    74% to 88%. This keeps the decision point of the first and the slope of the second (14% of
    those fakes below 0.05; the others' calibration error rises, as their fakes read less sure).
    """
    a0, b0, a1 = float(seen["a"]), float(seen["b"]), float(unseen["a"])
    if not 0 < a1 < a0:  # not flatter (or not positive): nothing the seen fit does not say
        return seen
    return {**seen, "a": a1, "b": b0 * a1 / a0, "tempered_from": a0}


def fit_head(
    x: np.ndarray, y: np.ndarray, sources: np.ndarray, c: float, balanced: bool
) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression on L2-normalised rows; ``(coef, bias)``."""
    from sklearn.linear_model import LogisticRegression

    w = balanced_weights(y, sources) * len(y) if balanced else None
    clf = LogisticRegression(C=c, max_iter=5000).fit(l2_rows(x), y, sample_weight=w)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def _features(
    family: Family, feats: CorpusFeatures, rows: np.ndarray, y: np.ndarray, src: np.ndarray
) -> tuple[np.ndarray, dict | None, list]:
    """The features the head is fitted on: frozen, or those of blocks tuned on ``rows``."""
    if isinstance(family, ProbeFamily):
        return feats.get(family.pool), None, []
    from fakescope.embed.tower import build_clip_tower
    from fakescope.train.tune import tail_features, tune_tail

    cfg = family.tune
    early = feats.get("layers")
    tower = build_clip_tower(feats.tower_file)
    start = len(tower.vit.blocks) - cfg.blocks
    tok = feats.get("tokens", start - 1)

    width = tower.vit.embed_dim

    def tokens(idx: np.ndarray) -> np.ndarray:
        return np.asarray(tok[idx], dtype=np.float32).reshape(len(idx), -1, width)

    idx = np.flatnonzero(rows)
    tail, history = tune_tail(tower, lambda i: tokens(idx[i]), early[idx], y[idx], src[idx], cfg)
    x = tail_features(tail, tokens, early, np.arange(len(y)))
    return x, tail.deltas(), history
