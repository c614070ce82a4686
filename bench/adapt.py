"""Few-shot adaptation measured (``fakescope adapt``): each pool generator held out in turn.

    FAKESCOPE_WEIGHTS=../shared/weights python bench/adapt.py [--draws 5] [--out runs/adapt]

Needs the protocol's corpus and embedding cache (``bench/heldout.py --pool POOL`` makes them in
``runs/heldout``). For each fold G of the protocol (the four 2024+ generators and the 2022
photographic fakes):

- the parent is the protocol's ``layers`` head trained without G (``fit_head``, C = 300,
  calibration rows left out), carrying reference rows of its own training data as a shipped
  detector does (``train.adapt.make_reference``);
- k fakes of G and k held-out Unsplash photos (drawn by the protocol's resampling unit, so that
  a prompt's images stay together) are the examples, and fakescope's own ``train.adapt.learn``
  adapts, deciding as ``fakescope adapt`` does whether to write (a gain out of fold, and at most
  ``DEFAULT_MARGIN`` lost on the parent's reference check rows); a refused adaptation scores as
  the parent;
- the rest of G is scored against the rest of the protocol's held-out photos.

Prints, per held-out set and k, the mean AUC with the [min, max] over draws, the gain at k = 16,
how often it wrote, how far the nested cross-validated gain was from the true one, and forgetting:
the change in AUC on the dev test split, on the other generators' calibration fakes against
today's photos, and on the parent's reference check rows. One JSON line per (fold, k, draw) goes
to ``OUT/results.jsonl``; a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from fakescope.data.corpus import MODERN_GENERATORS, read_corpus, resampling_units
from fakescope.eval.measures import fast_auc
from fakescope.experiments import heldout as H
from fakescope.models.detector import Detector, DetectorSpec
from fakescope.models.probe import ProbeNet
from fakescope.train.adapt import DEFAULT_MARGIN, known_auc, learn, make_reference
from fakescope.train.families import CorpusFeatures, calibration_rows, fit_head, l2_rows

ROOT = Path(__file__).resolve().parents[1]
KS = (4, 8, 16, 32)


def parent_detector(w: np.ndarray, b: float) -> Detector:
    """A probe head in memory (no backbone: the bench scores cached embeddings)."""
    net = ProbeNet(None, len(w), l2=True)
    net.set_head(np.zeros(len(w)), np.ones(len(w)), w, b)
    return Detector(net, DetectorSpec(kind="probe", arch="bench-parent"))


def draw(pool: np.ndarray, units: np.ndarray, k: int, rng: np.random.Generator) -> tuple:
    """k rows of ``pool`` taken unit by unit; also the rows of the last unit left over."""
    names = list(dict.fromkeys(units[pool]))
    rng.shuffle(names)
    got: list[int] = []
    spare: list[int] = []
    for u in names:
        if len(got) >= k:
            break
        rows = rng.permutation(pool[units[pool] == u])
        need = k - len(got)
        got += list(rows[:need])
        spare += list(rows[need:])
    return np.array(got, dtype=int), np.array(spare, dtype=int)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--heldout", default=str(ROOT / "runs" / "heldout"), help="bench/heldout.py's OUT"
    )
    p.add_argument("--backbone", default=None, help="the int8 CLIP tower (default: by name)")
    p.add_argument("--out", default=str(ROOT / "runs" / "adapt"))
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    tower = args.backbone or str(
        Path(os.environ.get("FAKESCOPE_WEIGHTS", ".")) / "clip_vit_b16_openai_visual.int8.onnx"
    )
    corpus = read_corpus(Path(args.heldout) / "corpus")
    x = CorpusFeatures(corpus, tower, Path(args.heldout) / "cache").get("layers")
    xl = l2_rows(x).astype(np.float32)
    y = corpus["label"].to_numpy().astype(int)
    src = corpus["source"].astype(str).to_numpy()
    units = resampling_units(corpus).to_numpy()
    hold = corpus["holdout"].astype(str).to_numpy()
    negatives = H.negatives(corpus)
    photos = np.flatnonzero(negatives & (src == "unsplash"))
    dev_test = hold == "dev-test"
    done = set()
    if results.is_file():
        done = {(r["fold"], r["k"], r["draw"]) for r in map(json.loads, results.open())}
    for fi, fold in enumerate(H.make_folds(corpus, exclude=("era:2022",))):
        cal = calibration_rows(corpus, fold.train)
        fit = fold.train & ~cal
        w, b = fit_head(x[fit], y[fit], src[fit], 300.0, True)
        parent = parent_detector(w, b)
        z0 = parent.head_logits(x).astype(np.float64)
        ref = make_reference(xl, y, src, z0, fit, cal)
        held = np.flatnonzero(next(iter(fold.tests.values())))
        others = [g for g in MODERN_GENERATORS if g != fold.name]
        for k in KS:
            for d in range(args.draws):
                if (fold.name, k, d) in done:
                    continue
                t0 = time.perf_counter()
                rng = np.random.default_rng([fi, k, d])
                fakes, spare_f = draw(held, units, k, rng)
                reals, spare_r = draw(photos, units, k, rng)
                examples = np.concatenate([fakes, reals])
                learnt = learn(parent, x[examples], y[examples], ref, seed=d)
                checks = known_auc(ref, learnt.dw, learnt.db)
                kept = checks["before"] - checks["after"] <= DEFAULT_MARGIN
                writes = learnt.worth_writing and kept  # as fakescope adapt decides
                z = z0 + (xl @ learnt.dw + learnt.db if writes else 0.0)
                test_f = np.setdiff1d(held, np.concatenate([fakes, spare_f]))
                test_n = np.setdiff1d(np.flatnonzero(negatives), np.concatenate([reals, spare_r]))
                rows = np.concatenate([test_f, test_n])
                record = {
                    "fold": fold.name,
                    "k": k,
                    "draw": d,
                    "parent": fast_auc(y[rows], z0[rows]),
                    "adapted": fast_auc(y[rows], z[rows]),
                    "wrote": bool(writes),
                    "cv_gain": (learnt.cv["after"] - learnt.cv["before"]) if learnt.cv else None,
                    "cv": {
                        k_: learnt.cv.get(k_) for k_ in ("before", "after", "gain_ci", "after_ci")
                    },
                    "check_rows": [checks["before"], checks["after"]],
                    "candidate": fast_auc(y[rows], (z0 + xl @ learnt.dw + learnt.db)[rows]),
                    "dev_before": fast_auc(y[dev_test], z0[dev_test]),
                    "dev_after": fast_auc(y[dev_test], z[dev_test]),
                    "known": {
                        g: [
                            fast_auc(y[r], z0[r]),
                            fast_auc(y[r], z[r]),
                        ]
                        for g in others
                        for r in [np.concatenate([np.flatnonzero(cal & (src == g)), test_n])]
                    },
                    "seconds": time.perf_counter() - t0,
                }
                with results.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                print(
                    f"{fold.name} k={k} draw {d}: {record['parent']:.3f} -> {record['adapted']:.3f}"
                    f" ({'wrote' if writes else 'kept the parent'}, {record['seconds']:.1f} s)",
                    flush=True,
                )
    report(results)


def report(results: Path) -> None:
    """The tables, from the JSON lines."""
    rows = [json.loads(line) for line in results.open()]
    folds = list(dict.fromkeys(r["fold"] for r in rows))
    print("\nAUC on the rest of the held-out set: mean [min, max] over draws (k=0: the parent)")
    print("| held-out set | k=0 | " + " | ".join(f"k={k}" for k in KS) + " |")
    print("|---|---|" + "---|" * len(KS))
    for f in folds:
        cells = [
            f"{np.mean([r['parent'] for r in rows if r['fold'] == f and r['k'] == KS[0]]):.3f}"
        ]
        for k in KS:
            a = [r["adapted"] for r in rows if r["fold"] == f and r["k"] == k]
            cells.append(f"{np.mean(a):.3f} [{min(a):.2f}, {max(a):.2f}]" if a else "")
        print(f"| {f} | " + " | ".join(cells) + " |")
    print("\ngain (adapted - parent on the same rest), mean [min, max]; share of draws written")
    for k in KS:
        sub = [r for r in rows if r["k"] == k]
        g = np.array([r["adapted"] - r["parent"] for r in sub])
        wrote = np.mean([r["wrote"] for r in sub])
        per = ", ".join(
            f"{f} {np.mean([r['adapted'] - r['parent'] for r in sub if r['fold'] == f]):+.3f}"
            for f in folds
        )
        print(f"k={k}: {g.mean():+.3f} [{g.min():+.3f}, {g.max():+.3f}], wrote {wrote:.0%} ({per})")
    print(
        "\nwithout the margin (--force): gain, mean [min, max]; share written; check-row AUC change"
    )
    for k in KS:
        sub = [r for r in rows if r["k"] == k]
        gains = [
            bool(c["after"] is not None and c["after"] > c["before"] and c["after_ci"][0] > 0.5)
            for c in (r["cv"] for r in sub)
        ]
        g = np.array(
            [r["candidate"] - r["parent"] if w else 0.0 for r, w in zip(sub, gains, strict=True)]
        )
        chk = np.array(
            [r["check_rows"][1] - r["check_rows"][0] for r, w in zip(sub, gains, strict=True) if w]
        )
        refused = np.mean([w and not r["wrote"] for r, w in zip(sub, gains, strict=True)])
        print(
            f"k={k}: {g.mean():+.3f} [{g.min():+.3f}, {g.max():+.3f}], wrote {np.mean(gains):.0%}"
            f" (the margin refused {refused:.0%}); check rows "
            + (f"{chk.mean():+.4f} [worst {chk.min():+.4f}]" if len(chk) else "n/a")
        )
    print("\nforgetting (after - before), mean [worst draw]")
    for k in KS:
        sub = [r for r in rows if r["k"] == k]
        dev = np.array([r["dev_after"] - r["dev_before"] for r in sub])
        kn = np.array([b - a for r in sub for a, b in r["known"].values()])
        print(
            f"k={k}: dev test {dev.mean():+.4f} [{dev.min():+.4f}], "
            f"other known generators {kn.mean():+.4f} [{kn.min():+.4f}]"
        )
    est = [(r["cv_gain"], r["adapted"] - r["parent"]) for r in rows if r["cv_gain"] is not None]
    if est:
        e = np.array(est)
        print(
            f"\nnested CV gain against the true gain: correlation {np.corrcoef(e.T)[0, 1]:.2f}, "
            f"mean absolute error {np.abs(e[:, 0] - e[:, 1]).mean():.3f}; worst true gain when "
            f"written {min((r['adapted'] - r['parent'] for r in rows if r['wrote']), default=0):+.3f}"
        )


if __name__ == "__main__":
    main()
