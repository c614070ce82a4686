"""Soak test for ``fakescope serve``: minutes of mixed good, bad and slow clients on loopback.

Starts the server in a subprocess (``--detector``, or a tiny random ``test_efficientnet`` built on
the spot) and runs, side by side: clients posting good images and batches, clients posting
corrupt files (truncated JPEGs, random bytes, a header-only PNG bomb, an incomplete multipart
body), slow clients that send half their headers and stop, and slow clients that dribble a body.
Every ``--every`` seconds it prints the server's resident memory (its decoder workers included),
open file descriptors, temp folder usage and status-code counts; at the end it says whether any of
them grew without bound (still rising through the last third of the run). Exit status 0 when
nothing grew, no 5xx other than 503/504 was seen and the server stayed up; 1 otherwise.

With ``--isolation-cost`` it instead measures ms per image with and without decoder isolation.

Not a test: ``python bench/soak.py --duration 180``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from loadtest import free_port, rss_bytes, stop_server, wait_ready
from PIL import Image

GOOD, BATCH, BAD, SLOW_HEADERS, SLOW_BODY = "good", "batch", "bad", "slow-headers", "slow-body"


@dataclass
class Sample:
    """One periodic reading."""

    t: float
    rss: int
    fds: int
    tmp: int
    statuses: Counter[str]


@dataclass
class Soak:
    """Counts per client kind and status, and the periodic readings."""

    counts: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    stop: bool = False


# ------------------------------------------------------------------------------------- files
def jpeg(size: int, seed: int) -> bytes:
    """A noisy JPEG of ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def mp4(side: int, seconds: float, fps: int = 25) -> bytes:
    """A noisy H.264 (or MPEG-4) clip of ``side`` x ``side`` pixels, ``seconds`` long."""
    import av
    from fuzz import encoder

    codec = encoder("libx264", "mpeg4")
    if codec is None:
        raise SystemExit("this PyAV can encode neither libx264 nor mpeg4")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=fps)
            stream.width = stream.height = side
            stream.pix_fmt = "yuv420p"
            for _ in range(round(seconds * fps)):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            out.mux(stream.encode())
        return path.read_bytes()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bad_files() -> list[tuple[str, bytes]]:
    """Files the server must refuse: cut, random, a pixel bomb, garbled, empty."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    bomb += _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    good = jpeg(96, 1)
    return [
        ("cut.jpg", good[: len(good) // 2]),
        ("noise.png", os.urandom(2000)),
        ("bomb.png", bomb),
        ("garbled.jpg", good[:200] + os.urandom(len(good) - 200)),
        ("empty.png", b""),
    ]


# ----------------------------------------------------------------------------------- clients
def tally(soak: Soak, kind: str, status: int | str) -> None:
    soak.counts[f"{kind}:{status}"] += 1


def status_of(answer: bytes) -> str:
    parts = answer.split(b" ", 2)
    return parts[1].decode() if answer.startswith(b"HTTP/") and len(parts) > 1 else "closed"


async def good_client(base: str, soak: Soak, seed: int) -> None:
    """Good images (every fifth request a batch of four) from 127.0.0.2."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base, timeout=60, transport=transport) as client:
        i = 0
        while not soak.stop:
            i += 1
            try:
                if i % 5 == 0:
                    files = [("files", (f"{k}.jpg", jpeg(64, seed + k))) for k in range(4)]
                    resp = await client.post("/v1/detect/batch", files=files)
                    tally(soak, BATCH, resp.status_code)
                else:
                    data = jpeg(96, seed + i % 7)
                    resp = await client.post("/v1/detect", files={"file": ("a.jpg", data)})
                    tally(soak, GOOD, resp.status_code)
            except httpx.HTTPError as e:
                tally(soak, GOOD, type(e).__name__)
            await asyncio.sleep(0.05)


async def bad_client(base: str, soak: Soak) -> None:
    """Corrupt files and incomplete bodies from 127.0.0.2."""
    files = bad_files()
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base, timeout=60, transport=transport) as client:
        i = 0
        while not soak.stop:
            i += 1
            try:
                if i % 6 == 0:  # a multipart body without its closing boundary
                    resp = await client.post(
                        "/v1/detect",
                        content=head + jpeg(48, i),
                        headers={"content-type": "multipart/form-data; boundary=x"},
                    )
                else:
                    name, data = files[i % len(files)]
                    resp = await client.post("/v1/detect", files={"file": (name, data)})
                tally(soak, BAD, resp.status_code)
            except httpx.HTTPError as e:
                tally(soak, BAD, type(e).__name__)
            await asyncio.sleep(0.1)


