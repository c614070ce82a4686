"""The generalisation protocol: leave each generator out, score it against today's photos.

Built on the development corpus (:mod:`fakescope.data.corpus`), every family is fitted once per
fold and scored on what that fold held out:

* **modern** folds, one per generator of 2024-2026 (:data:`~fakescope.data.corpus.MODERN_GENERATORS`):
  train on everything else, score that generator's images;
* the **2022** fold: train without any of the pool's 2022 fakes; score their photographic fakes
  (the ``older`` group: photoreal fakes, as the benchmark's older sets are; art against photos
  would reward "art = fake"), all of them beside it, and the ``video-spotdiff`` frames (no
  family trains on video frames), within each scene.

Every held-out generator is scored **against today's photos**: the held-out share of the
Unsplash photos and the 2025 phone photos (:data:`NEGATIVES`), which no fold trains on. Scoring
against the dev set's COCO and ImageNet photos instead rewards a detector for "a sharp, clean
photo is fake", which is how the built-ins failed on real news photos: against those photos the
built-ins score 0.85 to 0.95, against today's 0.60 to 0.80.

Each cell is an AUC with a 95% interval (images resampled by group; scenes for the frames), plus
the expected calibration error of the calibrated probabilities and the share of the held-out
fakes called fake at 0.5 and the share of photos called real. Before the table chooses anything,
:func:`rank_check` scores the four detectors the team's held-out benchmark ranked, on the same
sets, and says which of the benchmark's relations the protocol reproduces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fakescope.data.corpus import MODERN_GENERATORS, excluded, resampling_units
from fakescope.data.protocol_sets import is_photo_prompt
from fakescope.eval.intervals import grouped_bootstrap_ci
from fakescope.eval.measures import expected_calibration_error, fast_auc
from fakescope.train.families import CorpusFeatures, Family, Fitted, fit_family

logger = logging.getLogger(__name__)

#: The real photos every held-out generator is scored against (their held-out share).
NEGATIVES: tuple[str, ...] = ("unsplash", "camera-2025")
#: The team's held-out benchmark (mean AUC per group), the ranking the protocol must reproduce.
#: ``dev+2024+ layers`` is the team's own check: the ``clip-layers`` probe trained on the dev set
#: and the pool's 2024+ part ("about 0.81 and 0.79"); the protocol fits it fold by fold.
HELD_OUT_BENCHMARK: dict[str, dict[str, float]] = {
    "older": {
        "dev+2024+ layers": 0.81,
        "clip-baseline": 0.656,
        "clip-layers": 0.628,
        "clip-probe": 0.534,
        "clip-effnet-fusion": 0.529,
    },
    "modern": {"dev+2024+ layers": 0.79, "clip-baseline": 0.574, "clip-layers": 0.582},
}
#: The detectors the benchmark found far below 0.80.
SHIPPED_BEFORE = ("clip-baseline", "clip-layers", "clip-probe", "clip-effnet-fusion")
#: The 2022 fold's sets: its photographic fakes (prompts for an everyday scene a camera could
#: take, ``fakescope.data.protocol_sets.PHOTO_PROMPTS``) count in the ``older`` group, since
#: art against photos rewards "art = fake"; all its fakes are shown beside them.
PHOTOGRAPHIC = "2022 photographic"
ALL_2022 = "2022 all (art too)"
#: A fake scored below this P(fake) is "confidently real": the failure calibration must avoid.
SURE = 0.05
#: Within this, two AUCs count as equal ("≈") in the rank check.
TIE = 0.01
#: "Far below 0.80" in the rank check.
FAR_BELOW = 0.75


@dataclass(frozen=True)
class Cell:
    """One held-out set scored: AUC with a 95% interval, ECE, and rates at 0.5."""

    name: str
    group: str
    n_fake: int
    n_real: int
    auc: float
    ci: tuple[float, float] | None
    ece: float | None = None
    fake_called_fake: float | None = None
    real_called_real: float | None = None
    fake_sure_real: float | None = None  # fakes given P(fake) < SURE: confidently wrong

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Row:
    """One family (or fixed detector) over the whole protocol."""

    name: str
    cells: list[Cell]
    in_distribution: Cell | None = None
    dev_test: Cell | None = None
    train_s: float | None = None
    images_per_s: float | None = None
    notes: list[str] = field(default_factory=list)
    logits: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # fold -> [2, N]

    def group_mean(self, group: str) -> float:
        """Mean AUC of the cells in ``group`` (``modern`` or ``older``)."""
        vals = [c.auc for c in self.cells if c.group == group]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "cells": [c.to_dict() for c in self.cells],
            "modern": self.group_mean("modern"),
            "older": self.group_mean("older"),
            "in_distribution": self.in_distribution.to_dict() if self.in_distribution else None,
            "dev_test": self.dev_test.to_dict() if self.dev_test else None,
            "train_s": self.train_s,
            "images_per_s": self.images_per_s,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """What one fold trains on and what it scores."""

    name: str
    train: np.ndarray
    tests: dict[str, np.ndarray]  # set name -> fake rows of that set
    group: str


def base_rows(corpus: pd.DataFrame, exclude: Sequence[str] = ()) -> np.ndarray:
    """Rows any fold may train on: not held out, not video frames, not excluded."""
    return (
        (corpus["holdout"].astype(str) == "").to_numpy()
        & (corpus["era"].astype(str) != "video").to_numpy()
        & ~excluded(corpus, exclude)
    )


def negatives(corpus: pd.DataFrame) -> np.ndarray:
    """The held-out photos of today every held-out fake is scored against (:data:`NEGATIVES`).

    Scored against photos of their own era instead (the pool's ImageNet samples and camera
    originals), the 2022 generators are easy for every detector (0.86 to 0.94) and the
    benchmark's ranking is reproduced less well (7 of 13 relations against 9 of 13).
    """
    return (corpus["holdout"].astype(str) == "test").to_numpy() & corpus["source"].isin(
        NEGATIVES
    ).to_numpy()


def make_folds(corpus: pd.DataFrame, exclude: Sequence[str] = ()) -> list[Fold]:
    """The four modern folds and the 2022 fold (see the module)."""
    src = corpus["source"].astype(str).to_numpy()
    fake = corpus["label"].to_numpy() == 1
    base = base_rows(corpus, exclude)
    folds = [
        Fold(g, base & (src != g), {g: fake & (src == g)}, "modern")
        for g in MODERN_GENERATORS
        if (src == g).any()
    ]
    old = fake & (corpus["era"].astype(str) == "2022").to_numpy()
    if old.any():
        photo = corpus["group"].astype(str).map(is_photo_prompt).to_numpy()
        tests = {PHOTOGRAPHIC: old & photo, ALL_2022: old}
        folds.append(Fold("2022", base & ~old, tests, "older"))
    return folds


def cell_group(fold: Fold, name: str) -> str:
    """The group a held-out set counts in (all the 2022 fakes are shown, not counted)."""
    return "2022-all" if name == ALL_2022 else fold.group


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score_cell(
    name: str,
    group: str,
    corpus: pd.DataFrame,
    fakes: np.ndarray,
    reals: np.ndarray,
    logits: np.ndarray,
    probs: np.ndarray | None,
    n_boot: int = 1000,
) -> Cell:
    """AUC (grouped interval), ECE and rates of one set: ``fakes`` against ``reals``."""
    rows = fakes | reals
    y = corpus["label"].to_numpy()[rows].astype(int)
    z = logits[rows]
    groups = resampling_units(corpus).to_numpy()[rows]
    auc = fast_auc(y, z)
    ci = grouped_bootstrap_ci(y, z, groups, fast_auc, n_boot=n_boot)
    ece = called_fake = called_real = sure_real = None
    if probs is not None:
        p = probs[rows]
        ece = expected_calibration_error(y, p)
        called_fake = float(np.mean(p[y == 1] >= 0.5))
        called_real = float(np.mean(p[y == 0] < 0.5))
        sure_real = float(np.mean(p[y == 1] < SURE))
    n_fake, n_real = int(y.sum()), int((y == 0).sum())
    rates = (ece, called_fake, called_real, sure_real)
    return Cell(name, group, n_fake, n_real, auc, ci, *rates)


def score_frames(corpus: pd.DataFrame, logits: np.ndarray, n_boot: int = 1000) -> Cell | None:
    """The video frames: mean over scenes of the AUC within each scene (interval over scenes)."""
    video = (corpus["era"].astype(str) == "video").to_numpy()
    if not video.any():
        return None
    y = corpus["label"].to_numpy().astype(int)
    scenes = corpus["scene"].astype(str).to_numpy()
    per = [
        fast_auc(y[video & (scenes == s)], logits[video & (scenes == s)])
        for s in sorted(set(scenes[video]))
    ]
    rng = np.random.default_rng(0)
    boots = [np.mean(rng.choice(per, len(per))) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Cell(
        "video frames",
        "video",
        int((video & (y == 1)).sum()),
        int((video & (y == 0)).sum()),
        float(np.mean(per)),
        (float(lo), float(hi)),
    )


def _probs(fitted: Fitted) -> np.ndarray:
    from fakescope.eval.calibration import apply_calibration

    return apply_calibration(fitted.logits, fitted.calibration)


def run_family(
    family: Family,
    feats: CorpusFeatures,
    exclude: Sequence[str] = (),
    n_boot: int = 1000,
    groups: Sequence[str] | None = None,
) -> Row:
    """Fit ``family`` on every fold (of ``groups``, default all) and score what each held out.

    Args:
        family: the recipe.
        feats: the corpus and its features.
        exclude: sources no fold trains on (a data choice, the same for every family compared).
        n_boot: bootstrap resamples per interval.
        groups: only the folds of these groups (``modern``, ``older``): tuning is slow.
    """
    corpus = feats.corpus
    train_s = 0.0
    logits: dict[str, np.ndarray] = {}
    folds = [f for f in make_folds(corpus, exclude) if groups is None or f.group in groups]
    for fold in folds:
        logger.info("%s: fold %s (%d training images)", family.name, fold.name, fold.train.sum())
        fitted = fit_family(family, feats, fold.train)
        train_s += fitted.train_s
        logits[fold.name] = np.stack([fitted.logits, _probs(fitted)])
    row = score_folds(family.name, corpus, logits, exclude, n_boot)
    row.train_s = train_s / max(1, len(folds))
    return row


def score_folds(
    name: str,
    corpus: pd.DataFrame,
    logits: Mapping[str, np.ndarray],
    exclude: Sequence[str] = (),
    n_boot: int = 1000,
) -> Row:
    """The protocol's row from each fold's ``[logits, probabilities]`` of every corpus row (what
    :func:`run_family` keeps in :attr:`Row.logits`), so saved runs can be scored again."""
    folds = [f for f in make_folds(corpus, exclude) if f.name in logits]
    cells: list[Cell] = []
    for fold in folds:
        z, p = logits[fold.name]
        neg = negatives(corpus)
        for set_name, fakes in fold.tests.items():
            group = cell_group(fold, set_name)
            cells.append(score_cell(set_name, group, corpus, fakes, neg, z, p, n_boot))
        if fold.name == "2022":
            frames = score_frames(corpus, z, n_boot)
            if frames is not None:
                cells.append(frames)
    in_dist, dev = in_distribution(corpus, folds, logits)
    note = (
        "in-distribution: AUC on each fold's calibration rows (never fitted on), mean over "
        "folds, range in brackets; likewise the dev test split"
    )
    return Row(name, cells, in_dist, dev, notes=[note], logits=dict(logits))


def in_distribution(
    corpus: pd.DataFrame, folds: Sequence[Fold], logits: Mapping[str, np.ndarray]
) -> tuple[Cell | None, Cell | None]:
    """Mean over folds of the AUC on the fold's calibration rows (a held-out share of the very
    sources it trained on, never fitted on) and on the dev set's test split; ranges as intervals."""
    from fakescope.train.families import calibration_rows

    y = corpus["label"].to_numpy().astype(int)
    dev = (corpus["holdout"].astype(str) == "dev-test").to_numpy()
    ind, devs = [], []
    for fold in folds:
        z = logits[fold.name][0]
        cal = calibration_rows(corpus, fold.train)
        if len(np.unique(y[cal])) == 2:
            ind.append(fast_auc(y[cal], z[cal]))
        if len(np.unique(y[dev])) == 2:
            devs.append(fast_auc(y[dev], z[dev]))

    def cell(name: str, vals: list[float]) -> Cell | None:
        if not vals:
            return None
        return Cell(
            name,
            "in-distribution",
            0,
            0,
            float(np.mean(vals)),
            (float(min(vals)), float(max(vals))),
        )

    return cell("held-out share of its training sources", ind), cell("dev test split", devs)


