"""Opening a video with PyAV, safely, and what its stream says: :func:`probe_video`.

Decoding uses PyAV (the ``video`` extra), imported only when a video is actually opened, so the
rest of the package works without it. FFmpeg only ever sees a local file (``file:`` URL,
``protocol_whitelist`` ``file``) with its demuxer pinned to the sniffed container. ``_decoded`` is
the one decoding loop: it skips packets that do not decode and gives up on a clip after too many.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakescope.data.video.animated import _probe_animated
from fakescope.data.video.media import (
    ANIMATED_EXTENSIONS,
    VideoError,
    VideoInfo,
    _check_file,
    _detail,
    check_frame_size,
    sniff_container,
)
from fakescope.data.video.rotation import _frame_rotation, normalize_rotation

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

_MAX_BAD_PACKETS = 16  # give up on a clip after this many packets fail to decode
_OPEN_TIMEOUT_S = 30.0  # FFmpeg gives up on an open or a read that blocks longer than this
# Options for avformat_open_input: only the local-file protocol (no http, concat:, subfile:,
# pipe: or data: URLs, including for any nested open), and QuickTime external data references
# (``dref`` atoms pointing at other files) stay off.
_FFMPEG_OPTIONS = {"protocol_whitelist": "file", "enable_drefs": "0"}


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is in the dev extra
        raise ImportError("video input needs PyAV: pip install 'fakescope[video]'") from e
    return av


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
