"""Provenance in the rows people read: predict's output, serve's JSON and the web page.

Each kind of evidence is built in a fixture; a file that declares an AI origin reads
"fake (declared)" with its pixel score unchanged, and a file with none keeps its pixel verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from fakescope.cli import main
from fakescope.models import create_detector, save_checkpoint
from tests.provenance_fixtures import (
    SD1_PAYLOAD,
    TRAINED,
    c2pa_manifest,
    c2pa_sign,
    jpeg_with_exif,
    jpeg_with_xmp,
    make_test_signer,
    png_with_text,
    sd_watermark,
    textured_image,
    xmp_packet,
)

from .helpers import TINY_MODEL

SOFTWARE = 0x0131  # EXIF IFD0 Software


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.uncertain_band = 0.0
    det.spec.preprocessing.resize_mode = "crop"
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", det)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per kind of evidence (source name -> file), plus a plain one."""
    root = tmp_path_factory.mktemp("prov")
    img = textured_image(512)
    out = {
        "exif": jpeg_with_exif(root / "exif.jpg", img, {SOFTWARE: "Stable Diffusion"}),
        "xmp": jpeg_with_xmp(root / "iptc.jpg", img, xmp_packet(digital_source_type=TRAINED)),
        "png": png_with_text(root / "webui.png", img, {"parameters": "a cat, Steps: 20"}),
        "watermark": root / "marked.png",
        "plain": root / "plain.png",
    }
    sd_watermark(img, SD1_PAYLOAD).save(out["watermark"])
    img.save(out["plain"])
    try:
        signer = make_test_signer()
        out["c2pa"] = c2pa_sign(root / "c2pa.jpg", img, "JPEG", c2pa_manifest(TRAINED), signer)
    except ImportError:  # c2pa-python is a dependency; without it this kind is not testable
        pass
    return out


def _expected_source(kind: str) -> str:
    return {"xmp": "iptc"}.get(kind, kind)


def test_predict_rows_carry_provenance_and_declared_verdicts(
    ckpt: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "rows.jsonl"
    args = ["-q", "predict", *map(str, files.values()), "--detector", str(ckpt), "-o", str(out)]
    assert main(args) == 0
    rows = {Path(r["path"]).stem: r for r in map(json.loads, out.read_text().splitlines())}
    by_kind = {k: rows[Path(p).stem] for k, p in files.items()}
    plain = by_kind.pop("plain")
    assert plain["provenance"]["evidence"] == [] and plain["provenance"]["declared_ai"] is False
    assert (
        plain["verdict"] in ("fake", "real") and "proves nothing" in plain["provenance"]["summary"]
    )
    assert "c2pa" in by_kind, "the signed C2PA fixture could not be made"
    for kind, row in by_kind.items():
        prov = row["provenance"]
        assert prov["declared_ai"] is True, kind
        assert row["verdict"] == "fake (declared)", kind
        sources = {e["source"] for e in prov["evidence"] if e["ai"]}
        assert _expected_source(kind) in sources or kind == "xmp" and "xmp" in sources, (
            kind,
            sources,
        )
        assert 0.0 <= row["score"] <= 1.0  # the pixel score is still there
    # the same pixels without metadata score the same: provenance never moves the score
    assert by_kind["png"]["score"] == pytest.approx(plain["score"], abs=1e-6)
    # --no-provenance reads nothing and leaves the pixel verdict
    assert main([*args, "--no-provenance"]) == 0
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["provenance"] is None and r["verdict"] != "fake (declared)" for r in again)


def test_csv_and_table_show_provenance(ckpt: Path, files: dict[str, Path], tmp_path: Path, capsys):
    out = tmp_path / "rows.csv"
    path = str(files["png"])
    assert (
        main(["-q", "predict", path, "--detector", str(ckpt), "--format", "csv", "-o", str(out)])
        == 0
    )
    import csv

    (row,) = csv.DictReader(out.open())
    assert row["verdict"] == "fake (declared)" and json.loads(row["provenance"])["declared_ai"]
    assert main(["-q", "predict", path, "--detector", str(ckpt), "--format", "table"]) == 0
    text = capsys.readouterr().out
    assert "fake (declared)" in text and "provenance: declared AI-generated" in text


def test_serve_json_carries_provenance(ckpt: Path, files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fakescope.models import load_detector
    from fakescope.serve import ServeSettings, create_app

    app = create_app(load_detector(ckpt), ServeSettings(device="cpu", tmp_root=str(tmp_path)))
    with TestClient(app, base_url="http://localhost") as client:
        for kind in ("png", "c2pa", "plain"):
            if kind not in files:
                continue
            resp = client.post(
                "/v1/detect", files={"file": (files[kind].name, files[kind].read_bytes())}
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            declared = kind != "plain"
            assert body["provenance"]["declared_ai"] is declared, kind
            assert (body["verdict"] == "fake (declared)") is declared, kind


def test_the_page_shows_provenance_from_a_real_server(ckpt: Path, files: dict[str, Path], tmp_path):
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, serving

    playwright = pytest.importorskip("playwright.sync_api")
    from fakescope.models import load_detector

    with serving(load_detector(ckpt), tmp_path) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url + "/")
            page.set_input_files("#file-input", str(files["png"]))
            playwright.expect(page.locator("#verdict")).to_have_text("fake (declared)")
            playwright.expect(page.locator("body")).to_contain_text("declared AI-generated")
            page.set_input_files("#file-input", str(files["plain"]))
            playwright.expect(page.locator("#verdict")).not_to_have_text("fake (declared)")
            playwright.expect(page.locator("body")).to_contain_text("proves nothing")
        finally:
            browser.close()


def test_in_memory_images_have_no_provenance(ckpt: Path) -> None:
    import fakescope

    (row,) = fakescope.predict([Image.new("RGB", (40, 40))], detector=ckpt)
    assert row.provenance is None and row.verdict in ("fake", "real")


def test_video_rows_carry_no_false_provenance_error(ckpt: Path, tmp_path: Path) -> None:
    """A video is read for C2PA only: the image readers not applying to it is no error."""
    from .serve_helpers import mp4_codec, write_mp4

    if mp4_codec() is None:
        pytest.skip("no H.264 or MPEG-4 encoder in PyAV")
    clip = write_mp4(tmp_path / "clip.mp4")
    out = tmp_path / "rows.jsonl"
    assert main(["-q", "predict", str(clip), "--detector", str(ckpt), "-o", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["kind"] == "video" and row["error"] is None
    prov = row["provenance"]
    assert prov["error"] is None, prov["error"]
    assert prov["declared_ai"] is False and prov["evidence"] == []
    assert (
        prov["summary"].startswith("no C2PA manifest found") and "proves nothing" in prov["summary"]
    )
