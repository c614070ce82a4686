"""Load test for ``fakescope serve``: many real HTTP clients on loopback, bounded and self-stopping.

Starts the server in a subprocess on a free 127.0.0.1 port, sends ``--requests`` image uploads
from ``--clients`` concurrent httpx clients, then prints latency percentiles, throughput, counts
per status code and the server's resident memory (RSS) before and after. Saturation must show up
as 503 answers (with ``Retry-After``), never as crashes, other 5xx or requests past the server's
timeout. Exit status 0 when every check passes, 1 otherwise.

Not a test: ``python bench/loadtest.py --detector runs/.../best.safetensors``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from fakescope.infer.backends import BACKENDS, PRECISIONS

logger = logging.getLogger(__name__)


@dataclass
class Result:
    """One request: status code (0 for a transport error), latency, and what went wrong."""

    status: int
    latency_s: float
    problem: str | None = None


@dataclass
class Run:
    """Everything measured in one load run."""

    results: list[Result] = field(default_factory=list)
    elapsed_s: float = 0.0
    deadline_hit: bool = False
    rss_samples: list[int] = field(default_factory=list)


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``python -m fakescope.serve`` in a subprocess, its output going to ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "fakescope.serve",
        "--detector",
        args.detector,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        args.device,
        "--max-concurrency",
        str(args.max_concurrency),
        "--max-queue",
        str(args.max_queue),
        "--timeout",
        str(args.server_timeout),
        "--max-connections",
        str(max(64, args.clients * 2)),
        "--max-connections-per-client",  # every client here is 127.0.0.1
        str(max(64, args.clients * 2)),
        "--backend",
        args.backend,
        "--precision",
        args.precision,
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Ask uvicorn to stop (SIGINT), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (psutil when installed, else /proc/<pid>/status)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"cannot read the RSS of process {pid}")


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll ``/healthz`` until it answers, the process dies, or ``timeout_s`` passes."""
    end = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not answer /healthz within {timeout_s:g} s")


# -------------------------------------------------------------------------------------- load
def make_image(path: str | None, size: int) -> tuple[str, bytes, str]:
    """The image to post: a file, or a synthetic JPEG of ``size`` x ``size`` pixels."""
    if path:
        return Path(path).name, Path(path).read_bytes(), "application/octet-stream"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([yy * 200, xx * 180, (xx + yy) * 90], axis=-1) + rng.normal(
        0, 8, (size, size, 3)
    )
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return "synthetic.jpg", buf.getvalue(), "image/jpeg"


