"""Small files for the server tests: images, a header-only PNG bomb and a tiny MP4."""

from __future__ import annotations

import contextlib
import importlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .helpers import encoder, synthetic_image

W, H = 64, 48


def png_bytes(size: int = 40, label: int = 0, seed: int = 0) -> bytes:
    """A small synthetic PNG."""
    buf = io.BytesIO()
    synthetic_image(label, np.random.default_rng(seed), size).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    """A small synthetic JPEG."""
    buf = io.BytesIO()
    synthetic_image(1, np.random.default_rng(seed), size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def noise_png_bytes(side: int, seed: int = 0) -> bytes:
    """An incompressible PNG of ``side`` x ``side`` pixels (about 3 * side**2 bytes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png_bytes(w: int = 30000, h: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``w`` x ``h`` 1-bit pixels (IHDR, a small IDAT, IEND)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def mp4_codec() -> str | None:
    """``libx264`` or ``mpeg4``, whichever this PyAV can encode (None: neither)."""
    return encoder("libx264", "mpeg4")


def write_mp4(path: Path, seconds: float = 1.0, fps: int = 10) -> Path:
    """A 64x48 clip of ``seconds`` seconds whose brightness changes frame by frame."""
    import av

    codec = mp4_codec()
    assert codec is not None
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for i in range(round(seconds * fps)):
            pixels = np.full((H, W, 3), 20 + 20 * i % 220, np.uint8)
            pixels[: H // 2, : W // 2] = (255, 40, 40)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@contextlib.contextmanager
def live_server(app: Any, limits: Any = None) -> Iterator[str]:
    """``app`` served by uvicorn with the guarded protocol in a thread on a free loopback port."""
    from fakescope.serve.protocol import uvicorn_config

    uvicorn = importlib.import_module("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(app, "127.0.0.1", port, limits, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def multipart_body(field: str, files: list[tuple[str, bytes]], boundary: str = "b0und") -> bytes:
    """A multipart/form-data body with one part of ``field`` per file."""
    out = b""
    for name, data in files:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()
