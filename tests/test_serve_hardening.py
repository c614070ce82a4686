"""fakescope serve under hostile clients: slow headers, connection floods, temp-disk pressure,
incomplete bodies, foreign Host headers, missing API keys, decoder crashes, fuzzed multipart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fakescope.models import create_detector, load_detector, save_checkpoint  # noqa: E402
from fakescope.serve import ServeSettings, create_app  # noqa: E402
from fakescope.serve.isolate import DecodeGuard  # noqa: E402
from fakescope.serve.limits import ApiError  # noqa: E402
from fakescope.serve.protocol import ConnectionLimits  # noqa: E402
from fakescope.serve.uploads import receive_files  # noqa: E402

from .helpers import TINY_MODEL  # noqa: E402
from .serve_helpers import (  # noqa: E402
    live_server,
    mp4_codec,
    multipart_body,
    noise_png_bytes,
    png_bytes,
    write_mp4,
)

CRASH_MARK = b"CRASH-THE-DECODER"
CRASHY = f"""
import os, resource
def check(path, kind, max_pixels, video):
    with open(path, "rb") as f:
        if {CRASH_MARK!r} in f.read():
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.abort()
    from fakescope.serve.isolate import check_decodes
    return check_decodes(path, kind, max_pixels, video)

def slow(path, kind, max_pixels, video):
    import time
    from fakescope.serve.isolate import Checked
    time.sleep(0.6)
    return Checked()
