"""Turning frames upright.

Phone clips store frames sideways plus a display matrix. PyAV (>= 14, incl. 18) exposes it per
decoded frame as ``VideoFrame.rotation`` (degrees counter-clockwise, in [-180, 180]); the stream
has no side-data accessor, and ``stream.metadata`` no longer carries the legacy ``rotate`` tag
(FFmpeg turns it into the display matrix). Older PyAVs are handled through the frame's
``DISPLAYMATRIX`` side data or the ``rotate`` tag.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


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
