"""How long a heatmap takes: occlusion on the default detector for a photo of a given size.

    FAKESCOPE_WEIGHTS=../shared/weights python bench/heatmap_speed.py [IMAGE] [--grid 5 7]

Opens the detector once (not timed), then times ``fakescope.explain`` (occlusion at each
``--grid``: ``grid * grid`` occluded copies plus the image itself, scored in batches) and the
overlay at the image's own size, ``--repeat`` times each; prints the best and the median, the
number of model passes, and the heatmap's shape against the image's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from fakescope.infer.backends import open_detector
from fakescope.infer.explain import explain_image, overlay_on_image
from fakescope.zoo import DEFAULT_DETECTOR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("image", nargs="?", help="a photo (default: a generated 1200x800 picture)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR)
    p.add_argument("--grid", type=int, nargs="+", default=[5, 7])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    path = args.image
    if path is None:
        path = str(Path(tempfile.mkdtemp()) / "photo.jpg")
        Image.effect_mandelbrot((1200, 800), (-2, -1, 1, 1), 60).convert("RGB").save(path)
    image = Image.open(path).convert("RGB")
    det = open_detector(args.detector)
    explain_image(det, image.resize((64, 64)), grid=2)  # warm up the session
    print(f"{args.detector} on {Path(path).name} ({image.width}x{image.height})")
    for grid in args.grid:
        times, expl = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            expl = explain_image(det, image, method="occlusion", grid=grid)
            overlay_on_image(image, expl.image_heatmap, max_side=1024)
            times.append(time.perf_counter() - t0)
        h, w = expl.image_heatmap.shape
        print(
            f"grid {grid}: {grid * grid + 1:3d} passes  best {min(times):5.2f} s  "
            f"median {statistics.median(times):5.2f} s  heatmap {w}x{h}  P(fake) {expl.score:.3f}"
        )


if __name__ == "__main__":
    main()
