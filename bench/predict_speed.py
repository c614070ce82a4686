"""Benchmark: predict throughput end to end from files (decode + preprocess + model).

Prints images/s on the shared dev set and frames/s on the shared videos for one checkpoint.
Not a test: ``python bench/predict_speed.py --detector runs/.../best.safetensors``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fakescope.infer.inputs import expand_inputs
from fakescope.infer.predictor import Predictor, VideoOptions
from fakescope.models.checkpoint import load_detector

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--detector", required=True, help="checkpoint to time")
    p.add_argument("--images", default=str(ROOT / "shared/data/sd14-coco-imagenet"))
    p.add_argument("--videos", default=str(ROOT / "shared/data/video-spotdiff"))
    p.add_argument("--limit", type=int, default=300, help="images to time")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    det = load_detector(args.detector)
    pred = Predictor(det, batch_size=args.batch_size, workers=args.workers)
    paths = list(expand_inputs([args.images]))[: args.limit]
    t0 = time.perf_counter()
    rows = list(pred.predict_image_paths(paths))
    dt = time.perf_counter() - t0
    print(
        f"{det.spec.arch}: {len(rows)} images in {dt:.1f}s = {len(rows) / dt:.1f} images/s end to end "
        f"(batch {args.batch_size}, {args.workers} decode threads)"
    )
    for mode in ("uniform", "keyframes"):
        vpred = Predictor(
            det,
            batch_size=args.batch_size,
            workers=0,
            video=VideoOptions(sample=mode, frames=16, max_frames=64),
        )
        videos = list(expand_inputs([args.videos]))
        t0 = time.perf_counter()
        vrows = [vpred.predict_video(v) for v in videos]
        dt = time.perf_counter() - t0
        frames = sum(r.n_frames or 0 for r in vrows)
        print(
            f"video ({mode}): {len(vrows)} clips, {frames} frames in {dt:.1f}s = {frames / dt:.1f} frames/s"
        )
        for r in vrows:
            print(
                f"  {Path(r.path).name:<20} P(fake) {r.score if r.score is None else round(r.score, 3)} "
                f"{r.verdict} {r.error or ''}"
            )


if __name__ == "__main__":
    main()
