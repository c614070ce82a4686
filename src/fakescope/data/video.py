"""Video input: recognise clips, probe them and sample frames.

The model lives elsewhere: this module turns a video (or an animated GIF/WebP) into a few upright
RGB :class:`Frame` images with their timestamps. What happens to the frames' scores (one score
per clip, a timeline) is in :mod:`fakescope.infer.video`.

Decoding uses PyAV (the ``video`` extra), imported only when a video is actually opened, so the
rest of the package works without it. Sampling seeks, so the work is bounded by the number of
frames asked for (times a group of pictures), not by the length of the clip.

Rotation: phone clips store frames sideways plus a display matrix. PyAV (>= 14, incl. 18) exposes
it per decoded frame as ``VideoFrame.rotation`` (degrees counter-clockwise, in [-180, 180]); the
stream has no side-data accessor, and ``stream.metadata`` no longer carries the legacy ``rotate``
tag (FFmpeg turns it into the display matrix). Older PyAVs are handled through the frame's
``DISPLAYMATRIX`` side data or the ``rotate`` tag. Every sampled image is turned upright.

Files are untrusted: FFmpeg only ever sees a local file (``file:`` URL, ``protocol_whitelist``
``file``) with its demuxer pinned to the container sniffed from the first bytes (MP4/QuickTime,
Matroska/WebM or AVI; see :func:`sniff_container`), so playlists, concat lists and URLs are
refused rather than followed. Failures are :class:`VideoError` with the same plain reasons as
image loading (``empty file (0 bytes)``, ``not a recognised video format``, ``truncated or
corrupt video data: ...``, ``no video stream``).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from fakescope.data.images import DEFAULT_MAX_PIXELS, file_problem

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
ANIMATED_EXTENSIONS = frozenset({".gif", ".webp"})
SAMPLING_MODES = ("uniform", "interval", "keyframes")

_EPS_S = 1e-6  # float slack when comparing frame times with targets
_NO_INDEX_SEEK_GAP_S = 2.0  # without a keyframe index, seek only across gaps longer than this
_MAX_BAD_PACKETS = 16  # give up on a clip after this many packets fail to decode
_DEFAULT_GIF_FRAME_MS = 100  # what browsers show for a GIF frame with no (or zero) duration
_OPEN_TIMEOUT_S = 30.0  # FFmpeg gives up on an open or a read that blocks longer than this
# Containers we hand to FFmpeg, told apart by their first bytes; everything else is refused
# before FFmpeg sees it, so no playlist, concat list, image sequence or network demuxer runs.
_MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML header: Matroska and WebM
# Options for avformat_open_input: only the local-file protocol (no http, concat:, subfile:,
# pipe: or data: URLs, including for any nested open), and QuickTime external data references
# (``dref`` atoms pointing at other files) stay off.
_FFMPEG_OPTIONS = {"protocol_whitelist": "file", "enable_drefs": "0"}
_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class VideoError(Exception):
    """A video that cannot be read: missing, not a video, corrupt, or with no decodable frames.

    Attributes:
        path: the file.
        reason: what went wrong, short enough for a results table.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[VideoError], tuple[Path, str]]:
        return (type(self), (self.path, self.reason))


@dataclass
class Frame:
    """One sampled frame.

    Attributes:
        index: ordinal among the sampled frames (0, 1, 2, ...), not the frame number in the clip.
        time_s: presentation time in seconds from the start of the stream.
        image: the frame as an upright RGB image.
    """

    index: int
    time_s: float
    image: Image.Image


@dataclass
class VideoInfo:
    """What :func:`probe_video` learns about a clip.

    Attributes:
        duration_s: length in seconds, or None when the container does not say.
        fps: average frame rate, or None when unknown.
        n_frames: frame count from the container, or None when it does not say.
        width: displayed width in pixels (after rotation), as the sampled images have it.
        height: displayed height in pixels (after rotation).
        rotation: degrees (0, 90, 180 or 270) the stored frames are turned counter-clockwise to
            show them upright.
        codec: decoder name, e.g. ``h264``, ``vp9``, ``gif``.
    """

    duration_s: float | None
    fps: float | None
    n_frames: int | None
    width: int
    height: int
    rotation: int
    codec: str


