"""The web page in a real browser: upload an image, a video and a bad file; read what it shows.

Needs Playwright (the Python package) and Debian's Chromium at /usr/bin/chromium
(``.ci/install-browser.sh`` installs it); skipped otherwise. Playwright's own browser download
is not used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakescope.models import create_detector, load_detector, save_checkpoint

from .helpers import TINY_MODEL
from .serve_helpers import live_server, mp4_codec, png_bytes, write_mp4

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
def serving(det: Any, tmp: Path, **settings: Any) -> Iterator[str]:
    """``det`` behind the app on a free loopback port, served by uvicorn in a background thread."""
    from fakescope.serve import ServeSettings, create_app

    config = ServeSettings(device="cpu", tmp_root=str(tmp / "uploads"), **settings)
    with live_server(create_app(det, config)) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny fine-tuned network, through a checkpoint as a user would load it."""
    tmp = tmp_path_factory.mktemp("tiny")
    det = create_detector(TINY_MODEL, img_size=32).eval()
    return load_detector(save_checkpoint(tmp / "tiny.safetensors", det))


@pytest.fixture(scope="module")
def server(tiny_detector: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app with the tiny network."""
    with serving(tiny_detector, tmp_path_factory.mktemp("served")) as url:
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
            # the detector by its name; the technical model string on hover only
            expect(page.locator("#model-info")).to_contain_text("Detector: tiny.safetensors")
            expect(page.locator("#model-info")).to_have_attribute("title", "Model: " + TINY_MODEL)
            expect(page.locator("#model-about")).to_be_hidden()  # described: built-ins only

            # keyboard: the file picker is the first thing Tab reaches
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "file-input"

            # an image: verdict, probability, heatmap
            page.set_input_files("#file-input", str(image))
            expect(page.locator("#verdict")).to_have_text(re.compile(r"^(fake|real|uncertain)$"))
            expect(page.locator("#probability")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
            expect(page.locator("#details")).to_contain_text("detector tiny.safetensors")
            assert TINY_MODEL not in page.locator("#details").text_content()
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

    from .helpers import build_encoder, far_away, textures

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


# --------------------------------------------------------------------------- held responses
@contextlib.contextmanager
def _page(url: str, width: int = 1100) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page at ``url`` and the list of page errors it raised."""
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": 950})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(url + "/")
            yield page, errors
        finally:
            browser.close()


class _Hold:
    """A ``page.route`` handler that holds the first ``n`` matching requests (to be answered
    later by the test, out of order) and lets the others through to the server."""

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.held: list[Any] = []

    def __call__(self, route: Any) -> None:
        if len(self.held) < self.n:
            self.held.append(route)
        else:
            route.continue_()

    def wait(self, page: Any, count: int = 1) -> None:
        _wait_until(lambda: page.evaluate("1") and len(self.held) >= count)


def _is_explain(url: str) -> bool:
    return "/v1/detect?" in url and "explain=true" in url


def _is_detect(url: str) -> bool:
    return url.split("?")[0].endswith("/v1/detect") and "explain=true" not in url


def _row(name: str, **extra: Any) -> dict[str, Any]:
    """A /v1/detect answer as the server writes it, for answers the test makes up."""
    row: dict[str, Any] = {
        "name": name,
        "kind": "image",
        "score": 0.97,
        "verdict": "fake",
        "threshold": 0.5,
        "uncertain_band": 0.05,
        "model": "tiny",
        "time_ms": 12.0,
        "width": 96,
        "height": 96,
    }
    row.update(extra)
    return row


def _fulfil_late(route: Any, row: dict[str, Any]) -> None:
    """Answer a held request; the page may have aborted it meanwhile (then nothing arrives)."""
    with contextlib.suppress(Exception):
        route.fulfill(status=200, content_type="application/json", body=json.dumps(row))


def _stays(page: Any, cond: Any, seconds: float = 1.0) -> None:
    """``cond`` holds now and keeps holding for ``seconds`` (time for a late answer to land)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert cond()
        page.wait_for_timeout(50)


def test_stale_heatmap_never_lands_in_a_newer_result(server: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(png_bytes(size=96, seed=1))
    second.write_bytes(png_bytes(size=80, seed=2))
    stale_png = base64.b64encode(png_bytes(size=300, seed=3)).decode("ascii")
    with _page(server) as (page, errors):
        page.set_input_files("#file-input", str(first))
        expect(page.locator("#verdict-panel")).to_be_visible()
        hold = _Hold()
        page.route(_is_explain, hold)
        page.check("#heatmap-toggle")  # the heatmap request of first.png is held
        hold.wait(page)

        page.set_input_files("#file-input", str(second))
        expect(page.locator("#file-name")).to_have_text("· second.png")
        expect(page.locator("#verdict-panel")).to_be_visible()
        expect(page.locator("#status")).to_contain_text("Done in")
        # now the first file's heatmap answer arrives, late
        _fulfil_late(
            hold.held[0],
            _row("first.png", heatmap_png=stale_png, heatmap_method="occlusion"),
        )
        heat = page.locator("#heatmap-image")
        _stays(page, lambda: not heat.is_visible() and heat.get_attribute("src") is None)
        expect(page.locator("#file-name")).to_have_text("· second.png")
        expect(page.locator("#preview-image")).to_be_visible()
        expect(page.locator("#heatmap-toggle")).not_to_be_checked()
        expect(page.locator("#heatmap-toggle")).to_be_enabled()
        expect(page.locator("#heatmap-legend")).to_be_hidden()
        expect(page.locator("#progress")).to_be_hidden()

        # the second file's own heatmap, from the server, with its colour scale and method
        page.unroute(_is_explain, hold)
        page.check("#heatmap-toggle")
        expect(heat).to_be_visible()
        assert stale_png not in (heat.get_attribute("src") or "")
        expect(page.locator("#heatmap-legend")).to_be_visible()
        expect(page.locator("#heatmap-legend")).to_contain_text("contribution to P(fake)")
        expect(page.locator("#heatmap-method")).to_contain_text(
            re.compile(r"Method: (Grad-CAM|occlusion)")
        )
        page.screenshot(path=str(tmp_path / "heatmap.png"), full_page=True)
    assert errors == []


def test_stale_detect_answer_is_dropped(server: str, tmp_path: Path) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(png_bytes(size=96, seed=1))
    second.write_bytes(png_bytes(size=80, seed=2))
    with _page(server) as (page, errors):
        hold = _Hold()
        page.route(_is_detect, hold)
        page.set_input_files("#file-input", str(first))
        hold.wait(page)
        page.set_input_files("#file-input", str(second))  # while first.png is still pending
        expect(page.locator("#file-name")).to_have_text("· second.png")
        expect(page.locator("#verdict-panel")).to_be_visible()
        expect(page.locator("#details")).to_contain_text("detector tiny.safetensors")
        stale = _row("first.png", model="stale-model", detector="stale.safetensors", verdict="fake")
        _fulfil_late(hold.held[0], stale)
        details = page.locator("#details")
        _stays(page, lambda: "stale" not in details.text_content())
        expect(page.locator("#file-name")).to_have_text("· second.png")
        expect(page.locator("#progress")).to_be_hidden()
    assert errors == []


def test_progress_shows_while_scoring_and_heatmap_run(server: str, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(size=96))
    with _page(server) as (page, errors):
        progress = page.locator("#progress")
        expect(progress).to_be_hidden()
        hold = _Hold()
        page.route(_is_detect, hold)
        page.set_input_files("#file-input", str(image))
        hold.wait(page)
        expect(progress).to_be_visible()
        expect(page.locator("#progress-text")).to_have_text("Scoring the image…")
        expect(page.locator("#progress-elapsed")).to_have_text(re.compile(r"^[1-9]\d* s$"))
        expect(page.locator("#result-grid")).to_have_attribute("aria-busy", "true")
        expect(page.locator("#drop-zone")).to_have_class(re.compile(r"\bbusy\b"))
        hold.held[0].continue_()
        expect(page.locator("#verdict-panel")).to_be_visible()
        expect(progress).to_be_hidden()
        expect(page.locator("#result-grid")).to_have_attribute("aria-busy", "false")

        # a heatmap: busy with a note on how long it takes, the toggle disabled; then cancelled
        hold = _Hold()
        page.route(_is_explain, hold)
        page.check("#heatmap-toggle")
        hold.wait(page)
        expect(progress).to_be_visible()
        expect(page.locator("#progress-text")).to_have_text("Computing the heatmap…")
        expect(page.locator("#progress-note")).to_contain_text("up to a minute")
        page.screenshot(path=str(tmp_path / "busy.png"), full_page=True)
        expect(page.locator("#heatmap-toggle")).to_be_disabled()
        page.click("#cancel-button")
        expect(progress).to_be_hidden()
        expect(page.locator("#heatmap-toggle")).to_be_enabled()
        expect(page.locator("#heatmap-toggle")).not_to_be_checked()
        expect(page.locator("#heatmap-image")).to_be_hidden()
        expect(page.locator("#verdict-panel")).to_be_visible()

        # and again, answered this time
        page.unroute(_is_explain, hold)
        hold = _Hold()
        page.route(_is_explain, hold)
        page.check("#heatmap-toggle")
        hold.wait(page)
        expect(progress).to_be_visible()
        hold.held[0].continue_()
        expect(page.locator("#heatmap-image")).to_be_visible()
        expect(progress).to_be_hidden()
    assert errors == []


def _overflow(page: Any, selector: str) -> int:
    """How far the element's content sticks out sideways (0 when it fits)."""
    return page.evaluate(
        "s => { const e = document.querySelector(s); return e.scrollWidth - e.clientWidth; }",
        selector,
    )


def test_long_file_name_wraps_inside_the_card(server: str) -> None:
    name = "a" * 120 + "_very_long_name_without_spaces_" + "b" * 60 + ".png"
    with _page(server, width=600) as (page, errors):
        page.set_input_files(
            "#file-input",
            files=[{"name": name, "mimeType": "image/png", "buffer": png_bytes(size=96)}],
        )
        expect(page.locator("#verdict-panel")).to_be_visible()
        expect(page.locator("#file-name")).to_have_text("· " + name)
        assert _overflow(page, "#result") <= 0
        assert _overflow(page, "html") <= 0
    assert errors == []


HOSTILE = '<img src=x onerror="window.pwned=1">'
LONG_MODEL = "probe:clip_vit_b16_openai_visual.int8.onnx/layers+l2" + "_x" * 40


def test_provenance_and_reason_are_shown_as_text(server: str, tmp_path: Path) -> None:
    """The API will add ``provenance``; its answers are made up here with ``page.route``."""
    name = HOSTILE + "z" * 150 + ".png"
    declared = _row(
        name,
        verdict="fake (declared)",
        reason="its metadata declares it AI-generated",  # as the predictor words it
        model=LONG_MODEL,
        detector="builtin:clip-layers",
        provenance={
            "declared_ai": True,
            "summary": "declared AI-generated: C2PA manifest (signature valid)",
            "error": None,
            "evidence": [
                {
                    "source": "c2pa",
                    "field": "actions.digitalSourceType",
                    "value": "trainedAlgorithmicMedia" + "_" * 200,
                    "ai": True,
                    "means": "made by a generative model",
                    "signature": "valid (Example Signer)",
                },
                {
                    "source": "xmp",
                    "field": "CreatorTool",
                    "value": HOSTILE,
                    "ai": False,
                    "means": "the software that wrote the file",
                    "signature": None,
                },
            ],
        },
    )
    nothing = _row(
        "plain.png",
        verdict="uncertain",
        score=0.5,
        reason="unlike the training data",
        provenance={
            "declared_ai": False,
            "summary": "no provenance metadata found (this proves nothing)",
            "error": None,
            "evidence": [],
        },
    )
    answers = [declared, nothing, _row("old.png", verdict="real", score=0.1)]

    def answer(route: Any) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answers.pop(0)))

    with _page(server, width=700) as (page, errors):
        page.route(_is_detect, answer)
        page.set_input_files(
            "#file-input",
            files=[{"name": name, "mimeType": "image/png", "buffer": png_bytes(size=40)}],
        )
        verdict = page.locator("#verdict")
        expect(verdict).to_have_text("fake (declared)")
        expect(verdict).to_have_class("verdict fake")
        fake_colour = page.evaluate(
            "getComputedStyle(document.querySelector('#verdict')).backgroundColor"
        )
        assert fake_colour == "rgb(179, 38, 30)"
        # the words fit the verdict: fake because of the metadata, not "uncertain"
        words = page.locator("#verdict-words")
        expect(words).to_contain_text("Fake because this image's own metadata declares it")
        assert "ncertain" not in words.text_content()
        assert "not to be trusted" not in words.text_content()
        expect(page.locator("#file-name")).to_have_text("· " + name)
        expect(page.locator("#details")).to_contain_text("detector builtin:clip-layers")
        expect(page.locator("#details")).to_have_attribute("title", "Model: " + LONG_MODEL)
        assert LONG_MODEL not in page.locator("#details").text_content()
        prov = page.locator("#provenance")
        expect(prov).to_be_visible()
        expect(page.locator("#provenance-summary")).to_have_text(
            "declared AI-generated: C2PA manifest (signature valid)"
        )
        items = page.locator("#provenance-evidence li")
        expect(items).to_have_count(2)
        expect(items.nth(0)).to_contain_text("C2PA")
        expect(items.nth(0)).to_contain_text("made by a generative model")
        expect(items.nth(0)).to_contain_text("trainedAlgorithmicMedia")
        expect(items.nth(0)).to_contain_text("signature: valid (Example Signer)")
        expect(items.nth(1)).to_contain_text("XMP")
        expect(items.nth(1).locator("code")).to_have_text(HOSTILE)
        # attacker-controlled strings are text, never markup
        assert page.locator("#result img:not(#preview-image):not(#heatmap-image)").count() == 0
        assert page.evaluate("window.pwned") is None
        assert _overflow(page, "#result") <= 0
        assert _overflow(page, "html") <= 0
        page.screenshot(path=str(tmp_path / "provenance.png"), full_page=True)

        page.set_input_files(
            "#file-input",
            files=[{"name": "plain.png", "mimeType": "image/png", "buffer": png_bytes(size=40)}],
        )
        expect(verdict).to_have_text("uncertain")
        expect(verdict).to_have_class("verdict uncertain")
        expect(page.locator("#verdict-words")).to_contain_text("unlike the training data")
        expect(page.locator("#provenance-summary")).to_have_text(
            "no provenance metadata found (this proves nothing)"
        )
        expect(page.locator("#provenance-evidence")).to_be_hidden()

        page.set_input_files(
            "#file-input",
            files=[{"name": "old.png", "mimeType": "image/png", "buffer": png_bytes(size=40)}],
        )
        expect(verdict).to_have_text("real")
        expect(prov).to_be_hidden()
    assert errors == []


