"""Animated GIF and WebP files read as clips, with Pillow: their frame durations, probe and
sampling. Frames with no (or zero) duration last 100 ms, as browsers show them.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from fakescope.data.video.media import Frame, VideoError, VideoInfo, _detail, check_frame_size
from fakescope.data.video.targets import _EPS_S, interval_targets, uniform_targets

logger = logging.getLogger(__name__)

_DEFAULT_GIF_FRAME_MS = 100  # what browsers show for a GIF frame with no (or zero) duration


def _gif_durations_ms(img: Image.Image) -> list[int]:
    durations = []
    for frame in ImageSequence.Iterator(img):
        ms = frame.info.get("duration") or 0
        durations.append(int(ms) if ms > 0 else _DEFAULT_GIF_FRAME_MS)
    return durations


def _open_animated(path: Path) -> tuple[Image.Image, list[int]]:
    """Open an animated GIF/WebP and read its frame durations, with image-style reasons."""
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise VideoError(path, "not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise VideoError(path, f"possible decompression bomb: {e}") from None
    except Exception as e:  # PIL raises many types for broken files
        raise VideoError(path, f"truncated or corrupt image data: {_detail(e)}") from e
    try:
        check_frame_size(path, *img.size)
        durations = _gif_durations_ms(img)
    except VideoError:
        img.close()
        raise
    except Image.DecompressionBombError as e:
        img.close()
        raise VideoError(path, f"possible decompression bomb: {e}") from None
    except Exception as e:  # PIL raises many types for broken files
        img.close()
        raise VideoError(path, f"truncated or corrupt image data: {_detail(e)}") from e
    if len(durations) < 2:
        img.close()
        raise VideoError(path, "no video stream (a still image, not animated)")
    return img, durations


def _probe_animated(path: Path) -> VideoInfo:
    img, durations = _open_animated(path)
    with img:
        total_s = sum(durations) / 1000.0
        return VideoInfo(
            duration_s=total_s,
            fps=len(durations) / total_s,
            n_frames=len(durations),
            width=img.width,
            height=img.height,
            rotation=0,
            codec=(img.format or path.suffix.lstrip(".")).lower(),
        )


def _animated_picks(
    starts_s: list[float], total_s: float, mode: str, n: int, every_s: float, max_frames: int
) -> list[int]:
    """Frame numbers on screen at each target time, deduplicated, in order."""
    if mode == "keyframes":
        if len(starts_s) > max_frames:
            logger.warning("animated image: sampling capped at max_frames=%d", max_frames)
        return list(range(min(len(starts_s), max_frames)))
    targets = (
        uniform_targets(total_s, n)
        if mode == "uniform"
        else interval_targets(total_s, every_s, max_frames)
    )
    picks = [max(0, bisect.bisect_right(starts_s, t + _EPS_S) - 1) for t in targets]
    return sorted(set(picks))


def _sample_animated(
    path: Path, mode: str, n: int, every_s: float, max_frames: int
) -> Iterator[Frame]:
    img, durations = _open_animated(path)
    with img:
        starts_s = [float(s) / 1000.0 for s in np.cumsum([0, *durations[:-1]])]
        picks = _animated_picks(starts_s, sum(durations) / 1000.0, mode, n, every_s, max_frames)
        for index, number in enumerate(picks):
            try:
                img.seek(number)
                image = img.convert("RGB")
            except Exception as e:  # PIL raises many types for broken files
                raise VideoError(path, f"truncated or corrupt image data: {_detail(e)}") from e
            yield Frame(index, starts_s[number], image)
