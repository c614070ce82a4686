"""Write the built-in detectors that ``bench/protocol.py --ship`` chose into ``src/fakescope/zoo``.

Each is a probe on the int8 CLIP tower: a logistic head fitted on the dev train split (plus the
family's extra data), Platt scaling fitted on the dev val split, and the out-of-depth guard
fitted on the training embeddings. The backbone is stored by file name only, so the checkpoint
finds it through ``--backbone-path`` or ``$FAKESCOPE_WEIGHTS`` on any machine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from protocol import CLIP, OUT, ZOO, Data, Family, Feats, fit_head, in_distribution, training_set

from fakescope.embed.backbones import OnnxBackbone
from fakescope.eval.calibration import fit_platt
from fakescope.models.checkpoint import save_checkpoint
from fakescope.models.probe import attach_novelty, create_probe_detector

log = logging.getLogger("protocol.ship")

#: The guard's threshold: the 99.5th percentile of the training images' own distances. At the
#: 99.9th the Hubble deep field saved as JPEG (q75 to 90) stayed under it; at the 99.5th no dev
#: test image is flagged, and 2.7% of the pool's real photos are (docs/generalisation.md).
GUARD_QUANTILE = 0.995

#: built-in name -> (file, family). The first is the default detector.
SHIPPED: dict[str, tuple[str, Family]] = {
    "clip-layers": (
        "clip_layers.safetensors",
        Family("layers+matched C=3", "layers", c=3.0, matched=True),
    ),
    "clip-baseline": ("clip_baseline.safetensors", Family("baseline", "embed", c=10.0)),
}


def build(fam: Family, f: Feats, d: Data) -> Any:
    """The probe detector for ``fam``: head, calibration, guard."""
    x, y = training_set(fam, f, d)
    head = fit_head(fam, x, y)
    clf = head.clf
    bb = OnnxBackbone(CLIP, pool=fam.kind)
    det = create_probe_detector(bb, x.shape[1], l2=fam.l2)
    dim = x.shape[1]
    det.net.set_head(np.zeros(dim), np.ones(dim), clf.coef_[0], float(clf.intercept_[0]))
    val = (d.dev["split"] == "val").to_numpy()
    det.spec.calibration = fit_platt(head(f.dev[val]), d.dev["label"].to_numpy()[val])
    attach_novelty(det, x, quantile=GUARD_QUANTILE)
    det.spec.model_kwargs["backbone"]["path"] = CLIP.name  # no machine-specific paths
    return det, head


def ship(d: Data, feats: dict[str, Feats]) -> None:
    """Train and write every entry of :data:`SHIPPED`, with its protocol row in the metadata."""
    results = {r["name"]: r for r in json.loads((OUT / "results.json").read_text())}
    for name, (file, fam) in SHIPPED.items():
        det, head = build(fam, feats[fam.kind], d)
        row = results.get(fam.name, {})
        meta = {
            "builtin": name,
            "family": fam.name,
            "trained_on": _trained_on(fam, d),
            # protocol sets whose images it trained on (`fakescope protocol` says so beside them)
            "seen_sets": ["spotdiff"] if fam.matched else [],
            "in_distribution_test": in_distribution(head(feats[fam.kind].dev), d),
            "protocol": {k: row.get(k) for k in ("sets", "test_mean", "control_penalty", "score")},
        }
        meta["guard"] = guard_figures(det, feats[fam.kind], d)
        path = save_checkpoint(ZOO / file, det, bench=meta)
        print(f"wrote {path} ({name}): {json.dumps(meta, default=float)}", flush=True)


def guard_figures(det: Any, f: Feats, d: Data) -> dict[str, Any]:
    """Dev test accuracy with and without the guard, and how often each set is flagged."""
    import torch

    def verdicts(x: np.ndarray, guarded: bool) -> list[str]:
        with torch.no_grad():
            feats = torch.from_numpy(x.astype(np.float32))
            z = det.net.head_logits(feats)[:, 0]
            p = torch.sigmoid(det.calibrated_logits(z)).numpy()
            nov = det.net.novelty(feats).numpy()
        return [
            det.verdict(float(s), float(n) if guarded else None)
            for s, n in zip(p, nov, strict=True)
        ]

    test = (d.dev["split"] == "test").to_numpy()
    truth = np.where(d.dev["label"].to_numpy()[test] == 1, "fake", "real")
    acc = {
        key: float(np.mean(np.array(verdicts(f.dev[test], g)) == truth))
        for key, g in (("without_guard", False), ("with_guard", True))
    }
    flagged = {}
    for name in d.proto["set"].unique():
        rows = f.proto[(d.proto["set"] == name).to_numpy()]
        with torch.no_grad():
            nov = det.net.novelty(torch.from_numpy(rows.astype(np.float32))).numpy()
        flagged[name] = float(np.mean(nov > det.novelty_threshold))
    return {
        "dev_test_accuracy": acc,
        "protocol_flagged": flagged,
        "threshold": det.novelty_threshold,
    }


def _trained_on(fam: Family, d: Data) -> dict[str, Any]:
    train = d.dev[d.dev["split"] == "train"]
    out: dict[str, Any] = {
        "sd14-coco-imagenet train split": {
            "fake": int(train["label"].sum()),
            "real": int((train["label"] == 0).sum()),
        },
    }
    if fam.matched:
        frames = d.proto[d.proto["set"] == "spotdiff"]
        out["video-spotdiff frames (content-matched)"] = {
            "fake": int(frames["label"].sum()),
            "real": int((frames["label"] == 0).sum()),
        }
    if fam.reals:
        out["pool real photos (not held back)"] = {"real": len(d.reals)}
    return out


def main() -> None:
    """``python bench/ship.py --pool POOL_DIR``: ship from cached features and results.json."""
    import argparse

    from protocol import load_data, load_feats

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    d = load_data(args.pool)
    timing: dict[str, float] = {}
    kinds = {fam.kind for _, fam in SHIPPED.values()}
    ship(d, {k: load_feats(k, d, timing) for k in kinds})


if __name__ == "__main__":
    main()
