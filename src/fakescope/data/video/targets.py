"""Which times to sample: the centres of equal segments, or a fixed interval, and an even
subsample of what was kept.
"""

from __future__ import annotations

import logging
import math
from typing import Any

logger = logging.getLogger(__name__)

_EPS_S = 1e-6  # float slack when comparing frame times with targets


def uniform_targets(duration_s: float, n: int) -> list[float]:
    """Centres of ``n`` equal segments of ``[0, duration_s)``."""
    return [(i + 0.5) * duration_s / n for i in range(n)]


def interval_targets(duration_s: float, every_s: float, max_frames: int) -> list[float]:
    """``0, every_s, 2*every_s, ...`` below ``duration_s``, at most ``max_frames`` of them."""
    count = max(1, math.ceil(duration_s / every_s - _EPS_S))
    if count > max_frames:
        logger.warning(
            "interval sampling capped at %d frames (clip of %.1f s every %.2f s wants %d)",
            max_frames,
            duration_s,
            every_s,
            count,
        )
    return [k * every_s for k in range(min(count, max_frames))]


def _subsample(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (the centre of ``n`` equal slices), in order."""
    if len(items) <= n:
        return items
    picks = sorted({min(len(items) - 1, int((i + 0.5) * len(items) / n)) for i in range(n)})
    return [items[i] for i in picks]
