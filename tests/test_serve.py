"""fakescope serve: the HTTP API on a tiny detector, its limits, status codes and temp files."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from fakescope.infer.video import VideoOptions  # noqa: E402
from fakescope.models import create_detector, load_detector, save_checkpoint  # noqa: E402
from fakescope.serve import ServeSettings, create_app  # noqa: E402
from fakescope.serve.limits import ApiError  # noqa: E402
from fakescope.serve.uploads import display_name, receive_files, sniff  # noqa: E402

from .helpers import TINY_MODEL  # noqa: E402
from .serve_helpers import (  # noqa: E402
    bomb_png_bytes,
    jpeg_bytes,
    mp4_codec,
    noise_png_bytes,
    png_bytes,
    write_mp4,
)

ROW_KEYS = {
    "path",
    "kind",
    "score",
    "verdict",
    "threshold",
    "uncertain_band",
    "detector",
    "model",
    "time_ms",
}
VERDICTS = {"fake", "real", "uncertain"}
BOMB_SIZE = ("30000x30000", "900000000 pixels")  # our check's words, or PIL's own guard's
needs_mp4 = pytest.mark.skipif(mp4_codec() is None, reason="no H.264 or MPEG-4 encoder in PyAV")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.threshold, det.spec.uncertain_band = 0.5, 0.05
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", det)


@pytest.fixture(scope="module")
def detector(ckpt: Path) -> Any:
    return load_detector(ckpt)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if mp4_codec() is None:
        pytest.skip("no H.264 or MPEG-4 encoder in PyAV")
    return write_mp4(tmp_path_factory.mktemp("clip") / "clip.mp4").read_bytes()


@pytest.fixture
def uploads_dir(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def make_client(detector: Any, uploads_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """A factory of test clients whose per-request temp folders live in ``uploads_dir``."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = ServeSettings(device="cpu", tmp_root=str(uploads_dir), **overrides)
        client = TestClient(create_app(detector, settings), base_url="http://localhost")
        client.__enter__()  # one event loop for the client's life
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def post_file(
    client: TestClient, name: str, data: bytes, ctype: str = "application/octet-stream", **kw: Any
) -> httpx.Response:
    return client.post("/v1/detect", files={"file": (name, data, ctype)}, **kw)


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == code
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    return body


def assert_no_uploads_left(uploads_dir: Path) -> None:
    assert not uploads_dir.exists() or list(uploads_dir.iterdir()) == []


# ----------------------------------------------------------------------------------- detection
def test_detect_image(client: TestClient, uploads_dir: Path) -> None:
    resp = post_file(client, "photo.png", png_bytes(), "image/png")
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert set(row) >= ROW_KEYS
    assert row["path"] == "photo.png" and row["kind"] == "image"
    assert 0.0 <= row["score"] <= 1.0 and row["verdict"] in VERDICTS
    assert row["model"] == TINY_MODEL and row["error"] is None
    assert (row["width"], row["height"]) == (40, 40)
    assert (row["threshold"], row["uncertain_band"]) == (0.5, 0.05)
    assert "heatmap_png" not in row
    assert_no_uploads_left(uploads_dir)


def test_rows_and_model_info_name_the_detector_for_people(client: TestClient) -> None:
    """``detector`` is the name people know (the checkpoint's file name, or builtin:NAME);
    ``model`` keeps the technical architecture string."""
    row = post_file(client, "photo.png", png_bytes(), "image/png").json()
    assert row["detector"] == "tiny.safetensors" and row["model"] == TINY_MODEL
    info = client.get("/v1/model").json()
    assert info["detector"] == "tiny.safetensors" and info["name"] == TINY_MODEL
    assert info["description"] is None  # built-ins only
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    assert "detector" in spec["DetectResult"]["properties"]
    assert "detector" in spec["ModelInfo"]["properties"]


def test_detect_jpeg_matches_predictor(client: TestClient, detector: Any, tmp_path: Path) -> None:
    import fakescope

    data = jpeg_bytes()
    (tmp_path / "x.jpg").write_bytes(data)
    (ref,) = fakescope.predict(tmp_path / "x.jpg", detector=detector, device="cpu")
    row = post_file(client, "x.jpg", data, "image/jpeg").json()
    assert row["score"] == pytest.approx(ref.score, abs=1e-5)
    assert row["verdict"] == ref.verdict