def score_fixed(
    name: str,
    corpus: pd.DataFrame,
    scores: np.ndarray,
    n_boot: int = 1000,
    frames_override: Cell | None = None,
) -> Row:
    """A fixed detector (no training) on the same sets: every held-out generator and the frames.

    ``scores`` are its P(fake) for every corpus row; ``frames_override`` replaces the frames cell
    for a detector that trained on them (its leave-one-scene-out figure).
    """
    fake = corpus["label"].to_numpy() == 1
    cells = []
    for fold in make_folds(corpus):
        neg = negatives(corpus)
        for set_name, fakes in fold.tests.items():
            group = cell_group(fold, set_name)
            cells.append(score_cell(set_name, group, corpus, fakes, neg, scores, scores, n_boot))
    frames = frames_override or score_frames(corpus, scores, n_boot)
    if frames is not None:
        cells.append(frames)
    dev_test = (corpus["holdout"].astype(str) == "dev-test").to_numpy()
    dev = None
    if dev_test.any():  # the detectors the benchmark ranked trained on the dev set
        dev = score_cell(
            "dev test split",
            "in-distribution",
            corpus,
            dev_test & fake,
            dev_test & ~fake,
            scores,
            None,
            n_boot,
        )
    return Row(name, cells, dev, dev, logits={"fixed": np.stack([scores, scores])})