"""


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Any:
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.threshold, det.spec.uncertain_band = 0.5, 0.05
    return load_detector(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "t.safetensors", det))


def make_app(detector: Any, tmp: Path, **overrides: Any) -> Any:
    overrides.setdefault("isolate_decode", False)
    return create_app(detector, ServeSettings(device="cpu", tmp_root=str(tmp), **overrides))


def assert_json_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return body


def raw_exchange(port: int, data: bytes, source: str = "127.0.0.1", wait_s: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server answers until it closes (or ``wait_s``)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=wait_s, source_address=(source, 0)
    ) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def get(url: str, source: str = "127.0.0.1", **kw: Any) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        return client.get(url, **kw)


@pytest.fixture
def half_sent() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def open_half_sent(port: int, n: int, into: list[socket.socket]) -> None:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        into.append(s)


# ------------------------------------------------------------------ 1, 4: slow clients, limits
def test_slow_headers_do_not_lock_out_the_service(
    detector: Any, tmp_path: Path, half_sent: list[socket.socket]
) -> None:
    limits = ConnectionLimits(header_timeout_s=1.0, max_connections=64, max_per_client=16)
    with live_server(make_app(detector, tmp_path), limits) as base:
        port = int(base.rsplit(":", 1)[1])
        open_half_sent(port, 64, half_sent)
        t0 = time.monotonic()
        # another client is served at once: one client holds at most 16 connections
        assert get(f"{base}/healthz", source="127.0.0.2").status_code == 200
        # the flooding client itself is refused in JSON, with Retry-After
        resp = get(f"{base}/healthz")
        if resp.status_code != 200:
            assert_json_error(resp, 503, "busy")
            assert resp.headers["retry-after"] == "1"
        # slow connections are answered 408 and closed after the header timeout...
        half_sent[0].settimeout(5)
        answer = half_sent[0].recv(65536)
        assert answer.startswith(b"HTTP/1.1 408") and b'"header_timeout"' in answer
        # ...so the flooding address is served again within 5 s
        while (resp := get(f"{base}/healthz")).status_code != 200:
            assert time.monotonic() - t0 < 5, resp.text
            time.sleep(0.1)
        assert resp.json() == {"status": "ok"}


def test_connection_limit_answers_json_503(
    detector: Any, tmp_path: Path, half_sent: list[socket.socket]
) -> None:
    limits = ConnectionLimits(header_timeout_s=5.0, max_connections=4, max_per_client=4)
    with live_server(make_app(detector, tmp_path), limits) as base:
        open_half_sent(int(base.rsplit(":", 1)[1]), 4, half_sent)
        resp = get(f"{base}/healthz", source="127.0.0.3")
        assert_json_error(resp, 503, "busy")
        assert resp.headers["retry-after"] == "1"
        for s in half_sent:
            s.close()
        time.sleep(0.2)
        assert get(f"{base}/healthz", source="127.0.0.3").status_code == 200


def test_malformed_http_is_json_400(detector: Any, tmp_path: Path) -> None:
    with live_server(make_app(detector, tmp_path)) as base:
        out = raw_exchange(int(base.rsplit(":", 1)[1]), b"NOT HTTP AT ALL\x00\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["error"] == "bad_request"


# ------------------------------------------------------------------- 2: temp space, admission
def _tmp_bytes(root: Path) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def test_batches_cannot_overrun_the_temp_budget(detector: Any, tmp_path: Path) -> None:
    budget_mb = 0.3
    app = make_app(
        detector,
        tmp_path,
        max_upload_mb=0.05,
        max_batch_files=4,
        max_batch_mb=0.1,
        max_tmp_mb=budget_mb,
        max_concurrency=1,
    )
    service = app.state.service
    real = service.detect_batch

    def slow_batch(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return real(*args, **kwargs)

    service.detect_batch = slow_batch
    files = [(f"n{i}.png", noise_png_bytes(80, seed=i)) for i in range(4)]  # ~77 KB in all
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tmp_bytes(tmp_path))
            time.sleep(0.001)

    with live_server(app, ConnectionLimits(max_per_client=64)) as base:

        def post(_: int) -> httpx.Response:
            with httpx.Client(timeout=30) as client:
                upload = [("files", (n, d, "image/png")) for n, d in files]
                return client.post(f"{base}/v1/detect/batch", files=upload)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(post, range(32)))
        stop.set()
        sampler.join()
        too_big = [
            ("files", (f"b{i}.png", noise_png_bytes(122, seed=i), "image/png")) for i in range(4)
        ]
        with httpx.Client(timeout=30) as client:
            big = client.post(f"{base}/v1/detect/batch", files=too_big)
    statuses = [r.status_code for r in answers]
    print(f"temp peak {peak[0]} bytes (budget {budget_mb * 1024 * 1024:.0f}); {Counter(statuses)}")
    assert 200 in statuses and set(statuses) <= {200, 503}, statuses
    for resp in answers:
        if resp.status_code == 503:
            assert_json_error(resp, 503, "busy")
            assert int(resp.headers["retry-after"]) >= 1
    assert 0 < peak[0] <= budget_mb * 1024 * 1024, peak[0]
    assert app.state.temp_budget.peak <= budget_mb * 1024 * 1024
    assert app.state.temp_budget.reserved == 0 and app.state.gate.admitted == 0
    assert_json_error(big, 413, "too_large")
    assert _tmp_bytes(tmp_path) == 0


# ------------------------------------------------------------------------ 3: incomplete bodies
async def _chunks(body: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _receive(body: bytes, dest: Path, declared: int | None = None, **kw: Any) -> Any:
    headers = {"content-type": "multipart/form-data; boundary=b0und"}
    if declared is not None:
        headers["content-length"] = str(declared)
    kw = {"field": "file", "max_files": 1, "max_bytes": 1 << 20, "strict": True} | kw
    dest.mkdir(exist_ok=True)
    return asyncio.run(receive_files(headers, _chunks(body), dest, **kw))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda b: b[: b.rindex(b"--b0und--")], id="no-closing-boundary"),
        pytest.param(lambda b: b[: b.rindex(b"--b0und--") - 2], id="no-crlf-before-close"),
        pytest.param(lambda b: b[:-3], id="closing-boundary-cut"),
    ],
)
def test_body_without_closing_boundary_is_400(cut: Any, tmp_path: Path) -> None:
    body = multipart_body("file", [("a.png", png_bytes())])
    assert len(_receive(body, tmp_path / "ok")) == 1
    with pytest.raises(ApiError) as err:
        _receive(cut(body), tmp_path / "cut")
    assert (err.value.status, err.value.code) == (400, "incomplete_body")


def test_content_length_mismatch_is_400(tmp_path: Path) -> None:
    body = multipart_body("file", [("a.png", png_bytes())])
    for declared in (len(body) + 100, len(body) - 10):
        with pytest.raises(ApiError) as err:
            _receive(body, tmp_path / str(declared), declared=declared)
        assert (err.value.status, err.value.code) == (400, "incomplete_body")
    with pytest.raises(ApiError) as err:
        _receive(body, tmp_path / "neg", declared=-1)
    assert err.value.status == 400


def test_incomplete_body_over_http_is_json_400(detector: Any, tmp_path: Path) -> None:
    app = make_app(detector, tmp_path)
    body = multipart_body("file", [("a.png", png_bytes())])
    cut = body[: body.rindex(b"--b0und--")]
    with live_server(app, ConnectionLimits(header_timeout_s=1.0)) as base:
        resp = httpx.post(
            f"{base}/v1/detect",
            content=cut,
            headers={"content-type": "multipart/form-data; boundary=b0und"},
        )
        assert_json_error(resp, 400, "incomplete_body")
        # Content-Length shorter than the body: the server reads that many bytes (no closing
        # boundary: 400); the rest never makes a request's headers (408 after the timeout)
        head = (
            "POST /v1/detect HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: multipart/form-data; boundary=b0und\r\n"
            f"Content-Length: {len(body) - 20}\r\n\r\n"
        ).encode()
        out = raw_exchange(int(base.rsplit(":", 1)[1]), head + body)
    assert out.startswith(b"HTTP/1.1 400") and b'"incomplete_body"' in out
    assert b"HTTP/1.1 408" in out and b'"header_timeout"' in out


# --------------------------------------------------------------------------- 5: host, API key
def _asgi_get(app: Any, path: str, host: str = "localhost", **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:9", "[::1]:8000"])
def test_loopback_hosts_are_answered(detector: Any, tmp_path: Path, host: str) -> None:
    app = make_app(detector, tmp_path)
    assert _asgi_get(app, "/v1/model", host=host).status_code == 200
    assert _asgi_get(app, "/", host=host).status_code == 200  # the page works without a key


def test_foreign_host_is_refused(detector: Any, tmp_path: Path) -> None:
    app = make_app(detector, tmp_path)
    for path in ("/v1/model", "/", "/docs"):
        assert_json_error(_asgi_get(app, path, host="evil.example"), 400, "bad_host")
    assert _asgi_get(app, "/healthz", host="evil.example").status_code == 200
    open_app = make_app(detector, tmp_path, allowed_hosts=("*",))
    assert _asgi_get(open_app, "/v1/model", host="evil.example").status_code == 200
    named = make_app(detector, tmp_path, allowed_hosts=("detect.example.org",))
    assert _asgi_get(named, "/v1/model", host="detect.example.org:443").status_code == 200
    assert_json_error(_asgi_get(named, "/v1/model"), 400, "bad_host")


def test_api_key(detector: Any, tmp_path: Path) -> None:
    key = "s3cret-key-0123"
    app = make_app(detector, tmp_path, api_key=key)
    for path in ("/v1/model", "/docs", "/openapi.json"):
        resp = _asgi_get(app, path)
        assert_json_error(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"
        assert_json_error(
            _asgi_get(app, path, authorization="Bearer wrong-key-0000"), 401, "unauthorized"
        )
        assert _asgi_get(app, path, authorization=f"Bearer {key}").status_code == 200
        assert _asgi_get(app, path, **{"x-api-key": key}).status_code == 200
    assert _asgi_get(app, "/healthz").status_code == 200
    assert _asgi_get(app, "/").status_code == 200  # the page's files hold no data
    assert _asgi_get(app, "/static/app.js").status_code == 200

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            return await c.post("/v1/detect", files={"file": ("a.png", png_bytes())})

    assert_json_error(asyncio.run(post()), 401, "unauthorized")


def test_cli_keys_hosts_and_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fakescope.cli.serve import add_serve_arguments, api_key, settings_from_args, warn_exposure

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    monkeypatch.delenv("FAKESCOPE_API_KEY", raising=False)
    args = parser.parse_args(["--host", "10.1.2.3"])
    settings = settings_from_args(args)
    assert settings.api_key is None
    assert set(settings.allowed_hosts) == {"localhost", "127.0.0.1", "::1", "10.1.2.3"}
    with caplog.at_level(logging.WARNING):
        warn_exposure("10.1.2.3", settings)
    assert "without an API key" in caplog.text
    monkeypatch.setenv("FAKESCOPE_API_KEY", "from-the-env-123")
    assert api_key(parser.parse_args([])) == "from-the-env-123"
    (tmp_path / "key").write_text("from-a-file-4567\n")
    args = parser.parse_args(["--api-key-file", str(tmp_path / "key"), "--allowed-hosts", "a,b"])
    settings = settings_from_args(args)
    assert settings.api_key == "from-a-file-4567" and settings.allowed_hosts == ("a", "b")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_exposure("0.0.0.0", settings)
    assert "without an API key" not in caplog.text
    for content, words in ((b"", "the API key file is empty"), (b"\xff\xfe", "cannot read")):
        (tmp_path / "bad-key").write_bytes(content)
        with pytest.raises(ValueError, match=words) as err:
            api_key(parser.parse_args(["--api-key-file", str(tmp_path / "bad-key")]))
        assert "bad-key" in str(err.value)


# ------------------------------------------------------------------------- 6: decoder crashes
def test_decoder_crash_is_422_and_the_server_lives_on(
    detector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashy = _crashy_module(tmp_path, monkeypatch)
    app = make_app(detector, tmp_path / "up")
    guard = DecodeGuard(1, 20.0, check=crashy.check)
    app.state.service.guard = guard
    good, hostile = png_bytes(), png_bytes() + CRASH_MARK  # trailing bytes: still a PNG
    try:
        with live_server(app) as base, httpx.Client(timeout=30) as client:
            ok = client.post(f"{base}/v1/detect", files={"file": ("g.png", good)})
            assert ok.status_code == 200, ok.text
            body = assert_json_error(
                client.post(f"{base}/v1/detect", files={"file": ("h.png", hostile)}),
                422,
                "decoder_crashed",
            )
            assert "decoder crashed" in body["detail"]
            assert client.get(f"{base}/healthz").status_code == 200
            batch = [("files", ("h.png", hostile)), ("files", ("g.png", good))]
            rows = client.post(f"{base}/v1/detect/batch", files=batch).json()["results"]
            assert [r["verdict"] == "error" for r in rows] == [True, False]
            assert "decoder crashed" in rows[0]["error"]
            assert client.post(f"{base}/v1/detect", files={"file": ("g.png", good)}).is_success
        assert guard.restarts >= 2
    finally:
        guard.close()


def _crashy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / "crashy_check.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    import crashy_check  # type: ignore[import-not-found]

    return crashy_check


def test_a_video_is_decoded_in_the_worker_only(
    detector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker decodes the frames the request's sampling selects, and the server scores them
    without running a video decoder itself. Before: the worker decoded the first 8 keyframes,
    whatever the sampling, and the server decoded the frames it scored."""
    if mp4_codec() is None:
        pytest.skip("this PyAV cannot encode MP4")
    import fakescope.infer.predictor as predictor_module
    from fakescope.infer.video import VideoOptions, read_frames
    from fakescope.serve.isolate import check_decodes

    clip = write_mp4(tmp_path / "c.mp4", seconds=3.0, fps=10)
    options = VideoOptions(sample="uniform", frames=20, max_frames=64)
    here = read_frames(str(clip), options, None)
    checked = check_decodes(str(clip), "video", 10**8, options)
    assert checked.reason is None and checked.frames is not None
    assert [f.index for f in checked.frames] == [f.index for f in here] and len(here) == 20
    assert all(
        a.image.tobytes() == b.image.tobytes() for a, b in zip(checked.frames, here, strict=True)
    )

    def no_decoding_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the server process decoded the video")

    monkeypatch.setattr(predictor_module, "read_frames", no_decoding_here)
    app = make_app(detector, tmp_path / "up", isolate_decode=True)
    with live_server(app) as base, httpx.Client(timeout=60) as client:
        resp = client.post(
            f"{base}/v1/detect?frames=12", files={"file": ("c.mp4", clip.read_bytes())}
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["n_frames"] == 12


def test_a_clean_failure_in_the_worker_is_refused_without_decoding_again(
    detector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(detector, tmp_path / "up", isolate_decode=True)
    service = app.state.service
    seen: list[str] = []
    monkeypatch.setattr(service.predictor, "predict_file", lambda *a, **k: seen.append(a[0]))
    truncated = png_bytes(64)[:200]
    with live_server(app) as base, httpx.Client(timeout=60) as client:
        body = assert_json_error(
            client.post(f"{base}/v1/detect", files={"file": ("cut.png", truncated)}),
            422,
            "invalid_image",
        )
    assert body["detail"].startswith("cut.png: ") and "fakescope-upload" not in body["detail"]
    assert seen == []  # the server process never decoded the file


def test_checks_queued_behind_others_do_not_time_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the timeout counted time waiting in the pool's queue, so a third check on a
    one-worker pool 'hung' and was refused, and the pool was killed under its neighbours."""
    from concurrent.futures import ThreadPoolExecutor

    from fakescope.infer.video import VideoOptions

    crashy = _crashy_module(tmp_path, monkeypatch)
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    guard = DecodeGuard(1, 1.0, check=crashy.slow)
    try:
        with ThreadPoolExecutor(3) as pool:
            jobs = [
                pool.submit(guard.check, str(image), "image", 10**8, f"{i}.png", VideoOptions())
                for i in range(3)
            ]
            assert [j.result().reason for j in jobs] == [None, None, None]
        assert guard.restarts == 0
    finally:
        guard.close()


# --------------------------------------------------------------------------------- the fuzz
def _mutate(body: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(body)
    for kind, pos, val in ops:
        if not data:
            break
        i = pos % len(data)
        if kind == 0:
            data[i] = val
        elif kind == 1:
            del data[i : i + 1 + val % 16]
        elif kind == 2:
            data[i:i] = bytes([val]) * (1 + val % 8)
        else:
            data[i:i] = b"\r\n--b0und" + (b"--" if val % 2 else b"\r\n")
    return bytes(data)


SEED_BODY = multipart_body("files", [("a.png", png_bytes(24)), ("b.txt", b"hello world!" * 3)])


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 255)), max_size=6
    ),
    chunk=st.integers(1, 600),
    declare=st.booleans(),
    raw=st.binary(max_size=64),
)
def test_fuzzed_multipart_gives_json_4xx_or_a_parse(
    ops: list[tuple[int, int, int]], chunk: int, declare: bool, raw: bytes, tmp_path: Path
) -> None:
    body = _mutate(SEED_BODY, ops) if ops or not raw else raw
    headers = {"content-type": "multipart/form-data; boundary=b0und"}
    if declare:
        headers["content-length"] = str(len(body))
    dest = Path(tempfile.mkdtemp(dir=tmp_path))  # examples may repeat: a fresh folder each

    async def go() -> Any:
        coro = receive_files(
            headers,
            _chunks(body, chunk),
            dest,
            field="files",
            max_files=4,
            max_bytes=4096,
            strict=False,
        )
        return await asyncio.wait_for(coro, timeout=5)

    try:
        uploads = asyncio.run(go())
    except ApiError as e:
        assert 400 <= e.status < 500 and set(e.body()) == {"error", "detail"}
        return
    assert 1 <= len(uploads) <= 4
    for up in uploads:
        assert (up.path is None) == (up.error is not None)
        if up.path is not None:
            assert up.path.parent == dest and up.path.stat().st_size == up.size