API_KEY = "page-key-0123456789"


def test_page_asks_for_the_api_key_and_keeps_it_in_the_tab(
    tiny_detector: Any, tmp_path: Path
) -> None:
    """With ``--api-key`` set, the page asks for the key, refuses a wrong one, scores the file
    chosen before the key once it is accepted, keeps it for the tab only, and can forget it."""
    with (
        serving(tiny_detector, tmp_path, api_key=API_KEY) as url,
        _page(url) as (page, errors),
    ):
        form = page.locator("#key-form")
        expect(form).to_be_visible()
        expect(page.locator("#model-info")).to_contain_text("API key")

        # a file chosen before the key: refused, and kept for later
        page.set_input_files(
            "#file-input",
            files=[{"name": "early.png", "mimeType": "image/png", "buffer": png_bytes(size=64)}],
        )
        expect(page.locator("#error")).to_contain_text("needs an API key")
        expect(form).to_be_visible()

        page.fill("#api-key", "wrong-key-000000")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-status")).to_have_text("That key was not accepted.")
        expect(form).to_be_visible()
        page.fill("#api-key", "has a space")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-status")).to_contain_text("printable ASCII")

        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
        expect(form).to_be_hidden()
        expect(page.locator("#key-set")).to_be_visible()
        expect(page.locator("#model-info")).to_contain_text("tiny.safetensors")
        # the file chosen before is scored now
        expect(page.locator("#file-name")).to_have_text("· early.png")
        expect(page.locator("#verdict")).to_have_text(re.compile(r"^(fake|real|uncertain)$"))
        expect(page.locator("#error")).to_be_hidden()
        # the heatmap request carries the key too
        page.check("#heatmap-toggle")
        expect(page.locator("#heatmap-image")).to_be_visible()

        # kept in session storage (this tab), not in local storage
        assert page.evaluate("sessionStorage.getItem('fakescope.apiKey')") == API_KEY
        assert page.evaluate("localStorage.length") == 0
        page.reload()
        expect(page.locator("#model-info")).to_contain_text("tiny.safetensors")
        expect(form).to_be_hidden()

        page.click("#forget-key")
        expect(form).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('fakescope.apiKey')") is None
    assert errors == []
