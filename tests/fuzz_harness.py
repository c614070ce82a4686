"""The fuzz harness for the loaders of untrusted files (images and videos), shared by the short
seeded fuzz in ``tests/test_fuzz.py`` and the long one, ``bench/fuzz.py``.

Mutates tiny valid PNG/JPEG/GIF/WebP/TIFF/BMP images and MP4/WebM clips written here with PIL and
PyAV (bit flips, boundary values, inserted, deleted and duplicated runs, truncation), adds random
bytes behind each format's magic number, and checks the property the server relies on: a file
either loads or fails with the documented error (``ImageLoadError`` for images, ``VideoError`` for
videos); nothing else escapes, nothing hangs. ``decode_item`` must never raise at all.
"""

from __future__ import annotations

import io
import random
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from fakescope.data.images import ImageLoadError, check_image, decode_item, load_image
from fakescope.data.video import VideoError, probe_video, sample_frames

from .helpers import encoder

FUZZ_MAX_PIXELS = 4_000_000  # keeps a mutated header from making every case a 100 MP decode
CASE_TIMEOUT_S = 10.0
BOUNDARY_VALUES = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\x00\x01\x00\x00",
    b"\xff\xff",
)


class Hang(BaseException):
    """A case ran past its time limit (a BaseException, so no ``except Exception`` hides it)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (wall clock)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------- seeds
def image_seeds() -> dict[str, bytes]:
    """Small valid images, keyed by a file name whose suffix is the format."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    seeds: dict[str, bytes] = {}

    def save(name: str, img: Image.Image, **kwargs: object) -> None:
        buf = io.BytesIO()
        img.save(buf, format=kwargs.pop("format"), **kwargs)
        seeds[name] = buf.getvalue()

    save("rgb.png", rgb, format="PNG")
    save("rgba.png", rgb.convert("RGBA"), format="PNG")
    save("palette.png", rgb.convert("P"), format="PNG", transparency=0)
    save(
        "grey16.png", Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)), format="PNG"
    )
    save("base.jpg", rgb, format="JPEG", quality=80)
    save("progressive.jpg", rgb, format="JPEG", progressive=True)
    save("cmyk.jpg", rgb.convert("CMYK"), format="JPEG")
    frames = [rgb.convert("P"), rgb.rotate(90, expand=False).convert("P")]
    save("anim.gif", frames[0], format="GIF", save_all=True, append_images=frames[1:])
    save("still.gif", frames[0], format="GIF")
    save("lossy.webp", rgb, format="WEBP", quality=50)
    save("lossless.webp", rgb.convert("RGBA"), format="WEBP", lossless=True)
    save("plain.tif", rgb, format="TIFF")
    save("lzw.tif", rgb, format="TIFF", compression="tiff_lzw")
    save("float.tif", Image.fromarray(rng.random((8, 8), dtype=np.float32)), format="TIFF")
    save("rgb.bmp", rgb, format="BMP")
    save("rle.bmp", rgb.convert("P"), format="BMP")
    return seeds


def _write_clip(path: Path, codec: str, fmt: str) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.gop_size = 3
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for i in range(6):
            pixels = np.full((24, 32, 3), 30 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i * 100, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def video_seeds() -> dict[str, bytes]:
    """Tiny valid clips (MP4, WebM, Matroska, AVI where an encoder exists) and an animated GIF."""
    seeds: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fmt, codecs in (
            ("clip.mp4", "mp4", ("libx264", "mpeg4")),
            ("clip.webm", "webm", ("libvpx-vp9", "libvpx")),
            ("clip.mkv", "matroska", ("mpeg4", "libx264")),
            ("clip.avi", "avi", ("mpeg4",)),
        ):
            codec = encoder(*codecs)
            if codec is None:
                continue
            path = Path(tmp) / name
            _write_clip(path, codec, fmt)
            seeds[name] = path.read_bytes()
    seeds["anim.gif"] = image_seeds()["anim.gif"]
    return seeds


def magic_prefixes(seeds: dict[str, bytes], length: int = 12) -> dict[str, bytes]:
    """The first bytes of each seed: random data behind them reaches the real decoder."""
    return {name: data[:length] for name, data in seeds.items()}


# --------------------------------------------------------------------------------- mutations
def mutate(data: bytes, rnd: random.Random) -> bytes:
    """``data`` after one to six random edits at uniformly random places."""
    out = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.choice(("flip", "set", "insert", "delete", "truncate", "dup"))
        pos = rnd.randrange(len(out)) if out else 0
        if op == "flip" and out:
            out[pos] ^= 1 << rnd.randrange(8)
        elif op == "set":
            value = rnd.choice(BOUNDARY_VALUES)
            out[pos : pos + len(value)] = value
        elif op == "insert":
            out[pos:pos] = rnd.randbytes(rnd.randint(1, 32))
        elif op == "delete":
            del out[pos : pos + rnd.randint(1, 64)]
        elif op == "truncate":
            del out[pos:]
        elif op == "dup":
            out[pos:pos] = out[pos : pos + rnd.randint(1, 64)]
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """A seed's name and its bytes after a few random edits, or random bytes behind its magic."""
    name = draw(st.sampled_from(sorted(seeds)))
    rnd = random.Random(draw(st.integers(0, 2**64 - 1)))  # uniform edits, reproducible
    if rnd.random() < 0.1:
        head = seeds[name][: rnd.randint(0, 12)]
        return name, head + rnd.randbytes(rnd.randint(0, 600))
    return name, mutate(seeds[name], rnd)


# ------------------------------------------------------------------------------------ checks
def _kind(reason: str) -> str:
    """A reason without its details, for the outcome counts."""
    if "over the limit of" in reason:
        return "over the pixel limit"
    return reason.split(":")[0].split(" (")[0][:48]


def check_image_case(path: Path) -> str:
    """The image property; raises AssertionError (or the escaped exception) when broken.

    Returns:
        The outcome: ``"loaded"`` or the kind of ImageLoadError.
    """
    outcome = "loaded"
    try:
        load_image(path, max_pixels=FUZZ_MAX_PIXELS)
    except ImageLoadError as e:
        assert e.reason, "empty reason"
        outcome = _kind(e.reason)
    reason = check_image(path, max_pixels=FUZZ_MAX_PIXELS)
    assert reason is None or isinstance(reason, str)
    item = decode_item(str(path), max_pixels=FUZZ_MAX_PIXELS)
    assert (item.x is None) != (item.error is None), "decode_item gave both or neither"
    assert item.error is None or not item.error.startswith("could not"), item.error
    return outcome


def check_video_case(path: Path, mode: str) -> str:
    """The video property: frames or VideoError, for probing and for sampling.

    Returns:
        The outcome: ``"sampled N"`` frames or the kind of VideoError.
    """
    try:
        info = probe_video(path)
        assert info.width > 0 and info.height > 0
    except VideoError as e:
        assert e.reason, "empty reason"
    count = 0
    try:
        for frame in sample_frames(path, mode, n=4, max_frames=8):
            assert frame.image.mode == "RGB"
            count += 1
    except VideoError as e:
        assert e.reason, "empty reason"
        return _kind(e.reason) + (f" after {count} frames" if count else "")
    return "sampled frames"