# --------------------------------------------------------------------------------------------
# The rank check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """One relation of the held-out benchmark's ranking, and whether the protocol has it."""

    group: str
    text: str
    held_out: str
    protocol: str
    holds: bool
    difference_ci: tuple[float, float] | None = None  # of the protocol's a - b, paired


def fold_scores(row: Row, fold: str) -> np.ndarray | None:
    """A row's scores of every corpus row for one fold (a fixed detector's for every fold)."""
    kept = row.logits.get(fold, row.logits.get("fixed"))
    return None if kept is None else kept[0]


def paired_difference(
    corpus: pd.DataFrame,
    a: Row,
    b: Row,
    group: str,
    n_boot: int = 500,
    seed: int = 0,
) -> tuple[float, float] | None:
    """95% interval of ``mean AUC(a) - mean AUC(b)`` over the group's sets, both scored on the
    same resamples (held-out fakes and photos resampled by unit, photos shared by the sets), each
    set by the fold that held it out. None when a row lacks a fold's scores."""
    units = resampling_units(corpus).to_numpy()
    neg = np.flatnonzero(negatives(corpus))
    sets = []
    for fold in make_folds(corpus):
        za, zb = fold_scores(a, fold.name), fold_scores(b, fold.name)
        for name, fakes in fold.tests.items():
            if cell_group(fold, name) != group:
                continue
            if za is None or zb is None:
                return None
            sets.append((np.flatnonzero(fakes), za, zb))
    if not sets:
        return None
    rng = np.random.default_rng(seed)

    def draw(rows: np.ndarray) -> np.ndarray:
        names, inverse = np.unique(units[rows], return_inverse=True)
        pick = rng.integers(0, len(names), len(names))
        members = [rows[inverse == i] for i in range(len(names))]
        return np.concatenate([members[i] for i in pick])

    y = corpus["label"].to_numpy().astype(int)
    diffs = []
    for _ in range(n_boot):
        negs = draw(neg)
        aucs = []
        for fakes, za, zb in sets:
            rows = np.concatenate([draw(fakes), negs])
            aucs.append(fast_auc(y[rows], za[rows]) - fast_auc(y[rows], zb[rows]))
        diffs.append(np.mean(aucs))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def rank_check(
    rows: Mapping[str, Row],
    benchmark: Mapping[str, Mapping[str, float]] = HELD_OUT_BENCHMARK,
    corpus: pd.DataFrame | None = None,
) -> list[Relation]:
    """The benchmark's ranking as relations, each checked on the protocol's group means.

    ``older``: baseline > clip-layers > clip-probe ≈ fusion (and baseline, clip-layers above
    both retired ones); ``modern``: baseline ≈ clip-layers; every built-in far below 0.80 on
    both groups. ``≈`` is within :data:`TIE`. With the ``corpus`` (and fixed rows that kept
    their scores), each pairwise relation also gets the paired interval of the difference.
    """
    out: list[Relation] = []
    for group, ref in benchmark.items():
        names = [n for n in ref if n in rows]
        mean = {n: rows[n].group_mean(group) for n in names}
        ordered = sorted(names, key=lambda n: -ref[n])
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                tie = abs(ref[a] - ref[b]) <= TIE or (
                    {a, b} == {"clip-probe", "clip-effnet-fusion"}
                )
                if tie:
                    holds = abs(mean[a] - mean[b]) <= TIE
                    text = f"{a} ≈ {b}"
                else:
                    holds = mean[a] > mean[b]
                    text = f"{a} > {b}"
                ci = None
                if corpus is not None:
                    ci = paired_difference(corpus, rows[a], rows[b], group)
                out.append(
                    Relation(
                        group,
                        text,
                        f"{ref[a]:.3f} vs {ref[b]:.3f}",
                        f"{mean[a]:.3f} vs {mean[b]:.3f}",
                        bool(holds),
                        ci,
                    )
                )
        for n in (n for n in names if n in SHIPPED_BEFORE):
            out.append(
                Relation(
                    group,
                    f"{n} far below 0.80",
                    f"{ref[n]:.3f}",
                    f"{mean[n]:.3f}",
                    bool(mean[n] < FAR_BELOW),
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _cell_text(c: Cell | None) -> str:
    if c is None:
        return f"{'—':<19}"
    ci = f"[{c.ci[0]:.2f},{c.ci[1]:.2f}]" if c.ci else "[n/a]"
    return f"{c.auc:.3f} {ci:<13}"


def format_table(rows: Sequence[Row]) -> str:
    """Families by held-out set: AUC [95% interval], group means, train time, images/s."""
    names = list(dict.fromkeys(c.name for r in rows for c in r.cells))
    groups = {c.name: c.group for r in rows for c in r.cells}
    head = f"{'family':<28}" + "".join(f"{n[:18]:<19}" for n in names)
    head += f"{'modern':>8}{'older':>7}{'in-dist':>9}{'dev-test':>9}{'train s':>9}{'img/s':>7}"
    lines = [head, f"{'(group)':<28}" + "".join(f"{groups[n]:<19}" for n in names), "-" * len(head)]
    for r in rows:
        by = {c.name: c for c in r.cells}
        ind = f"{r.in_distribution.auc:.3f}" if r.in_distribution else "—"
        dev = f"{r.dev_test.auc:.3f}" if r.dev_test else "—"
        lines.append(
            f"{r.name[:27]:<28}"
            + "".join(_cell_text(by.get(n)) for n in names)
            + f"{r.group_mean('modern'):>8.3f}{r.group_mean('older'):>7.3f}{ind:>9}{dev:>9}"
            + (f"{r.train_s:>9.0f}" if r.train_s is not None else f"{'—':>9}")
            + (f"{r.images_per_s:>7.1f}" if r.images_per_s is not None else f"{'—':>7}")
        )
    return "\n".join(lines)


def format_calibration(rows: Sequence[Row]) -> str:
    """ECE, the share called fake (fakes) / real (photos) at 0.5, and the share of fakes read as
    confidently real (P(fake) < :data:`SURE`), per held-out set."""
    lines = [
        f"{'family':<28}{'set':<26}{'ECE':>7}{'fakes→fake':>12}{'photos→real':>13}"
        f"{'fakes<' + str(SURE):>12}"
    ]
    for r in rows:
        for c in r.cells:
            if c.ece is None:
                continue
            lines.append(
                f"{r.name[:27]:<28}{c.name[:25]:<26}{c.ece:>7.3f}"
                f"{c.fake_called_fake:>12.2f}{c.real_called_real:>13.2f}{c.fake_sure_real:>12.2f}"
            )
    return "\n".join(lines)


def format_rank_check(relations: Sequence[Relation]) -> str:
    """The rank check, one relation a line, and the share that holds."""
    lines = [
        f"{'group':<8}{'relation':<44}{'held-out':>18}{'protocol':>18}  holds"
        "  protocol's a - b [95%]"
    ]
    for r in relations:
        ci = f"  [{r.difference_ci[0]:+.3f}, {r.difference_ci[1]:+.3f}]" if r.difference_ci else ""
        lines.append(
            f"{r.group:<8}{r.text:<44}{r.held_out:>18}{r.protocol:>18}  "
            f"{'yes' if r.holds else 'NO ':<3}{ci}"
        )
    n = sum(r.holds for r in relations)
    lines.append(f"rank agreement: {n}/{len(relations)} relations hold")
    return "\n".join(lines)