def test_detect_image_with_heatmap(client: TestClient) -> None:
    resp = post_file(client, "photo.png", png_bytes(), "image/png", params={"explain": "true"})
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert row["heatmap_method"] in ("gradcam", "occlusion")
    png = base64.b64decode(row["heatmap_png"])
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and min(img.size) >= 256


def test_detect_video(client: TestClient, clip: bytes, uploads_dir: Path) -> None:
    resp = post_file(client, "clip.mp4", clip, "video/mp4")
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert row["kind"] == "video" and row["path"] == "clip.mp4"
    assert 0.0 <= row["score"] <= 1.0 and row["verdict"] in VERDICTS
    assert row["aggregate"] == "mean" and row["n_frames"] == len(row["frames"]) >= 5
    assert (row["width"], row["height"]) == (64, 48)
    times = [f["time_s"] for f in row["frames"]]
    assert times == sorted(times) and times[0] >= 0.0 and times[-1] <= 1.0
    assert all(0.0 <= f["score"] <= 1.0 for f in row["frames"])
    four = post_file(client, "clip.mp4", clip, params={"frames": 4}).json()
    assert four["n_frames"] == 4
    assert_no_uploads_left(uploads_dir)


def test_gif_still_and_animated(client: TestClient) -> None:
    frames = [Image.new("RGB", (48, 40), (40 * i, 90, 200 - 40 * i)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    animated = post_file(client, "anim.gif", buf.getvalue(), "image/gif").json()
    assert animated["kind"] == "video" and animated["n_frames"] == len(animated["frames"]) >= 2
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF")
    still = post_file(client, "still.gif", buf.getvalue(), "image/gif").json()
    assert still["kind"] == "image" and still["verdict"] in VERDICTS


def test_video_frame_limit(client: TestClient, clip: bytes) -> None:
    body = assert_error(
        post_file(client, "clip.mp4", clip, params={"frames": 65}), 422, "too_many_frames"
    )
    assert "64" in body["detail"]
    assert_error(post_file(client, "clip.mp4", clip, params={"frames": 0}), 422, "invalid_request")


def test_video_pixel_limit(make_client: Callable[..., TestClient], clip: bytes) -> None:
    client = make_client(max_pixels=1000)
    body = assert_error(post_file(client, "clip.mp4", clip), 422, "too_many_pixels")
    assert "64x48" in body["detail"]


@needs_mp4
def test_corrupt_video_is_422(client: TestClient, clip: bytes) -> None:
    cut = clip[: len(clip) // 2]  # the index (moov) comes last: half a file has none
    body = assert_error(post_file(client, "cut.mp4", cut), 422, "invalid_video")
    assert body["detail"].startswith("cut.mp4: ")
    assert "upload-0" not in body["detail"]  # the temp path never leaks


def test_batch(make_client: Callable[..., TestClient], clip: bytes, uploads_dir: Path) -> None:
    client = make_client(max_upload_mb=0.1)
    files = [
        ("files", ("a.png", png_bytes(seed=1), "image/png")),
        ("files", ("notes.jpg", b"just some text, not a picture", "image/jpeg")),
        ("files", ("clip.mp4", clip, "video/mp4")),
        ("files", ("huge.png", noise_png_bytes(256), "image/png")),  # ~200 KB > 0.1 MB
        ("files", ("bomb.png", bomb_png_bytes(), "image/png")),
        ("files", ("b.jpg", jpeg_bytes(), "image/jpeg")),
    ]
    resp = client.post("/v1/detect/batch", files=files)
    assert resp.status_code == 200, resp.text
    rows = resp.json()["results"]
    assert [r["path"] for r in rows] == [
        "a.png",
        "notes.jpg",
        "clip.mp4",
        "huge.png",
        "bomb.png",
        "b.jpg",
    ]
    ok = [rows[i] for i in (0, 2, 5)]
    assert all(r["verdict"] in VERDICTS and r["error"] is None for r in ok)
    assert [r["kind"] for r in ok] == ["image", "video", "image"]
    assert rows[2]["frames"] and rows[2]["n_frames"] == len(rows[2]["frames"])
    bad = {r["path"]: r for r in rows if r["verdict"] == "error"}
    assert set(bad) == {"notes.jpg", "huge.png", "bomb.png"}
    assert all(r["score"] is None for r in bad.values())
    assert "not an image or video" in bad["notes.jpg"]["error"]
    assert "larger than the upload limit" in bad["huge.png"]["error"]
    assert any(s in bad["bomb.png"]["error"] for s in BOMB_SIZE)
    assert_no_uploads_left(uploads_dir)


def test_batch_limits(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_batch_files=2)
    three = [("files", (f"{i}.png", png_bytes(seed=i), "image/png")) for i in range(3)]
    assert_error(client.post("/v1/detect/batch", files=three), 413, "too_many_files")
    assert_error(
        client.post("/v1/detect/batch", data={"x": "1"}, files={"other": ("a.png", b"x")}),
        400,
        "missing_file",
    )


# --------------------------------------------------------------------------------- other routes
def test_health_model_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["name"] == TINY_MODEL and info["kind"] == "timm"
    assert (info["threshold"], info["uncertain_band"]) == (0.5, 0.05)
    assert info["preprocessing"]["size"] == 32 and info["calibration"] is None
    assert info["fakescope_version"] and info["checkpoint_version"]
    assert info["created"]  # the checkpoint's creation time
    assert info["limits"]["max_upload_mb"] == 50 and info["video"]["frames"] == 16
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"
    assert "/v1/detect/batch" in spec["paths"] and "/v1/model" in spec["paths"]
    assert {"413", "415", "422", "503", "504"} <= set(
        spec["paths"]["/v1/detect"]["post"]["responses"]
    )


def test_page_and_static(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element in (
        'id="verdict"',
        'id="probability"',
        'id="error"',
        'id="timeline"',
        'id="heatmap-toggle"',
        "aria-live",
    ):
        assert element in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # no external resources
    for asset in ("/static/app.js", "/static/style.css"):
        resp = client.get(asset)
        assert resp.status_code == 200 and len(resp.text) > 500
        assert "https://" not in resp.text and "http://" not in resp.text
    assert_error(client.get("/no/such/page"), 404, "not_found")


# -------------------------------------------------------------------------------------- limits
def test_413_declared_length(make_client: Callable[..., TestClient], uploads_dir: Path) -> None:
    client = make_client(max_upload_mb=0.001)  # about 1 KB
    big = noise_png_bytes(200)  # ~120 KB: refused from Content-Length, before reading
    body = assert_error(post_file(client, "big.png", big, "image/png"), 413, "too_large")
    assert body["detail"] == "the upload is larger than the upload limit of 1.02 KB"
    assert_no_uploads_left(uploads_dir)


def test_413_streamed_without_length(
    make_client: Callable[..., TestClient], uploads_dir: Path
) -> None:
    client = make_client(max_upload_mb=0.01)  # about 10 KB, and no Content-Length to go by
    boundary = "fakescopeboundary"
    data = noise_png_bytes(100)  # ~30 KB

    def chunks() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = client.post(
        "/v1/detect",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(resp, 413, "too_large")
    assert_no_uploads_left(uploads_dir)


def test_upload_stops_reading_past_the_limit(tmp_path: Path) -> None:
    boundary = b"b0undary"
    read = []

    async def body() -> AsyncIterator[bytes]:
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        yield b"\x89PNG\r\n\x1a\n" + b"\0" * 1016
        for i in range(1000):  # 1000 more KiB the server must never read
            read.append(i)
            yield b"\0" * 1024
        yield b"\r\n--b0undary--\r\n"

    headers = {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}
    with pytest.raises(ApiError) as err:
        asyncio.run(
            receive_files(
                headers, body(), tmp_path, field="file", max_files=1, max_bytes=4096, strict=True
            )
        )
    assert err.value.status == 413
    assert len(read) <= 4
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def test_415_text_named_jpg(client: TestClient, uploads_dir: Path) -> None:
    body = assert_error(
        post_file(client, "cat.jpg", b"I am a text file\n" * 5, "image/jpeg"),
        415,
        "unsupported_type",
    )
    assert body["detail"].startswith("cat.jpg is not an image or video")
    assert_no_uploads_left(uploads_dir)


def test_415_zip_declared_as_png(client: TestClient) -> None:
    buf = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload.txt", "not an image")
    assert buf.getvalue()[:4] == b"PK\x03\x04"
    assert_error(
        post_file(client, "image.png", buf.getvalue(), "image/png"), 415, "unsupported_type"
    )


def test_422_decompression_bomb(client: TestClient, uploads_dir: Path) -> None:
    bomb = bomb_png_bytes(30000, 30000)
    assert len(bomb) < 200
    body = assert_error(post_file(client, "bomb.png", bomb, "image/png"), 422, "too_many_pixels")
    assert any(s in body["detail"] for s in BOMB_SIZE) and "decompression bomb" in body["detail"]
    assert_no_uploads_left(uploads_dir)


def test_422_truncated_jpeg(client: TestClient) -> None:
    data = jpeg_bytes(size=96)
    body = assert_error(
        post_file(client, "cut.jpg", data[: len(data) // 2], "image/jpeg"), 422, "invalid_image"
    )
    assert body["detail"].startswith("cut.jpg: ") and "truncated" in body["detail"]


def test_422_tiny_and_empty(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    assert (
        "too small"
        in assert_error(post_file(client, "dot.png", buf.getvalue()), 422, "invalid_image")[
            "detail"
        ]
    )
    assert_error(post_file(client, "empty.jpg", b""), 422, "empty_file")


def test_400_malformed(client: TestClient) -> None:
    assert_error(client.post("/v1/detect", content=b"raw bytes"), 400, "bad_request")
    assert_error(client.post("/v1/detect", data={"note": "hi"}), 400, "bad_request")
    two = [
        ("file", ("a.png", png_bytes(), "image/png")),
        ("file", ("b.png", png_bytes(), "image/png")),
    ]
    assert (
        "batch" in assert_error(client.post("/v1/detect", files=two), 400, "bad_request")["detail"]
    )
    assert_error(
        client.post("/v1/detect", files={"image": ("a.png", png_bytes())}), 400, "missing_file"
    )


# -------------------------------------------------------------------------- concurrency, timeout
def slow_model(app: Any, started: threading.Event, release: threading.Event) -> None:
    """Make image scoring wait for ``release`` (it sets ``started`` when it begins)."""
    predictor = app.state.service.predictor
    real = predictor.predict_file

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(timeout=30)
        return real(*args, **kwargs)

    predictor.predict_file = slow


async def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


def test_503_when_saturated(detector: Any, tmp_path: Path) -> None:
    app = create_app(
        detector,
        ServeSettings(device="cpu", max_concurrency=1, max_queue=1, tmp_root=str(tmp_path)),
    )
    started, release = threading.Event(), threading.Event()
    slow_model(app, started, release)
    image = png_bytes()

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

            def post() -> Any:
                return client.post("/v1/detect", files={"file": ("a.png", image, "image/png")})

            running = asyncio.create_task(post())
            await _wait_for(started.is_set)
            queued = asyncio.create_task(post())
            await _wait_for(lambda: app.state.gate.waiting == 1)
            refused = await asyncio.gather(*(post() for _ in range(3)))  # answered at once
            release.set()
            return [await running, await queued], refused

    served, refused = asyncio.run(scenario())
    assert [r.status_code for r in served] == [200, 200]
    for resp in refused:
        assert_error(resp, 503, "busy")
        assert resp.headers["retry-after"] == "1"
    assert app.state.gate.waiting == 0 and app.state.gate.running == 0
    assert list(tmp_path.iterdir()) == []


def test_504_on_timeout(make_client: Callable[..., TestClient], uploads_dir: Path) -> None:
    client = make_client(timeout_s=0.5, max_concurrency=1)
    app = client.app
    started, release = threading.Event(), threading.Event()
    slow_model(app, started, release)
    t0 = time.monotonic()
    body = assert_error(post_file(client, "a.png", png_bytes()), 504, "timeout")
    assert time.monotonic() - t0 < 5 and "0.5 s" in body["detail"]
    assert app.state.gate.running == 1  # the thread still holds its slot...
    release.set()
    deadline = time.monotonic() + 10
    while app.state.gate.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.state.gate.running == 0  # ...until it ends
    assert post_file(client, "a.png", png_bytes()).status_code == 200
    assert_no_uploads_left(uploads_dir)


# ------------------------------------------------------------------------------ temp files, names
def test_uploads_stay_in_a_private_temp_dir(
    client: TestClient, uploads_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fakescope.data.images as images_module  # the item decoder the predictor uses

    seen: list[Path] = []
    real = images_module.load_image

    def spy(path: Any, **kw: Any) -> Any:
        seen.append(Path(path))
        assert Path(path).is_file()  # present while the request runs
        return real(path, **kw)

    monkeypatch.setattr(images_module, "load_image", spy)
    before = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(uploads_dir))
    names = [
        "../../etc/passwd.jpg",
        "..\\..\\windows\\evil.jpg",
        "/abs/path/x.jpg",
        "a\x00b\nc.jpg",
        "..",
        "",
    ]
    for name in names:
        resp = post_file(client, name, jpeg_bytes(), "image/jpeg")
        assert resp.status_code == 200, resp.text
        shown = resp.json()["path"]
        assert "/" not in shown and "\\" not in shown and "\x00" not in shown and "\n" not in shown
        assert shown not in ("", ".", "..")
    assert [p.name for p in seen] == ["upload-0.jpg"] * len(names)
    assert all(
        p.parent.parent == uploads_dir and p.parent.name.startswith("fakescope-upload-")
        for p in seen
    )
    assert_no_uploads_left(uploads_dir)
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(uploads_dir))
    assert after == before  # nothing written anywhere else
    assert not any(p.name.startswith("passwd") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("bad\x00name\r\n.jpg", "badname.jpg"),
        ("..", "upload-3"),
        (None, "upload-3"),
        ("x" * 500 + ".jpg", "x" * 200),
    ],
)
def test_display_name(raw: str | None, shown: str) -> None:
    assert display_name(raw, 2) == shown


@pytest.mark.parametrize(
    ("head", "kind", "suffix"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00", "image", ".jpg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image", ".png"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff", "image", ".gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00", "image", ".webp"),
        (b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00", "image", ".bmp"),
        (b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "image", ".tif"),
        (b"MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00", "image", ".tif"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "video", ".mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video", ".mov"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "image", ".avif"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video", ".webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matr", "video", ".mkv"),
        (b"RIFF\x00\x10\x00\x00AVI LIST\x00\x00", "video", ".avi"),
    ],
)
def test_sniff_known(head: bytes, kind: str, suffix: str) -> None:
    media = sniff(head)
    assert media is not None and (media.kind, media.suffix) == (kind, suffix)


@pytest.mark.parametrize(
    "head",
    [
        b"PK\x03\x04\x14\x00\x00\x00",
        b"%PDF-1.7\n",
        b"<html><body>",
        b"hello world!!!!!",
        b"RIFF\0\0\0\0WAVEfmt ",
    ],
)
def test_sniff_unknown(head: bytes) -> None:
    assert sniff(head) is None


# ---------------------------------------------------------------------------------------- cli
def test_cli_parser_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from fakescope.cli.serve import add_serve_parser, cmd_serve, settings_from_args

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    args = parser.parse_args(["serve", "--max-upload-mb", "5", "--max-queue", "0", "--frames", "8"])
    assert args.func is cmd_serve and (args.host, args.port) == ("127.0.0.1", 8000)
    settings = settings_from_args(args)
    assert (settings.max_upload_mb, settings.max_queue, settings.video.frames) == (5, 0, 8)
    assert settings.max_pixels == ServeSettings().max_pixels
    monkeypatch.delenv("FAKESCOPE_DETECTOR", raising=False)
    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    # no --detector: the default built-in, whose CLIP tower is not on this path
    with pytest.raises(FileNotFoundError, match="FAKESCOPE_WEIGHTS"):
        cmd_serve(args)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_stops_the_server_and_its_worker_processes(tmp_path: Path) -> None:
    """``kill PID`` shuts down as cleanly as Ctrl+C: the decoder workers and multiprocessing's
    resource tracker go with the server, at once (serving an ONNX probe, as the default
    built-in is)."""
    import signal
    import subprocess
    import sys

    from .helpers import tiny_probe_checkpoint

    ckpt = tiny_probe_checkpoint(tmp_path / "probe")
    port = _free_port()
    cmd = [sys.executable, "-m", "fakescope", "serve", "--detector", str(ckpt), "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, "--max-concurrency", "1"], stdout=out, stderr=out)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        children = _children(proc.pid)
        assert len(children) >= 2, children  # the decoder worker and the resource tracker
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_running(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _running(c)], "child processes outlived the server"
        assert code == 128 + signal.SIGTERM  # the usual code for "stopped by SIGTERM"
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:  # leave nothing behind, even when the test failed
            if _running(child):
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGKILL)


def test_server_settings_are_declared_once(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from fakescope.cli import main
    from fakescope.cli.serve import add_serve_parser, settings_from_args
    from fakescope.serve.settings import ConnectionLimits, ServerSettings

    monkeypatch.delenv("FAKESCOPE_API_KEY", raising=False)
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    # the CLI's defaults are the settings' defaults (the app gets the same object)
    assert settings_from_args(args) == ServerSettings()
    assert ServerSettings().connections == ConnectionLimits()
    # and docs/security.md's table says the same
    doc = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([\d,.]+)(?: s)? \|", doc, flags=re.M)
    assert len(rows) >= 10
    for flag, value in rows:
        assert getattr(args, flag[2:].replace("-", "_")) == float(value.replace(",", "")), flag
    # a bad value is one line naming the setting; a key is never echoed
    assert main(["serve", "--detector", "x.safetensors", "--max-queue", "-1"]) == 1
    assert capsys.readouterr().err.strip() == (
        "fakescope: error: serve setting max_queue = -1: expected int "
        "(input should be greater than or equal to 0)"
    )
    assert main(["serve", "--detector", "x.safetensors", "--api-key", "hunter2"]) == 1
    err = capsys.readouterr().err
    assert "api_key = (hidden)" in err and "hunter2" not in err


def test_bad_settings_refused(detector: Any) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        create_app(detector, ServeSettings(max_concurrency=0))
    with pytest.raises(ValueError, match="video frames must be at most"):
        create_app(detector, ServeSettings(video=VideoOptions(frames=100, max_frames=64)))


# ------------------------------------------------------------------------- out-of-depth guard
def test_json_rows_carry_the_out_of_depth_guard(tmp_path: Path) -> None:
    import numpy as np

    from fakescope.data.transforms import eval_transform
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.models.probe import attach_novelty, create_probe_detector

    from .helpers import build_encoder, far_away, textures

    backbone = OnnxBackbone(build_encoder(tmp_path / "enc.onnx", quantise=False))
    det = create_probe_detector(backbone, 16, l2=True)
    det.net.set_head(np.zeros(16), np.ones(16), np.linspace(-1, 1, 16), 0.0)
    tf = eval_transform(backbone.preprocessing)
    train = np.stack([tf(im).numpy() for im in textures(40)])
    attach_novelty(det, backbone.embed(train), k=3, quantile=1.0)
    settings = ServeSettings(device="cpu", tmp_root=str(tmp_path / "up"))
    with TestClient(create_app(det, settings), base_url="http://localhost") as client:
        buf = io.BytesIO()
        far_away()["stars"].save(buf, format="PNG")
        body = post_file(client, "stars.png", buf.getvalue()).json()
        assert body["verdict"] == "uncertain" and body["reason"] == "unlike the training data"
        assert body["novelty"] > det.novelty_threshold
        buf = io.BytesIO()
        textures(1, seed=9)[0].save(buf, format="PNG")
        body = post_file(client, "texture.png", buf.getvalue()).json()
        assert body["reason"] is None and body["novelty"] is not None