async def slow_header_client(port: int, soak: Soak) -> None:
    """Open, send half the headers, and wait for the server to give up (from 127.0.0.3)."""
    while not soak.stop:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.3", 0)
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), timeout=60)
            tally(soak, SLOW_HEADERS, status_of(answer))
            writer.close()
        except (OSError, asyncio.TimeoutError) as e:
            tally(soak, SLOW_HEADERS, type(e).__name__)
        await asyncio.sleep(0.2)


async def slow_body_client(port: int, soak: Soak) -> None:
    """Declare a body and dribble it, 8 bytes every 0.5 s, until the server answers."""
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    body += jpeg(64, 3) + b"\r\n--x--\r\n"
    head = b"POST /v1/detect HTTP/1.1\r\nHost: localhost\r\n"
    head += b"Content-Type: multipart/form-data; boundary=x\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()
    while not soak.stop:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.4", 0)
            )
            writer.write(head)
            answer = b""
            for i in range(0, len(body), 8):
                writer.write(body[i : i + 8])
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(4096), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                break
            tally(soak, SLOW_BODY, status_of(answer))
            writer.close()
        except (OSError, asyncio.TimeoutError) as e:
            tally(soak, SLOW_BODY, type(e).__name__)
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------------------------ probes
def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the decoder workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_bytes(p)
    return total


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


async def monitor(pid: int, tmp: Path, soak: Soak, every: float, t0: float) -> None:
    """Every ``every`` seconds: RSS, fds, the temp folder's peak since last time, statuses."""
    while not soak.stop:
        end, peak_tmp = time.monotonic() + every, 0
        while time.monotonic() < end and not soak.stop:
            peak_tmp = max(peak_tmp, folder_bytes(tmp))
            await asyncio.sleep(0.05)
        s = Sample(
            time.monotonic() - t0, tree_rss(pid), open_fds(pid), peak_tmp, Counter(soak.counts)
        )
        soak.samples.append(s)
        codes: Counter[str] = Counter()
        for key, n in s.statuses.items():
            codes[key.split(":", 1)[1]] += n
        print(
            f"t={s.t:6.1f}s rss={s.rss / 2**20:7.1f} MB fds={s.fds:4d} "
            f"tmp_peak={s.tmp / 1024:7.1f} KB statuses={dict(sorted(codes.items()))}",
            flush=True,
        )


# ------------------------------------------------------------------------------------ verdict
def grew(values: list[float], tolerance: float) -> bool:
    """Still rising through the last third: its mean over the middle third's by ``tolerance``
    (relative) and the last reading the highest of all."""
    if len(values) < 6:
        return False
    third = len(values) // 3
    middle = sum(values[third : 2 * third]) / third
    last = sum(values[2 * third :]) / len(values[2 * third :])
    return last > middle * (1 + tolerance) + 1 and values[-1] >= max(values)


def report(soak: Soak, alive: bool) -> bool:
    """Print the totals and the verdict; True when nothing grew and nothing broke."""
    print("\nper client kind and status:")
    for key, n in sorted(soak.counts.items()):
        print(f"  {key:28s} {n}")
    ok = alive
    for name, values, tol in (
        ("rss_bytes", [s.rss for s in soak.samples], 0.05),
        ("open_fds", [s.fds for s in soak.samples], 0.10),
        ("tmp_peak_bytes", [s.tmp for s in soak.samples], 0.50),
    ):
        rising = grew([float(v) for v in values], tol)
        ok &= not rising
        print(
            f"{name}: first {values[0]} last {values[-1]} max {max(values)} -> "
            f"{'GREW' if rising else 'bounded'}"
        )
    unexpected = [
        k
        for k in soak.counts
        if k.split(":", 1)[1].startswith("5") and k[-4:] not in (":503", ":504")
    ]
    ok &= not unexpected
    print(f"server alive at the end: {alive}; unexpected 5xx: {unexpected or 'none'}")
    print("PASS" if ok else "FAIL")
    return ok


# ---------------------------------------------------------------------------------- the run
def tiny_detector(folder: Path) -> str:
    """A random ``test_efficientnet`` checkpoint (as the server tests build)."""
    from fakescope.models import create_detector, save_checkpoint

    det = create_detector("test_efficientnet", img_size=32).eval()
    return str(save_checkpoint(folder / "tiny.safetensors", det))


