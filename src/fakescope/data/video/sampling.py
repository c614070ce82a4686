"""Sampling upright RGB frames from a clip: :func:`sample_frames`, and the seeking cursor it uses.

Sampling seeks, so the work is bounded by the number of frames asked for (times a group of
pictures), not by the length of the clip. A clip whose duration is unknown is decoded once, and a
bounded subset kept. Animated GIF/WebP files are sampled by :mod:`fakescope.data.video.animated`.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fakescope.data.video.animated import _sample_animated
from fakescope.data.video.media import ANIMATED_EXTENSIONS, Frame, VideoError, _check_file, _detail
from fakescope.data.video.probe import (
    _decoded,
    _duration_s,
    _fps,
    _import_av,
    _open,
    _start_s,
    _video_stream,
)
from fakescope.data.video.rotation import _frame_rotation, rotate_upright
from fakescope.data.video.targets import _EPS_S, _subsample, interval_targets, uniform_targets

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

SAMPLING_MODES = ("uniform", "interval", "keyframes")
_NO_INDEX_SEEK_GAP_S = 2.0  # without a keyframe index, seek only across gaps longer than this


def _to_frame(index: int, time_s: float, frame: VideoFrame, stream: VideoStream) -> Frame:
    image = frame.to_image()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return Frame(index, max(time_s, 0.0), rotate_upright(image, _frame_rotation(frame, stream)))


class _Cursor:
    """A forward decoding position in one stream that seeks only when seeking saves work.

    ``frame_at(t)`` returns the frame on screen at ``t`` seconds from the stream start: the last
    frame whose time is at or before ``t``, or the first frame after it when none is.
    """

    def __init__(
        self, container: InputContainer, stream: VideoStream, path: Path, seek: bool = True
    ) -> None:
        self._container, self._stream, self._path = container, stream, path
        self._allow_seek = seek
        self._start_s = _start_s(stream)
        self.step_s = 1.0 / (_fps(stream) or 25.0)
        self._keyframes = _keyframe_times(stream, self._start_s)
        self._frames: Iterator[VideoFrame] | None = None
        self._current: tuple[float, VideoFrame] | None = None
        self._peeked: tuple[float, VideoFrame] | None = None
        self._last_time = -self.step_s
        self.eof = False

    def frame_at(self, t: float) -> tuple[float, VideoFrame] | None:
        """The (time, frame) on screen at ``t``; None when nothing is decodable from here."""
        if self._should_seek(t):
            self._seek(t)
        while True:
            item = self._peeked or self.next_frame()
            self._peeked = None
            if item is None:
                return self._current
            if item[0] > t + _EPS_S:
                self._peeked = item
                return self._current or item
            self._current = item

    def _position(self) -> float | None:
        item = self._peeked or self._current
        return item[0] if item else None

    def _should_seek(self, t: float) -> bool:
        if not self._allow_seek:
            return False
        pos = self._position()
        if self._frames is None or pos is None:
            return True
        if t <= pos or self.eof:
            return False
        if self._keyframes:  # would a seek land on a keyframe past where we already are?
            i = bisect.bisect_right(self._keyframes, t + _EPS_S) - 1
            return i >= 0 and self._keyframes[i] > pos + _EPS_S
        return t - pos > _NO_INDEX_SEEK_GAP_S

    def _seek(self, t: float) -> None:
        tb = self._stream.time_base
        offset = int((self._stream.start_time or 0) + math.floor(max(t, 0.0) / tb)) if tb else 0
        av = _import_av()
        try:
            self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
        except (av.FFmpegError, ValueError) as e:  # not seekable: decode forward from here on
            logger.info("%s: seeking failed (%s), decoding forward", self._path, _detail(e))
            self._allow_seek = False
            if self._frames is None:
                self._frames = _decoded(self._container, self._stream, self._path)
            return
        self._frames = _decoded(self._container, self._stream, self._path)
        self._current = self._peeked = None
        self.eof = False
        if not self._keyframes:  # some demuxers (Matroska) read their index on the first seek
            self._keyframes = _keyframe_times(self._stream, self._start_s)

    def next_frame(self) -> tuple[float, VideoFrame] | None:
        """Decode the next frame as (seconds from stream start, frame); None at the end."""
        if self._frames is None:
            self._frames = _decoded(self._container, self._stream, self._path)
        frame = next(self._frames, None)
        if frame is None:
            self.eof = True
            return None
        time = frame.time
        t = float(time) - self._start_s if time is not None else self._last_time + self.step_s
        self._last_time = t
        return t, frame


def _keyframe_times(stream: VideoStream, start_s: float) -> list[float]:
    """Sorted keyframe times (seconds from stream start) from the container index, if any."""
    entries = getattr(stream, "index_entries", None)
    if not entries or not stream.time_base:
        return []
    try:
        times = {
            float(e.timestamp * stream.time_base) - start_s for e in entries if e.flags & 1
        }  # AVINDEX_KEYFRAME
    except Exception:  # an index we cannot read: seek by the gap rule instead
        return []
    return sorted(times)


def _dedupe_frames(
    picks: Iterator[tuple[float, VideoFrame] | None], stream: VideoStream
) -> Iterator[Frame]:
    """Frames for the picks, skipping repeats and misses, indexed in order."""
    seen: set[float] = set()
    for pick in picks:
        if pick is None or pick[0] in seen:
            continue
        seen.add(pick[0])
        yield _to_frame(len(seen) - 1, pick[0], pick[1], stream)


def sample_frames(
    path: str | Path,
    mode: str = "uniform",
    n: int = 16,
    every_s: float = 1.0,
    max_frames: int = 64,
) -> Iterator[Frame]:
    """Sample upright RGB frames from a video or an animated GIF/WebP.

    Args:
        path: the clip.
        mode: ``uniform`` (``n`` frames at the centres of ``n`` equal time segments),
            ``interval`` (one frame every ``every_s`` seconds from the start) or ``keyframes``
            (only keyframes, the fast path; all frames for GIF/WebP).
        n: frames for ``uniform``; fewer come back when the clip has fewer distinct frames.
        every_s: seconds between frames for ``interval``.
        max_frames: upper bound on frames returned, whatever the mode.

    Returns:
        An iterator of :class:`Frame` in time order. Each target time gets the frame on screen at
        that time. Times come from the frames' own timestamps (so variable frame rates are exact).

    Raises:
        ValueError: a bad ``mode``, ``n``, ``every_s`` or ``max_frames`` (raised at once).
        VideoError: a missing file (at once); no video stream, an unreadable file or no decodable
            frames (while iterating).
    """
    _check_args(mode, n, every_s, max_frames)
    p = _check_file(path)
    if n > max_frames and mode == "uniform":
        logger.warning("uniform sampling capped at max_frames=%d (asked for %d)", max_frames, n)
        n = max_frames
    if p.suffix.lower() in ANIMATED_EXTENSIONS:
        return _sample_animated(p, mode, n, every_s, max_frames)
    return _sample_video(p, mode, n, every_s, max_frames)


def _check_args(mode: str, n: int, every_s: float, max_frames: int) -> None:
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; choose from {', '.join(SAMPLING_MODES)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not every_s > 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")


def _sample_video(p: Path, mode: str, n: int, every_s: float, max_frames: int) -> Iterator[Frame]:
    with _open(p) as container:
        stream = _video_stream(container, p)
        if mode == "keyframes":
            frames = _keyframe_frames(container, stream, p, max_frames)
        else:
            duration = _duration_s(container, stream)
            if duration is None or duration <= 0:
                logger.info("%s: duration unknown, decoding sequentially", p)
                frames = _sequential_frames(container, stream, p, mode, n, every_s, max_frames)
            else:
                targets = (
                    uniform_targets(duration, n)
                    if mode == "uniform"
                    else interval_targets(duration, every_s, max_frames)
                )
                frames = _seeking_frames(container, stream, p, targets)
        produced = 0
        for frame in _as_video_errors(frames, p):
            produced += 1
            yield frame
        if not produced:
            raise VideoError(p, "no decodable frames")


def _as_video_errors(frames: Iterator[Frame], path: Path) -> Iterator[Frame]:
    """Pass frames through; an FFmpeg error that the decoding loop did not expect (a failed seek,
    a frame that will not convert) ends the clip as a VideoError, like any other damage."""
    av = _import_av()
    try:
        yield from frames
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(path, f"truncated or corrupt video data: {_detail(e)}") from e


def _seeking_frames(
    container: InputContainer, stream: VideoStream, path: Path, targets: Sequence[float]
) -> Iterator[Frame]:
    cursor = _Cursor(container, stream, path)
    yield from _dedupe_frames((cursor.frame_at(t) for t in targets), stream)


def _keyframe_frames(
    container: InputContainer, stream: VideoStream, path: Path, max_frames: int
) -> Iterator[Frame]:
    """Keyframes only, decoded from keyframe packets; a clip whose container flags none falls
    back to decoding everything and keeping the frames the decoder marks as keyframes."""
    start, count = _start_s(stream), 0
    stream.codec_context.skip_frame = "NONKEY"
    for frame in _decoded(container, stream, path, keyframes_only=True):
        if count == max_frames:
            logger.warning("%s: keyframe sampling capped at max_frames=%d", path, max_frames)
            return
        yield _to_frame(count, _time_or(frame, start, float(count)), frame, stream)
        count += 1
    if count == 0:
        yield from _flagged_keyframes(container, stream, path, max_frames)


def _flagged_keyframes(
    container: InputContainer, stream: VideoStream, path: Path, max_frames: int
) -> Iterator[Frame]:
    """Fallback for containers without keyframe flags: decode all, keep key (or the first) frames."""
    logger.info("%s: no keyframe packets flagged, decoding every frame", path)
    stream.codec_context.skip_frame = "DEFAULT"
    av = _import_av()
    try:
        container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
    except (av.FFmpegError, ValueError) as e:  # cannot rewind: nothing more to decode
        logger.warning("%s: cannot seek back to decode every frame: %s", path, _detail(e))
        return
    start, count, first = _start_s(stream), 0, None
    for frame in _decoded(container, stream, path):
        if first is None:
            first = frame
        if frame.key_frame and count < max_frames:
            yield _to_frame(count, _time_or(frame, start, float(count)), frame, stream)
            count += 1
    if count == 0 and first is not None:
        yield _to_frame(0, _time_or(first, start, 0.0), first, stream)


def _time_or(frame: VideoFrame, start_s: float, default: float) -> float:
    """Seconds from the stream start, or ``default`` for a frame without a timestamp."""
    return float(frame.time) - start_s if frame.time is not None else default


def _sequential_frames(
    container: InputContainer,
    stream: VideoStream,
    path: Path,
    mode: str,
    n: int,
    every_s: float,
    max_frames: int,
) -> Iterator[Frame]:
    """Fallback when the duration is unknown: decode everything once, keep a bounded subset.

    ``uniform`` keeps every ``stride``-th frame, doubling the stride (and halving what is kept)
    whenever more than ``max_frames`` are held, then picks ``n`` evenly; ``interval`` keeps the
    frame on screen at each multiple of ``every_s``.
    """
    cursor = _Cursor(container, stream, path, seek=False)
    if mode == "interval":
        yield from _dedupe_frames(_interval_picks(cursor, every_s, max_frames, path), stream)
        return
    kept = _decimated(cursor, max_frames)
    yield from _dedupe_frames(iter(_subsample(kept, n)), stream)


def _interval_picks(
    cursor: _Cursor, every_s: float, max_frames: int, path: Path
) -> Iterator[tuple[float, VideoFrame]]:
    """The frame on screen at each multiple of ``every_s`` until the stream ends."""
    previous: tuple[float, VideoFrame] | None = None
    for k in range(max_frames):
        t = k * every_s
        pick = cursor.frame_at(t)
        if pick is None or (cursor.eof and k and t >= pick[0] + cursor.step_s - _EPS_S):
            return  # past the end of the last frame
        yield pick
        previous = pick
    beyond = None if cursor.eof else cursor.frame_at(max_frames * every_s)
    if beyond is not None and previous is not None and beyond[0] != previous[0]:
        logger.warning("%s: interval sampling capped at max_frames=%d", path, max_frames)


def _decimated(cursor: _Cursor, max_frames: int) -> list[tuple[float, VideoFrame]]:
    """Every frame of the stream thinned to at most ``max_frames``, evenly spread over it."""
    kept: list[tuple[float, VideoFrame]] = []
    stride, seen = 1, 0
    while (item := cursor.next_frame()) is not None:
        if seen % stride == 0:
            kept.append(item)
            if len(kept) > max_frames:
                kept, stride = kept[::2], stride * 2
        seen += 1
    return kept
