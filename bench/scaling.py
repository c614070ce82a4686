"""Benchmark: single-machine scaling of training (torchrun) and scanning (Ray actors), 1 vs 2.

Training: one epoch of tf_efficientnet_lite0 (offline ImageNet weights) on the shared dev set
under ``torchrun``, by default as 1 process x 1 thread, 1 process x 2 threads and 2 processes x
1 thread (``OMP_NUM_THREADS``), same global batch. Images/s counts the train split over the
training phase of the epoch (validation left out).

Scanning: ``fakescope scan`` of the whole dev set with the 1-process run's checkpoint, on a local
Ray cluster, with 1 and with 2 actors (1 CPU and 1 thread each). It reports images/s end to end
(actor start-up included) and in the steady state (after the first rows came back), then checks
the 2-actor output against ``fakescope predict`` row by row.

Not a test: run it by hand, ``python bench/scaling.py`` (several minutes on 2 cores). Results
are also merged into ``<out>/results.json`` (a partial run keeps the other parts' figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _train(args: argparse.Namespace, nproc: int, threads: int) -> dict[str, Any]:
    """One epoch under torchrun: ``nproc`` processes of ``threads`` intra-op threads each."""
    out = Path(args.out) / f"train-{nproc}x{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "fakescope",
        "-q",
        "train",
        args.data,
        "--out",
        str(out),
        "--force",
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
        args.weights,
        "--epochs",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--workers",
        "0",
        "--no-report",
        "--calibrate",
        "none",
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - t0
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    n_train = int((pd.read_csv(out / "splits.csv")["split"] == "train").sum())
    return {
        "processes": nproc,
        "threads_per_process": threads,
        "train_images": n_train,
        "train_s": rec["train_s"],
        "train_images_per_s": n_train / rec["train_s"],
        "epoch_s": rec["time_s"],
        "wall_s": wall,
        "train_loss": rec["train_loss"],
        "val_loss": rec["val_loss"],
        "checkpoint": str(out / "best.safetensors"),
    }


def _scan(args: argparse.Namespace, ckpt: str, actors: int) -> dict[str, Any]:
    """Scan the dev set with ``actors`` actors on a fresh local Ray cluster."""
    from fakescope.scan import scan

    out = Path(args.out) / f"scan-{actors}"
    res = scan(
        args.data,
        out,
        ckpt,
        actors=actors,
        batch_size=16,
        part_size=256,
        num_cpus=os.cpu_count(),
        force=True,
    )
    return {
        "actors": actors,
        "rows": res.rows_written,
        "errors": res.errors,
        "seconds": res.seconds,
        "ray_start_s": res.startup_seconds,
        "images_per_s": res.images_per_s,
        "steady_images_per_s": res.steady_images_per_s,
        "output": str(out),
    }


def _predict_check(args: argparse.Namespace, ckpt: str, scan_out: str) -> dict[str, Any]:
    """``fakescope predict`` on the same input (one process, 2 decode threads) against the scan."""
    import fakescope
    from fakescope.scan import read_scan_rows

    t0 = time.time()
    rows = fakescope.predict(args.data, detector=ckpt, batch_size=16, workers=2)
    seconds = time.time() - t0
    got = read_scan_rows(scan_out)
    same_paths = [r["path"] for r in got] == [p.path for p in rows]
    diffs = [
        abs(g["score"] - p.score) for g, p in zip(got, rows, strict=False) if p.score is not None
    ]
    keys = ("verdict", "error", "kind", "width", "height", "model", "threshold")
    mismatched = sum(
        any(g[k] != p.to_dict()[k] for k in keys) for g, p in zip(got, rows, strict=False)
    )
    return {
        "predict_rows": len(rows),
        "scan_rows": len(got),
        "same_paths_in_order": same_paths,
        "max_abs_score_diff": max(diffs) if diffs else 0.0,
        "rows_with_other_fields_different": mismatched,
        "predict_images_per_s": len(rows) / seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "shared/data/sd14-coco-imagenet"))
    p.add_argument(
        "--weights", default=str(ROOT / "shared/weights/tf_efficientnet_lite0.in1k.safetensors")
    )
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (default 32)")
    p.add_argument(
        "--train",
        default="1x1,1x2,2x1",
        help="training set-ups as PROCESSESxTHREADS, comma-separated (default 1x1,1x2,2x1; "
        "'' to skip training and reuse <out>/train-1x1's checkpoint)",
    )
    p.add_argument("--skip-scan", action="store_true", help="training only")
    args = p.parse_args()
    for path in (args.data, args.weights):
        if not Path(path).exists():
            raise SystemExit(f"bench needs {path}; it is not here")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    setups = [tuple(int(v) for v in s.split("x")) for s in args.train.split(",") if s]
    res["train"] = [_train(args, n, t) for n, t in setups]
    ckpt = str(Path(args.out) / "train-1x1" / "best.safetensors")
    if not args.skip_scan:
        res["scan"] = [_scan(args, ckpt, n) for n in (1, 2)]
        res["predict_check"] = _predict_check(args, ckpt, res["scan"][-1]["output"])
    res["load_avg_end"] = os.getloadavg()
    path = Path(args.out) / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **{k: v for k, v in res.items() if v}}, indent=2))
    _print(res)


def _print(res: dict[str, Any]) -> None:
    print(
        f"\n== scaling on {res['cpus']} CPUs (load avg at start {res['load_avg_start'][0]:.2f}) =="
    )
    for t in res.get("train", []):
        print(
            f"train  {t['processes']} process(es) x {t['threads_per_process']} thread(s): "
            f"{t['train_images_per_s']:.1f} images/s ({t['train_images']} images in "
            f"{t['train_s']:.1f}s; epoch incl. val {t['epoch_s']:.1f}s; wall {t['wall_s']:.1f}s)"
        )
    for s in res.get("scan", []):
        print(
            f"scan   {s['actors']} actor(s): {s['images_per_s']:.1f} images/s end to end, "
            f"{s['steady_images_per_s']:.1f} steady ({s['rows']} rows in {s['seconds']:.1f}s; "
            f"Ray start {s['ray_start_s']:.1f}s)"
        )
    c = res.get("predict_check")
    if not c:
        return
    print(
        f"predict {c['predict_images_per_s']:.1f} images/s; scan vs predict: {c['scan_rows']} vs "
        f"{c['predict_rows']} rows, same order {c['same_paths_in_order']}, max |score diff| "
        f"{c['max_abs_score_diff']:.2e}, rows with other fields different "
        f"{c['rows_with_other_fields_different']}"
    )


if __name__ == "__main__":
    main()