def start(
    args: argparse.Namespace, detector: str, port: int, work: Path, log: str, *extra: str
) -> subprocess.Popen[bytes]:
    """``python -m fakescope.serve`` in a subprocess, its output in ``work/log``."""
    cmd = [sys.executable, "-m", "fakescope.serve", "--detector", detector, "--device", "cpu"]
    cmd += ["--port", str(port), "--tmp-dir", str(work / "uploads"), "--timeout", str(args.timeout)]
    cmd += ["--header-timeout", str(args.header_timeout), *extra]
    return subprocess.Popen(cmd, stdout=(work / log).open("wb"), stderr=subprocess.STDOUT)


async def soak_run(args: argparse.Namespace, work: Path, detector: str) -> int:
    """The mixed load for ``--duration`` seconds, then the verdict."""
    port = free_port()
    proc = start(args, detector, port, work, "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc, 120)
        soak, t0 = Soak(), time.monotonic()
        tasks = [asyncio.create_task(monitor(proc.pid, work / "uploads", soak, args.every, t0))]
        tasks += [asyncio.create_task(good_client(base, soak, 100 * i)) for i in range(args.good)]
        tasks += [asyncio.create_task(bad_client(base, soak)) for _ in range(args.bad)]
        tasks += [asyncio.create_task(slow_header_client(port, soak)) for _ in range(args.slow)]
        tasks += [asyncio.create_task(slow_body_client(port, soak)) for _ in range(args.slow_body)]
        await asyncio.sleep(args.duration)
        soak.stop = True
        await asyncio.wait(tasks, timeout=args.timeout + args.header_timeout + 10)
        for t in tasks:
            t.cancel()
        alive = proc.poll() is None
        if alive:
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                alive = (await client.get("/healthz")).status_code == 200
        return 0 if report(soak, alive) else 1
    finally:
        stop_server(proc)


async def isolation_cost(args: argparse.Namespace, work: Path, detector: str) -> int:
    """ms per image (or video), one client at a time, with and without decoder isolation."""
    if args.video:
        data, name, what = mp4(args.image_size, 4.0), "a.mp4", "4 s MP4"
    else:
        data, name, what = jpeg(args.image_size, 5), "a.jpg", "JPEG"
    for label, extra in (("isolated", ()), ("in-process", ("--no-isolate-decode",))):
        port = free_port()
        proc = start(args, detector, port, work, f"{label}.log", *extra)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(base, proc, 120)
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                for _ in range(5):  # warm up
                    await client.post("/v1/detect", files={"file": (name, data)})
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    resp = await client.post("/v1/detect", files={"file": (name, data)})
                    times.append((time.perf_counter() - t) * 1000)
                    assert resp.status_code == 200, resp.text
            times.sort()
            print(
                f"{label:11s} {args.image_size}px {what} ({len(data)} bytes): median "
                f"{times[len(times) // 2]:.2f} ms, p90 {times[int(len(times) * 0.9)]:.2f} ms "
                f"over {args.repeats} requests"
            )
        finally:
            stop_server(proc)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--detector", help="checkpoint (default: a tiny random one)")
    p.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    p.add_argument("--every", type=float, default=10.0, help="seconds between readings")
    p.add_argument("--good", type=int, default=4, help="clients posting good images")
    p.add_argument("--bad", type=int, default=2, help="clients posting corrupt files")
    p.add_argument("--slow", type=int, default=24, help="clients sending half their headers")
    p.add_argument("--slow-body", type=int, default=4, help="clients dribbling a body")
    p.add_argument("--timeout", type=float, default=10.0, help="server --timeout (default 10)")
    p.add_argument("--header-timeout", type=float, default=3.0, help="server --header-timeout")
    p.add_argument("--isolation-cost", action="store_true", help="measure isolation latency only")
    p.add_argument("--image-size", type=int, default=256, help="side of the timed JPEG (or clip)")
    p.add_argument("--video", action="store_true", help="with --isolation-cost: time a 4 s clip")
    p.add_argument("--repeats", type=int, default=200, help="timed requests per mode")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fakescope-soak-") as folder:
        work = Path(folder)
        detector = args.detector or tiny_detector(work)
        run = isolation_cost if args.isolation_cost else soak_run
        return asyncio.run(run(args, work, detector))


if __name__ == "__main__":
    sys.exit(main())