# ----------------------------------------------------------------------------------- detection
def is_video(path: str | Path) -> bool:
    """True for video files, and for GIF/WebP files with more than one frame.

    Video containers are recognised by extension alone; GIF and WebP files are opened to see
    whether they are animated. Unreadable files give False rather than an error.
    """
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix not in ANIMATED_EXTENSIONS:
        return False
    try:
        with Image.open(path) as img:
            return bool(getattr(img, "is_animated", False)) and getattr(img, "n_frames", 1) > 1
    except Exception:  # unreadable, truncated, not an image: not a video either
        return False


# ------------------------------------------------------------------------------------ rotation
def normalize_rotation(degrees: float) -> int:
    """Round a rotation to the nearest quarter turn and map it to 0, 90, 180 or 270."""
    if not math.isfinite(degrees):
        return 0
    return int(round(degrees / 90.0)) * 90 % 360


def rotate_upright(image: Image.Image, rotation: float) -> Image.Image:
    """Turn ``image`` counter-clockwise by ``rotation`` degrees (a display-matrix angle).

    Quarter turns are lossless transposes; other angles (rare) rotate with expansion.
    """
    if not math.isfinite(rotation) or abs(rotation - round(rotation / 90.0) * 90) > 1e-3:
        return image.rotate(rotation, expand=True) if math.isfinite(rotation) else image
    quarter = normalize_rotation(rotation)
    return image.transpose(_TRANSPOSE[quarter]) if quarter else image


def rotation_from_display_matrix(data: bytes) -> float:
    """Counter-clockwise rotation in degrees encoded in an FFmpeg 3x3 display matrix.

    Same maths as FFmpeg's ``av_display_rotation_get``: the matrix holds nine native-endian
    int32 values, the 2x2 part in 16.16 fixed point.
    """
    m = struct.unpack("=9i", bytes(data)[:36])
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0 or scale1 == 0:
        return 0.0
    return -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0)) + 0.0


def _frame_rotation(frame: VideoFrame, stream: VideoStream) -> float:
    """Counter-clockwise degrees to show ``frame`` upright, from whatever this PyAV exposes."""
    rotation = getattr(frame, "rotation", None)
    if rotation:
        return float(rotation)
    if rotation is None:  # PyAV < 14: read the side data ourselves
        for item in getattr(frame, "side_data", ()):
            if getattr(getattr(item, "type", None), "name", "") == "DISPLAYMATRIX":
                return rotation_from_display_matrix(bytes(item))
    tag = stream.metadata.get("rotate")  # legacy tag: clockwise degrees
    try:
        return -float(tag) if tag else 0.0
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------- opening
def _import_av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is in the dev extra
        raise ImportError("video input needs PyAV: pip install 'fakescope[video]'") from e
    return av


def _check_file(path: str | Path) -> Path:
    """Fail early, with the same plain reasons as image loading, on files that hold no video."""
    p = Path(path)
    problem = file_problem(p, "a video file")
    if problem is not None:
        raise VideoError(p, problem)
    return p


def sniff_container(path: str | Path) -> str:
    """The FFmpeg demuxer for a video file, chosen from its first bytes, never from FFmpeg's probe.

    Only MP4/QuickTime (``mov``), Matroska/WebM (``matroska``) and AVI (``avi``) are accepted,
    whatever the extension says (uploads are often misnamed). Anything else (a playlist, a concat
    list, text, an image) is refused here, so FFmpeg never picks a demuxer that follows
    references to other files or URLs.

    Raises:
        VideoError: the file cannot be read, is empty, or is not one of those containers.
    """
    p = _check_file(path)
    try:
        with p.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise VideoError(p, f"cannot read file: {e.strerror or e}") from None
    if head.startswith(_MATROSKA_MAGIC):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[4:8] in _MP4_BOXES:
        return "mov"
    raise VideoError(p, "not a recognised video format")


def _open(path: Path) -> InputContainer:
    """Open a container for reading, as VideoError for anything PyAV refuses.

    The demuxer is pinned to the sniffed container, the name is passed as a ``file:`` URL (so a
    path such as ``concat:a|b`` or ``http://...`` is only ever a local file name) and only the
    file protocol is allowed.
    """
    fmt = sniff_container(path)
    av = _import_av()
    try:
        return av.open(
            "file:" + os.fspath(path),
            mode="r",
            format=fmt,
            options=dict(_FFMPEG_OPTIONS),
            timeout=_OPEN_TIMEOUT_S,
        )
    except PermissionError:
        raise VideoError(path, "permission denied") from None
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None
    except MemoryError:
        raise VideoError(path, "not enough memory to open the video") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(path, f"truncated or corrupt video data: {_detail(e)}") from e


