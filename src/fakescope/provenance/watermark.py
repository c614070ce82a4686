"""Stable Diffusion's invisible watermark: the ``dwtDct`` method of ``invisible-watermark``, as
the reference scripts embed it, decoded with numpy alone (no OpenCV, no PyWavelets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fakescope.data.images import DEFAULT_MAX_PIXELS
from fakescope.provenance.evidence import Evidence

# The watermark needs the pixels. invisible-watermark refuses images under 256x256 pixels in area;
# above 2048x2048 no reference script's output is left unscaled, and scaling destroys the mark.
WATERMARK_MIN_PIXELS = 256 * 256
WATERMARK_MAX_PIXELS = min(2048 * 2048, DEFAULT_MAX_PIXELS)


@dataclass(frozen=True)
class _Watermark:
    """A known payload, and how many bit errors a match may have."""

    name: str
    bits: np.ndarray
    max_errors: int


def _bits_of_bytes(payload: bytes) -> np.ndarray:
    """MSB-first bits, as ``WatermarkEncoder.set_watermark("bytes", ...)`` embeds them."""
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8))


# The reference scripts' payloads, all embedded with the dwtDct method:
# * SD 1.x, CompVis/stable-diffusion scripts/txt2img.py: bytes "StableDiffusionV1" (136 bits).
# * SD 2.x, Stability-AI/stablediffusion scripts/txt2img.py: bytes "SDV2" (32 bits).
# * SDXL, Stability-AI/generative-models (and diffusers' StableDiffusionXLWatermarker): the
#   48-bit message 0b1011_0011_1110_1100_1001_0000_0111_1011_1011_0001_1001_1110.
# How many bit errors a match may have. The mark is fragile even unedited: where a 4x4 block's
# largest coefficient does not stand out, embedding it can make another coefficient the largest,
# and the reader then reads that one, so smooth images lose many bits (a quarter of SD 1.x's 136
# bits on some photos in our tests). Unmarked images miss about half the bits. With random bits,
# P(at most k errors of n) is about 1e-12 for 27/136, 5e-7 for 8/48 and 1.3e-6 for 3/32.
# Stability's own detector calls 36 of 48 matching bits (12 errors) "very likely watermarked",
# having found no real image above that in 10,000; these allowances are stricter.
_WATERMARKS = (
    _Watermark("Stable Diffusion 1.x", _bits_of_bytes(b"StableDiffusionV1"), 27),
    _Watermark("Stable Diffusion 2.x", _bits_of_bytes(b"SDV2"), 3),
    _Watermark(
        "Stable Diffusion XL",
        np.array([int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]]),
        8,
    ),
)
# invisible-watermark's dwtDct defaults: 4x4 blocks of the Haar approximation band of the U
# channel, quantisation step 36.
_WM_BLOCK = 4
_WM_SCALE = 36.0
_HAAR = float(np.sqrt(0.5))  # PyWavelets' Haar filter taps, 0.7071067811865476


def watermark_eligible(img: Image.Image) -> bool:
    """True when the image is big enough to carry the mark and small enough to decode."""
    width, height = img.size
    return WATERMARK_MIN_PIXELS <= width * height <= WATERMARK_MAX_PIXELS


def watermark_evidence(img: Image.Image, items: list[Evidence], errors: list[str]) -> None:
    """Decode the dwtDct watermark and compare it with Stable Diffusion's payloads."""
    img.load()
    rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    best: tuple[int, _Watermark, str] | None = None
    # The reference scripts hand BGR to the encoder; diffusers' SDXL watermarker hands it RGB.
    # Our pixels are RGB: read as "BGR" they are what an encoder given RGB saw, and vice versa.
    for order, read_as in (("BGR", "RGB"), ("RGB", "BGR")):
        votes = _decode_dwtdct_blocks(rgb, read_as)
        for mark in _WATERMARKS:
            errors_found = _bit_errors(votes, mark.bits)
            if errors_found <= mark.max_errors and (best is None or errors_found < best[0]):
                best = (errors_found, mark, order)
    if best is not None:
        errors_found, mark, order = best
        value = (
            f"{mark.name} payload, {errors_found} of {len(mark.bits)} bits differ "
            f"(dwtDct, {order} channel order)"
        )
        means = f"carries Stable Diffusion's invisible watermark ({mark.name})"
        items.append(Evidence("watermark", "invisible-watermark dwtDct", value, True, means))


