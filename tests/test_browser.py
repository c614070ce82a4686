"""The web page in a real browser: upload an image, a video and a bad file; read what it shows.

Needs Playwright (the Python package) and Debian's Chromium at /usr/bin/chromium
(``.ci/install-browser.sh`` installs it); skipped otherwise. Playwright's own browser download
is not used.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakescope.models import create_detector, load_detector, save_checkpoint

from .conftest import TINY_MODEL
from .serve_helpers import mp4_codec, png_bytes, write_mp4

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHARED_SCREENSHOT = Path("/tmp/fakescope-screenshot.png")
TIMEOUT_MS = 30_000

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)
if not CHROMIUM.is_file():  # pragma: no cover - depends on the machine
    pytest.skip(
        f"no Chromium at {CHROMIUM} (run .ci/install-browser.sh or apt-get install chromium)",
        allow_module_level=True,
    )
uvicorn = pytest.importorskip("uvicorn")


@contextlib.contextmanager
def serving(det: Any, tmp: Path) -> Iterator[str]:
    """``det`` behind the app on a free loopback port, served by uvicorn in a background thread."""
    from fakescope.serve import ServeSettings, create_app

    settings = ServeSettings(device="cpu", tmp_root=str(tmp / "uploads"))
    app = create_app(det, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with a tiny fine-tuned network."""
    tmp = tmp_path_factory.mktemp("tiny")
    det = create_detector(TINY_MODEL, img_size=32).eval()
    ckpt = save_checkpoint(tmp / "tiny.safetensors", det)
    with serving(load_detector(ckpt), tmp) as url:
        yield url


def _wait_until(cond: Any, timeout_s: float = 30.0) -> None:
    """Poll ``cond`` (``wait_for_function`` would need 'unsafe-eval', which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in the page"
        time.sleep(0.05)


def _canvas_ink(page: Any) -> int:
    """How many pixels of the timeline canvas are not blank."""
    return page.evaluate(
        """() => {
            const c = document.getElementById('timeline');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
            return n;
        }"""
    )


def test_page_end_to_end(server: str, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(size=96))
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is a shopping list, not a photo\n")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 950})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.goto(server + "/")
            expect(page.locator("#model-info")).to_contain_text(TINY_MODEL)

            # keyboard: the file picker is the first thing Tab reaches
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "file-input"

            # an image: verdict, probability, heatmap
            page.set_input_files("#file-input", str(image))
            expect(page.locator("#verdict")).to_have_text(re.compile(r"^(fake|real|uncertain)$"))
            expect(page.locator("#probability")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
            expect(page.locator("#preview-image")).to_be_visible()
            expect(page.locator("#heatmap-toggle")).to_be_visible()
            assert page.get_attribute("#score-bar", "aria-label").startswith("P(fake)")
            page.check("#heatmap-toggle")
            heat = page.locator("#heatmap-image")
            expect(heat).to_be_visible()
            _wait_until(lambda: heat.evaluate("img => img.naturalWidth") >= 256)
            expect(page.locator("#preview-image")).to_be_hidden()
            page.screenshot(path=str(tmp_path / "image.png"), full_page=True)
            page.uncheck("#heatmap-toggle")
            expect(heat).to_be_hidden()
            expect(page.locator("#timeline-panel")).to_be_hidden()

            # a video: verdict and the per-frame timeline
            if mp4_codec() is not None:
                clip = write_mp4(tmp_path / "clip.mp4")
                page.set_input_files("#file-input", str(clip))
                expect(page.locator("#timeline")).to_be_visible()
                expect(page.locator("#verdict")).to_have_text(
                    re.compile(r"^(fake|real|uncertain)$")
                )
                expect(page.locator("#preview-video")).to_be_visible()
                expect(page.locator("#heatmap-controls")).to_be_hidden()
                expect(page.locator("#timeline-summary")).to_contain_text("frames over")
                assert _canvas_ink(page) > 1000
                page.screenshot(path=str(tmp_path / "video.png"), full_page=True)
                shutil.copyfile(tmp_path / "video.png", SHARED_SCREENSHOT)
            else:  # pragma: no cover - depends on the PyAV build
                shutil.copyfile(tmp_path / "image.png", SHARED_SCREENSHOT)

            # a text file named .jpg: an error in words
            page.set_input_files("#file-input", str(bad))
            error = page.locator("#error")
            expect(error).to_be_visible()
            expect(error).to_contain_text("notes.jpg is not an image or video")
            expect(page.locator("#result")).to_be_hidden()
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "image.png").stat().st_size > 1000
    # the 415 answer itself is logged by Chromium as a failed resource load; nothing else may be
    assert [m for m in problems if "415" not in m] == []


def test_page_says_why_an_out_of_depth_image_is_uncertain(tmp_path: Path) -> None:
    import numpy as np

    from fakescope.data.transforms import eval_transform
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.models.probe import attach_novelty, create_probe_detector

    from .test_novelty import build_encoder, far_away, textures

    backbone = OnnxBackbone(build_encoder(tmp_path / "enc.onnx", quantise=False))
    det = create_probe_detector(backbone, 16, l2=True)
    det.net.set_head(np.zeros(16), np.ones(16), np.linspace(-1, 1, 16), 0.0)
    tf = eval_transform(backbone.preprocessing)
    attach_novelty(det, backbone.embed(np.stack([tf(im).numpy() for im in textures(40)])), k=3)
    stars = tmp_path / "stars.png"
    far_away()["stars"].save(stars)
    with serving(det, tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 950})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url + "/")
            page.set_input_files("#file-input", str(stars))
            expect(page.locator("#verdict")).to_have_text("uncertain")
            expect(page.locator("#verdict-words")).to_contain_text("unlike the training data")
            page.screenshot(path=str(tmp_path / "uncertain.png"), full_page=True)
        finally:
            browser.close()