async def one_request(client: httpx.AsyncClient, image: tuple[str, bytes, str]) -> Result:
    """Post the image once and classify the answer."""
    t0 = time.perf_counter()
    try:
        resp = await client.post("/v1/detect", files={"file": image})
    except httpx.HTTPError as e:
        return Result(0, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
    latency = time.perf_counter() - t0
    problem = None
    if resp.status_code == 503:
        body = _json(resp)
        if resp.headers.get("retry-after") != "1" or body.get("error") != "busy":
            problem = f"503 without Retry-After or JSON body: {resp.text[:120]}"
    elif resp.status_code == 200:
        if not 0.0 <= float(_json(resp).get("score", -1)) <= 1.0:
            problem = f"200 without a valid score: {resp.text[:120]}"
    else:
        problem = f"{resp.status_code}: {resp.text[:160]}"
    return Result(resp.status_code, latency, problem)


def _json(resp: httpx.Response) -> dict:
    """The response's JSON object, or ``{}`` when it has none."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def load(base: str, args: argparse.Namespace, image: tuple[str, bytes, str], pid: int) -> Run:
    """``args.requests`` uploads from ``args.clients`` concurrent clients, within ``args.deadline``."""
    run = Run()
    remaining = [args.requests]
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.server_timeout + 30.0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            run.results.append(await one_request(client, image))

    async def sample_rss() -> None:
        while True:
            run.rss_samples.append(rss_bytes(pid))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_rss())
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        workers = [asyncio.create_task(client_loop(client)) for _ in range(args.clients)]
        done, pending = await asyncio.wait(workers, timeout=args.deadline)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        run.deadline_hit = bool(pending)
    run.elapsed_s = time.perf_counter() - t0
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    return run


# ------------------------------------------------------------------------------------ report
def percentiles(values: list[float]) -> str:
    """``p50 .. ms, p95 .. ms, p99 .. ms, max .. ms`` of latencies in seconds."""
    if not values:
        return "n/a"
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {max(values) * 1000:.0f} ms"


def report(run: Run, args: argparse.Namespace, rss_start: int, rss_end: int, alive: bool) -> bool:
    """Print the numbers and the checks; True when every check passed."""
    res = run.results
    codes = Counter(r.status for r in res)
    ok = [r.latency_s for r in res if r.status == 200]
    mb = 1024 * 1024
    print(
        f"requests      {len(res)} of {args.requests} in {run.elapsed_s:.1f} s "
        f"({args.clients} clients; server: {args.max_concurrency} at once, queue {args.max_queue})"
    )
    print(
        f"throughput    {len(res) / run.elapsed_s:.1f} req/s answered, "
        f"{len(ok) / run.elapsed_s:.1f} req/s scored (200)"
    )
    print(
        "status codes  "
        + ", ".join(f"{c or 'transport error'}: {n}" for c, n in sorted(codes.items()))
    )
    print(f"latency all   {percentiles([r.latency_s for r in res])}")
    print(f"latency 200   {percentiles(ok)}")
    print(f"latency 503   {percentiles([r.latency_s for r in res if r.status == 503])}")
    peak = max(run.rss_samples, default=rss_end)
    print(
        f"server RSS    start {rss_start / mb:.1f} MiB, peak {peak / mb:.1f} MiB, end {rss_end / mb:.1f} MiB "
        f"({(rss_end - rss_start) / mb:+.1f} MiB)"
    )
    problems = [r.problem for r in res if r.problem]
    capacity = args.max_concurrency + args.max_queue
    checks = [
        (
            "all requests answered before the deadline",
            not run.deadline_hit and len(res) == args.requests,
        ),
        ("no transport errors or crashes", codes.get(0, 0) == 0 and alive),
        ("no status other than 200 and 503", set(codes) <= {200, 503}),
        ("every 503 has Retry-After and a JSON body; every 200 a score", not problems),
        ("some requests scored (200)", len(ok) > 0),
        (
            f"no request over the server timeout ({args.server_timeout:g} s)",
            max((r.latency_s for r in res), default=0) <= args.server_timeout,
        ),
        ("memory flat (end within 25% + 64 MiB of start)", rss_end <= rss_start * 1.25 + 64 * mb),
    ]
    if args.clients > capacity:
        checks.append(
            (
                f"saturation ({args.clients} clients > {capacity} slots) gave 503s",
                codes.get(503, 0) > 0,
            )
        )
    for name, passed in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    for p in problems[:5]:
        print(f"      e.g. {p}")
    return all(passed for _, passed in checks)


# -------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--detector", default=os.environ.get("FAKESCOPE_DETECTOR"), help="checkpoint to serve"
    )
    p.add_argument("--image", help="image file to post (default: a synthetic JPEG)")
    p.add_argument("--image-size", type=int, default=256, help="side of the synthetic JPEG")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--requests", type=int, default=256, help="requests in all (default 256)")
    p.add_argument("--max-concurrency", type=int, default=2, help="server model slots (default 2)")
    p.add_argument("--max-queue", type=int, default=8, help="server waiting line (default 8)")
    p.add_argument("--server-timeout", type=float, default=60.0, help="server per-request timeout")
    p.add_argument("--device", default="cpu", help="server device (default cpu)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="server backend")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="server precision")
    p.add_argument("--deadline", type=float, default=300.0, help="stop the load after this many s")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="s to wait for the server")
    args = p.parse_args(argv)
    if not args.detector:
        p.error("--detector CHECKPOINT is required (or set FAKESCOPE_DETECTOR)")
    return args


async def amain(args: argparse.Namespace) -> int:
    """Start the server, warm it up, load it, report, stop it; the exit status."""
    image = make_image(args.image, args.image_size)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="fakescope-loadtest-") as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(args, port, log)
        try:
            await wait_ready(base, proc, args.startup_timeout)
            async with httpx.AsyncClient(base_url=base, timeout=args.server_timeout + 30) as c:
                warm = await c.post("/v1/detect", files={"file": image})  # first call allocates
                print(
                    f"server        pid {proc.pid} on {base}; warm-up answered {warm.status_code}"
                )
            rss_start = rss_bytes(proc.pid)
            run = await load(base, args, image, proc.pid)
            rss_end = rss_bytes(proc.pid)
            alive = proc.poll() is None
            if alive:
                async with httpx.AsyncClient(base_url=base, timeout=10) as c:
                    alive = (await c.get("/healthz")).status_code == 200
            passed = report(run, args, rss_start, rss_end, alive)
        except Exception as e:
            print(f"load test failed: {e}", file=sys.stderr)
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            return 1
        finally:
            stop_server(proc)
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