def _detail(e: BaseException) -> str:
    """The useful part of a PyAV error (its strerror without the echoed file name)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text)


def _video_stream(container: InputContainer, path: Path) -> VideoStream:
    if not container.streams:  # e.g. an MP4 cut off before its index (moov) atom
        raise VideoError(path, "truncated or corrupt video data: no streams found")
    if not container.streams.video:
        raise VideoError(path, "no video stream")
    stream = container.streams.video[0]
    context = stream.codec_context
    if context is None:  # a codec this FFmpeg has no decoder for (or a mangled codec id)
        raise VideoError(path, "unsupported video codec (no decoder for it)")
    check_frame_size(path, context.width, context.height)
    return stream


def check_frame_size(
    path: str | Path, width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> None:
    """Refuse frames over a pixel limit (default: the image loader's) before any is decoded.

    Raises:
        VideoError: ``width * height`` is over ``max_pixels`` (None or 0: no limit).
    """
    pixels = width * height
    if max_pixels and pixels > max_pixels:
        raise VideoError(
            path,
            f"frames are {width}x{height} = {pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (possible decompression bomb)",
        )


def _duration_s(container: InputContainer, stream: VideoStream) -> float | None:
    """Stream duration in seconds, else the container's, else None.

    A header that claims less than the packet index covers is not trusted: the index wins.
    """
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration and container.duration > 0:
        duration = container.duration / 1_000_000  # av.time_base
    indexed = _indexed_end_s(stream)
    if indexed is not None and (duration is None or indexed > duration):
        return indexed
    return duration


def _indexed_end_s(stream: VideoStream) -> float | None:
    """End of the last packet in the container index (seconds from start), if there is one."""
    entries = getattr(stream, "index_entries", None)
    if not entries or not stream.time_base:
        return None
    last = max(e.timestamp for e in entries)
    return float(last * stream.time_base) - _start_s(stream) + 1.0 / (_fps(stream) or 25.0)


def _fps(stream: VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _start_s(stream: VideoStream) -> float:
    if stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


# -------------------------------------------------------------------------------------- probing
def probe_video(path: str | Path) -> VideoInfo:
    """Read a clip's duration, frame rate, size, rotation and codec.

    Decodes at most the first frame (to learn its rotation).

    Raises:
        VideoError: the file is missing, has no video stream (audio-only, still image), or PyAV
            cannot open or decode it.
    """
    p = _check_file(path)
    if p.suffix.lower() in ANIMATED_EXTENSIONS:
        return _probe_animated(p)
    with _open(p) as container:
        stream = _video_stream(container, p)
        first = next(_decoded(container, stream, p), None)
        if first is None:
            raise VideoError(p, "no decodable frames")
        rotation = normalize_rotation(_frame_rotation(first, stream))
        w, h = first.width, first.height
        return VideoInfo(
            duration_s=_duration_s(container, stream),
            fps=_fps(stream),
            n_frames=stream.frames or None,
            width=h if rotation in (90, 270) else w,
            height=w if rotation in (90, 270) else h,
            rotation=rotation,
            codec=stream.codec_context.name,
        )


# ------------------------------------------------------------------------------------- decoding
def _decoded(
    container: InputContainer, stream: VideoStream, path: Path, keyframes_only: bool = False
) -> Iterator[VideoFrame]:
    """Decode ``stream`` from the current position, skipping packets that do not decode.

    Every decoded frame passes through here, so tests can count them.

    Args:
        container: the open container.
        stream: its video stream.
        path: the file, for log messages.
        keyframes_only: feed the decoder only packets the demuxer flags as keyframes (some
            decoders, e.g. FFmpeg's VP9, ignore ``skip_frame``).
    """
    av = _import_av()
    packets, failures = container.demux(stream), 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, ValueError) as e:  # a truncated or damaged container
            logger.warning("%s: reading stopped early: %s", path, _detail(e))
            return
        if keyframes_only and packet.size and not packet.is_keyframe:
            continue
        try:
            frames = packet.decode()
        except (av.FFmpegError, ValueError) as e:  # one bad packet: skip it, not the clip
            failures += 1
            logger.debug("%s: skipped a packet that does not decode: %s", path, _detail(e))
            if failures > _MAX_BAD_PACKETS:
                logger.warning("%s: decoding stopped after %d bad packets", path, failures)
                return
            continue
        yield from frames


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


# ------------------------------------------------------------------------------------- targets
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


# -------------------------------------------------------------------------------------- sampling
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


# ---------------------------------------------------------------------------- animated images
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
