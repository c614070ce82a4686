"""Video input: recognise clips, probe them and sample frames.

The model lives elsewhere: this package turns a video (or an animated GIF/WebP) into a few upright
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

The modules: :mod:`~fakescope.data.video.media` (file kinds, :class:`VideoError`, :class:`Frame`,
:class:`VideoInfo`, :func:`is_video`, :func:`sniff_container`, :func:`check_frame_size`),
:mod:`~fakescope.data.video.rotation` (turning frames upright),
:mod:`~fakescope.data.video.probe` (opening with PyAV, :func:`probe_video`, the decoding loop),
:mod:`~fakescope.data.video.targets` (which times to sample),
:mod:`~fakescope.data.video.sampling` (:func:`sample_frames` and its seeking cursor) and
:mod:`~fakescope.data.video.animated` (animated GIF/WebP). The public names are re-exported here.
"""

from __future__ import annotations

from fakescope.data.video.media import (
    ANIMATED_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Frame,
    VideoError,
    VideoInfo,
    check_frame_size,
    is_video,
    sniff_container,
)
from fakescope.data.video.probe import probe_video
from fakescope.data.video.rotation import (
    normalize_rotation,
    rotate_upright,
    rotation_from_display_matrix,
)
from fakescope.data.video.sampling import SAMPLING_MODES, sample_frames
from fakescope.data.video.targets import interval_targets, uniform_targets

__all__ = [
    "ANIMATED_EXTENSIONS",
    "SAMPLING_MODES",
    "VIDEO_EXTENSIONS",
    "Frame",
    "VideoError",
    "VideoInfo",
    "check_frame_size",
    "interval_targets",
    "is_video",
    "normalize_rotation",
    "probe_video",
    "rotate_upright",
    "rotation_from_display_matrix",
    "sample_frames",
    "sniff_container",
    "uniform_targets",
]
