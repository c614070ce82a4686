"""Benchmark: fine-tune tf_efficientnet_lite0 (offline ImageNet weights) on the shared dev set.

Prints test accuracy and ROC-AUC with 95% intervals, and train / eval images per second.
Not a test: run it by hand (``make bench`` or ``python bench/train_effnet.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fakescope.config import TrainConfig
from fakescope.train.run import read_history, run

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(ROOT / "shared/data/sd14-coco-imagenet"))
    p.add_argument(
        "--weights", default=str(ROOT / "shared/weights/tf_efficientnet_lite0.in1k.safetensors")
    )
    p.add_argument("--out", default="runs/bench-effnet-lite0")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--resize-mode", default="resize", choices=["resize", "crop"])
    p.add_argument("--augment", default="flip")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for path in (args.data, args.weights):
        if not Path(path).exists():
            raise SystemExit(f"bench needs {path}; it is not here")
    cfg = TrainConfig(
        data=args.data,
        model="tf_efficientnet_lite0",
        weights=args.weights,
        out=args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=32,
        resize_mode=args.resize_mode,
        augment=args.augment.split(","),
        seed=args.seed,
        workers=2,
    )
    t0 = time.time()
    run_dir = run(cfg, force=True)
    wall = time.time() - t0
    m = json.loads((run_dir / "report" / "metrics.json").read_text())
    hist = read_history(run_dir)
    train_ips = sum(h["train_images_per_s"] for h in hist) / len(hist)
    print("\n== bench: tf_efficientnet_lite0 on", Path(args.data).name, "==")
    print(
        f"epochs {len(hist)}  best epoch {min(hist, key=lambda h: h['val_loss'])['epoch']}  wall {wall:.0f}s"
    )
    print(
        f"test n={m['n']}  accuracy {m['accuracy']:.4f} CI {m['accuracy_ci']}  "
        f"ROC-AUC {m['roc_auc']:.4f} CI {m['roc_auc_ci']}  AP {m['average_precision']:.4f}"
    )
    print(f"train {train_ips:.1f} images/s (epoch incl. val)  ", end="")
    print(f"eval {eval_rate(run_dir):.1f} images/s")


def eval_rate(run_dir: Path) -> float:
    """Time scoring the test split end to end (decode + preprocess + model)."""
    from fakescope.data.splits import load_splits
    from fakescope.eval.scoring import score_frame
    from fakescope.models.checkpoint import load_detector

    det = load_detector(run_dir / "best.safetensors")
    df = load_splits(run_dir / "splits.csv")
    t0 = time.time()
    scored, _ = score_frame(det, df, batch_size=32, workers=2)
    return len(scored) / (time.time() - t0)


if __name__ == "__main__":
    main()
