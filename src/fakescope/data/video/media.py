"""What a video input is: the file kinds, the error, the frame and info types, and the checks made
before any decoder runs.

:func:`is_video` is the one media-kind check. :func:`sniff_container` picks FFmpeg's demuxer from a
file's first bytes (MP4/QuickTime, Matroska/WebM or AVI), never from FFmpeg's probe, so playlists,
concat lists and URLs are refused rather than followed. :func:`check_frame_size` refuses frames over
the image loader's pixel limit. Failures are :class:`VideoError` with the same plain reasons as
image loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fakescope.data.images import DEFAULT_MAX_PIXELS, file_problem

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
ANIMATED_EXTENSIONS = frozenset({".gif", ".webp"})
# Containers we hand to FFmpeg, told apart by their first bytes; everything else is refused
# before FFmpeg sees it, so no playlist, concat list, image sequence or network demuxer runs.
_MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML header: Matroska and WebM


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


def _detail(e: BaseException) -> str:
    """The useful part of a PyAV error (its strerror without the echoed file name)."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text)


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
