"""Video scoring options, the frames they select, and what becomes of frame scores: one score
per clip, and a timeline.

Frames come from :mod:`fakescope.data.video`; :func:`read_frames` is the one place that turns a
file and :class:`VideoOptions` into the frames to score (the predictor and the server's isolated
decode check both use it, so they decode the same frames).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.data.video import (
    SAMPLING_MODES,
    Frame,
    VideoError,
    check_frame_size,
    probe_video,
    sample_frames,
)

logger = logging.getLogger(__name__)

AGGREGATIONS = ("mean", "median", "topk", "max")


@dataclass
class VideoOptions:
    """How videos are sampled and their frame scores combined.

    Attributes:
        sample: ``uniform`` (``frames`` evenly spaced), ``interval`` (one every ``every_s`` seconds)
            or ``keyframes`` (the fast path).
        frames: frames for ``uniform``.
        every_s: seconds between frames for ``interval``.
        max_frames: upper bound on frames per video, whatever the mode (bounded work on long clips).
        aggregate: ``mean``, ``median``, ``topk`` (mean of the k highest) or ``max``.
        topk: k for ``topk``.
        timeline_dir: where to write a score-over-time PNG per video (None: no plot).
    """

    sample: str = "uniform"
    frames: int = 16
    every_s: float = 1.0
    max_frames: int = 64
    aggregate: str = "mean"
    topk: int = 3
    timeline_dir: str | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` for options that make no sense."""
        checks = [
            (self.sample in SAMPLING_MODES, f"video sampling must be one of {SAMPLING_MODES}"),
            (self.aggregate in AGGREGATIONS, f"video aggregation must be one of {AGGREGATIONS}"),
            (self.frames >= 1, "video frames must be at least 1"),
            (self.max_frames >= 1, "the most frames per video must be at least 1"),
            (self.every_s > 0, "seconds between video frames must be positive"),
            (self.topk >= 1, "video top-k must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------------------------- aggregation
def read_frames(path: str, options: VideoOptions, max_pixels: int | None) -> list[Frame]:
    """The frames of a video that ``options`` selects, after checking the frame size.

    Args:
        path: the video (or animated GIF/WebP) file.
        options: sampling (``sample``, ``frames``, ``every_s``, ``max_frames``).
        max_pixels: largest frame in pixels (None or 0: no limit).

    Raises:
        VideoError: the file cannot be read, or its frames are over ``max_pixels``.
    """
    info = probe_video(path)
    check_frame_size(path, info.width, info.height, max_pixels)
    return list(
        sample_frames(
            path,
            mode=options.sample,
            n=options.frames,
            every_s=options.every_s,
            max_frames=options.max_frames,
        )
    )


def video_reason(e: Exception) -> str:
    """The short reason a video could not be read (no path in it), for a row or a refusal."""
    if isinstance(e, VideoError):
        return e.reason
    return f"could not decode video: {type(e).__name__}: {e}"


def aggregate(scores: Sequence[float], method: str = "mean", k: int = 3) -> float:
    """Combine per-frame P(fake) scores into one score for the clip.

    Args:
        scores: per-frame scores.
        method: ``mean``, ``median``, ``topk`` (mean of the ``k`` highest; all of them when
            there are fewer than ``k``) or ``max``.
        k: how many of the highest scores ``topk`` averages.

    Raises:
        ValueError: no scores, an unknown method, or ``k`` below 1.
    """
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("cannot aggregate an empty list of scores")
    if method == "mean":
        return float(arr.mean())
    if method == "median":
        return float(np.median(arr))
    if method == "max":
        return float(arr.max())
    if method == "topk":
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return float(np.sort(arr)[-min(k, arr.size) :].mean())
    raise ValueError(f"unknown aggregation {method!r}; choose from {', '.join(AGGREGATIONS)}")


# ------------------------------------------------------------------------------------- timeline
def timeline_rows(
    frames_meta: Sequence[Frame | Mapping[str, Any]], scores: Sequence[float]
) -> list[dict[str, Any]]:
    """Per-frame ``{index, time_s, score}`` rows, ready for JSON.

    Args:
        frames_meta: :class:`Frame` objects, or mappings with ``index`` and ``time_s``.
        scores: one score per frame.

    Raises:
        ValueError: the lengths differ.
    """
    if len(frames_meta) != len(scores):
        raise ValueError(f"{len(frames_meta)} frames but {len(scores)} scores")
    rows = []
    for meta, score in zip(frames_meta, scores, strict=True):
        index = meta["index"] if isinstance(meta, Mapping) else meta.index
        time_s = meta["time_s"] if isinstance(meta, Mapping) else meta.time_s
        rows.append({"index": int(index), "time_s": float(time_s), "score": float(score)})
    return rows


def plot_timeline(
    times_s: Sequence[float],
    scores: Sequence[float],
    path: str | Path,
    threshold: float = 0.5,
    band: float | None = None,
    title: str = "",
) -> Path:
    """Plot P(fake) against time and write it as a PNG.

    Args:
        times_s: frame times in seconds.
        scores: P(fake) per frame.
        path: the PNG to write (parent folders are created).
        threshold: decision threshold, drawn as a dashed line.
        band: half-width of the uncertain band around the threshold, shaded when given.
        title: plot title.

    Returns:
        The path written.

    Raises:
        ValueError: ``times_s`` and ``scores`` differ in length.
    """
    from PIL import Image, ImageDraw

    if len(times_s) != len(scores):
        raise ValueError(f"{len(times_s)} times but {len(scores)} scores")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    w, h, left, right, top, bottom = 800, 300, 56, 16, 34, 40
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    t = [float(v) for v in times_s]
    t0, t1 = (min(t), max(t)) if t else (0.0, 1.0)
    t1 = t1 if t1 > t0 else t0 + 1.0

    def xy(time_s: float, score: float) -> tuple[float, float]:
        x = left + (time_s - t0) / (t1 - t0) * (w - left - right)
        return x, top + (1.0 - min(max(score, 0.0), 1.0)) * (h - top - bottom)

    if band:
        lo, hi = max(0.0, threshold - band), min(1.0, threshold + band)
        draw.rectangle((xy(t0, hi), xy(t1, lo)), fill=(226, 228, 240))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):  # the grid and the P(fake) axis
        _, y = xy(t0, tick)
        draw.line((left, y, w - right, y), fill=(225, 225, 225))
        draw.text((left - 34, y - 6), f"{tick:.2f}", fill="black")
    for tick in _time_ticks(t0, t1):
        x, _ = xy(tick, 0.0)
        draw.line((x, top, x, h - bottom), fill=(235, 235, 235))
        draw.text((x - 10, h - bottom + 6), f"{tick:g}", fill="black")
    x0, y_thr = xy(t0, threshold)
    for x in range(int(left), w - right, 12):  # the threshold, dashed
        draw.line((x, y_thr, min(x + 6, w - right), y_thr), fill=(207, 34, 46), width=1)
    points = [xy(a, float(b)) for a, b in zip(t, scores, strict=True)]
    if len(points) > 1:
        draw.line(points, fill=(31, 119, 180), width=2)
    for x, y in points:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(31, 119, 180))
    draw.rectangle((left, top, w - right, h - bottom), outline="black")
    draw.text(((w - 60) / 2, h - 16), "time (s)", fill="black")
    draw.text((4, 10), "P(fake)", fill="black")
    legend = "blue: P(fake) per frame   red dashes: threshold" + (
        "   grey: uncertain" if band else ""
    )
    draw.text((w - right - 6 * len(legend) - 4, top + 4), legend, fill=(90, 90, 90))
    if title:
        draw.text((left + 60, 10), title, fill="black")
    img.save(out, format="PNG")
    logger.debug("wrote %s", out)
    return out


def _time_ticks(t0: float, t1: float, most: int = 8) -> list[float]:
    """Round tick values between ``t0`` and ``t1`` (1, 2 or 5 times a power of ten apart)."""
    span = max(t1 - t0, 1e-9)
    step = 10.0 ** math.floor(math.log10(span / most))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= most:
            step *= factor
            break
    first = math.ceil(t0 / step) * step
    return [round(first + i * step, 6) for i in range(int((t1 - first) / step + 1e-9) + 1)]
