"""Cold-start times of the command line, each in a fresh process: --help, info, and one verdict.

    FAKESCOPE_WEIGHTS=../shared/weights python bench/cold_start.py [IMAGE] [--python PY]

Prints the wall time of ``fakescope --help``, ``fakescope info builtin:clip-layers``,
``fakescope predict IMAGE`` with the default built-in detector (the time to a first verdict:
imports, opening the detector and its CLIP tower, decoding and scoring one image) and of
``fakescope predict`` on a file that is not there. Each is run ``--repeat`` times; the best and
the median are shown. ``--python`` times another installation (a core-only virtualenv).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("image", nargs="?", help="an image (default: a generated 512x512 picture)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--python", default=sys.executable, help="the interpreter to time")
    args = p.parse_args()
    image = args.image
    if image is None:
        image = str(Path(tempfile.mkdtemp()) / "photo.jpg")
        Image.effect_mandelbrot((512, 512), (-2, -1.5, 1, 1.5), 60).convert("RGB").save(image)
    exe = [args.python, "-m", "fakescope"]
    missing = str(Path(tempfile.mkdtemp()) / "not-there.jpg")
    for label, cmd in (
        ("fakescope --help", [*exe, "--help"]),
        ("fakescope info builtin:clip-layers", [*exe, "info", "builtin:clip-layers"]),
        ("fakescope predict IMAGE (first verdict)", [*exe, "predict", image, "--format", "csv"]),
        ("fakescope predict MISSING (file not found)", [*exe, "predict", missing]),
    ):
        times = [_time(cmd) for _ in range(args.repeat)]
        print(f"{label:<42} best {min(times):6.2f} s   median {statistics.median(times):6.2f} s")


if __name__ == "__main__":
    main()