def _decode_dwtdct_blocks(pixels: np.ndarray, order: str = "BGR") -> np.ndarray:
    """One bit per 4x4 block, as invisible-watermark's ``dwtDct`` decoder reads them.

    This is ``imwatermark.maxDct.EmbedMaxDct.decode`` with the default scales ``[0, 36, 36]``
    (only the U channel is read), vectorised: the library loops over blocks in Python, about 50
    times slower, and depends on the GUI build of OpenCV. The U channel is OpenCV's
    ``cvtColor(..., COLOR_BGR2YUV)`` in its own fixed-point arithmetic (:func:`yuv_u`), so no
    OpenCV is needed. The Haar approximation band is computed
    as PyWavelets computes it (rows first, each output ``h * x[2i + 1] + h * x[2i]``), so the
    rounding, and with it every bit, is the same; ``tests/test_provenance.py`` checks this against
    the library. Blocks are in the library's (row-major) order, so bit ``k`` of an ``n``-bit
    payload is voted on by blocks ``k, k + n, k + 2n, ...``.

    Args:
        pixels: ``(H, W, 3)`` uint8 pixels.
        order: the channel order of ``pixels``: ``"BGR"`` (the default, what the library
            assumes) or ``"RGB"`` (the same as reversing the channels first, without a copy).

    Returns:
        A flat uint8 array of 0/1, one per block.
    """
    rows, cols = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    u = yuv_u(pixels[:rows, :cols], order).astype(np.float64)
    half = _HAAR
    u = u[1::2] * half + u[0::2] * half  # Haar low-pass down the rows, then along them
    approx = u[:, 1::2] * half + u[:, 0::2] * half
    n_rows, n_cols = approx.shape[0] // _WM_BLOCK, approx.shape[1] // _WM_BLOCK
    blocks = approx[: n_rows * _WM_BLOCK, : n_cols * _WM_BLOCK]
    blocks = blocks.reshape(n_rows, _WM_BLOCK, n_cols, _WM_BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(n_rows * n_cols, _WM_BLOCK * _WM_BLOCK)
    # The largest-magnitude coefficient after the first, its magnitude modulo the step.
    position = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    value = np.abs(blocks[np.arange(blocks.shape[0]), position])
    return (value % _WM_SCALE > 0.5 * _WM_SCALE).astype(np.uint8)


#: OpenCV's 8-bit RGB -> YUV coefficients, scaled by 2**14 (``imgproc/src/color_yuv``).
_YUV_SHIFT, _R2Y, _G2Y, _B2Y, _B2U = 14, 4899, 9617, 1868, 8061


def yuv_u(pixels: np.ndarray, order: str = "BGR") -> np.ndarray:
    """The U channel of uint8 ``(H, W, 3)`` pixels, bit for bit as OpenCV's
    ``cvtColor(pixels, COLOR_BGR2YUV)[..., 1]`` (``order="RGB"``: ``COLOR_RGB2YUV``)."""
    px = pixels.astype(np.int32)
    b, g, r = (
        (px[..., 0], px[..., 1], px[..., 2])
        if order == "BGR"
        else (
            px[..., 2],
            px[..., 1],
            px[..., 0],
        )
    )
    half = 1 << (_YUV_SHIFT - 1)
    y = (r * _R2Y + g * _G2Y + b * _B2Y + half) >> _YUV_SHIFT
    u = ((b - y) * _B2U + (128 << _YUV_SHIFT) + half) >> _YUV_SHIFT
    return np.clip(u, 0, 255).astype(np.uint8)


def _bit_errors(votes: np.ndarray, payload: np.ndarray) -> int:
    """Bits of ``payload`` that the block votes, repeated cyclically, decode differently."""
    n = len(payload)
    if votes.size < n:
        return n
    slot = np.arange(votes.size) % n
    ones = np.bincount(slot, weights=votes, minlength=n)
    counts = np.bincount(slot, minlength=n)
    decoded = ones / counts * 255 > 127  # the library's rounding of the mean vote
    return int(np.count_nonzero(decoded != payload.astype(bool)))
