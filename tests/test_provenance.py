"""Provenance evidence: C2PA, IPTC/XMP, EXIF, PNG text and Stable Diffusion's watermark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from fakescope.provenance import (
    C2PA_TRUST_ANCHORS_ENV,
    MAX_VALUE_CHARS,
    Evidence,
    Provenance,
    read_provenance,
    reader,
    vocabulary,
    watermark,
)
from tests.provenance_fixtures import (
    IPTC_TYPES,
    SD1_PAYLOAD,
    SDXL_BITS,
    TRAINED,
    c2pa_manifest,
    c2pa_sign,
    embed_dwtdct_port,
    jpeg_with_exif,
    jpeg_with_xmp,
    make_test_signer,
    png_with_text,
    sd_watermark,
    textured_image,
    xmp_packet,
)

NOTHING = "no provenance metadata found (this proves nothing)"


def only(result: Provenance, source: str) -> list[Evidence]:
    """The evidence items from one source."""
    return [item for item in result.evidence if item.source == source]


# --------------------------------------------------------------------------------------------
# Plain, broken and odd files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_plain_file_has_no_evidence_and_says_absence_proves_nothing(tmp_path, fmt):
    path = tmp_path / f"plain.{fmt.lower()}"
    textured_image(512).save(path, fmt)
    result = read_provenance(path)
    assert result.evidence == []
    assert result.declared_ai is False
    assert result.summary == NOTHING
    assert result.error is None
    assert json.loads(json.dumps(result.to_dict())) == {
        "declared_ai": False,
        "evidence": [],
        "summary": NOTHING,
        "error": None,
    }


def test_garbage_file_never_raises_and_reports_the_failure(tmp_path):
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" + bytes(range(256)) * 4)
    result = read_provenance(path)
    assert result.declared_ai is False
    assert result.evidence == []
    assert result.error is not None and "image:" in result.error
    assert result.summary == NOTHING


def test_truncated_jpeg_keeps_its_header_evidence(tmp_path):
    path = jpeg_with_exif(tmp_path / "full.jpg", textured_image(512), {0x0131: "Midjourney"})
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[:3000])
    result = read_provenance(cut)
    assert result.declared_ai is True  # the EXIF block sits before the cut
    assert [(i.field, i.means) for i in only(result, "exif")] == [
        ("Software", "names a generator (Midjourney)")
    ]
    assert result.error is not None and "watermark:" in result.error  # pixels are cut off


def _empty_file(folder: Path) -> Path:
    (folder / "empty.png").write_bytes(b"")
    return folder / "empty.png"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda folder: folder / "missing.png", "file not found"),
        (lambda folder: folder, "is a directory, not a file"),
        (_empty_file, "empty file (0 bytes)"),
    ],
)
def test_unreadable_paths_give_an_error_not_an_exception(tmp_path, make, expected):
    result = read_provenance(make(tmp_path))
    assert result.error == expected
    assert result.evidence == [] and result.declared_ai is False
    assert result.summary == f"provenance could not be read ({expected})"


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    result = read_provenance(path)
    assert result.evidence == []
    assert result.error == "image: not a recognised image format"


def test_read_provenance_never_raises_even_when_a_reader_breaks(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    textured_image(300).save(path)

    def boom(*args):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(reader, "_read_image", boom)
    result = read_provenance(path)
    assert result.error == "image: simulated failure"
    monkeypatch.setattr(reader, "_read", boom)
    result = read_provenance(path)
    assert result.error == "could not read provenance: simulated failure"
    assert result.declared_ai is False


# --------------------------------------------------------------------------------------------
# EXIF
# --------------------------------------------------------------------------------------------


def test_exif_software_naming_a_generator(tmp_path):
    path = jpeg_with_exif(
        tmp_path / "sd.jpg", textured_image(128), {0x0131: "Stable Diffusion XL 1.0 (ComfyUI)"}
    )
    result = read_provenance(path)
    assert result.declared_ai is True
    assert [item.to_dict() for item in result.evidence] == [
        {
            "source": "exif",
            "field": "Software",
            "value": "Stable Diffusion XL 1.0 (ComfyUI)",
            "ai": True,
            "means": "names a generator (Stable Diffusion)",
            "signature": None,
        }
    ]
    assert result.summary == "declared AI-generated: EXIF Software names Stable Diffusion"
    assert result.error is None


def test_exif_software_of_an_editor_is_reported_but_not_ai(tmp_path):
    path = jpeg_with_exif(tmp_path / "gimp.jpg", textured_image(64), {0x0131: "GIMP 2.10.36"})
    result = read_provenance(path)
    assert result.declared_ai is False
    (item,) = result.evidence
    assert (item.source, item.field, item.value, item.ai) == (
        "exif",
        "Software",
        "GIMP 2.10.36",
        False,
    )
    assert item.means == "names the software that wrote the file"
    assert result.summary == (
        "no AI declaration found; metadata present: EXIF Software (GIMP 2.10.36) "
        "(this proves nothing)"
    )


def test_webui_parameters_in_exif_user_comment(tmp_path):
    text = (
        "a red apple\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    )
    path = jpeg_with_exif(
        tmp_path / "webui.jpg",
        textured_image(64),
        {},
        user_comment=b"UNICODE\x00" + text.encode("utf-16-be"),
    )
    (item,) = read_provenance(path).evidence
    assert (item.source, item.field, item.ai) == ("exif", "UserComment", True)
    assert item.value == " ".join(text.split())
    assert item.means == "carries generation parameters written by Stable Diffusion WebUI"


def test_comfyui_workflow_in_webp_exif(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps({"nodes": [{"type": "KSampler"}]})
    exif[0x0110] = "prompt:" + json.dumps({"3": {"class_type": "KSampler"}})
    textured_image(64).save(tmp_path / "c.webp", exif=exif.tobytes())
    result = read_provenance(tmp_path / "c.webp")
    assert [(i.source, i.field, i.ai, i.means) for i in result.evidence] == [
        ("exif", "Make", True, "carries generation metadata written by ComfyUI"),
        ("exif", "Model", True, "carries generation metadata written by ComfyUI"),
    ]


def test_exif_user_comment_without_parameters_is_ignored(tmp_path):
    path = jpeg_with_exif(
        tmp_path / "note.jpg", textured_image(64), {}, user_comment=b"ASCII\x00\x00\x00holiday"
    )
    assert read_provenance(path).evidence == []


@pytest.mark.parametrize(
    ("text", "generator"),
    [
        ("DALL·E 3", "DALL-E"),
        ("dall-e", "DALL-E"),
        ("Adobe Firefly Image 3", "Adobe Firefly"),
        ("AUTOMATIC1111 stable-diffusion-webui", "Stable Diffusion"),
        ("NovelAI", "NovelAI"),
        ("ChatGPT", "OpenAI"),
        ("GPT-4o", "OpenAI"),
        ("Midjourney v6", "Midjourney"),
        ("FLUX.1 [dev]", "Flux"),
        ("Made with Google AI", "Google Gemini"),
        ("Leonardo.Ai", "Leonardo.Ai"),
        ("Ideogram", "Ideogram"),
        ("InvokeAI 4.2", "InvokeAI"),
        ("Fooocus 2.5", "Fooocus"),
        ("Craiyon", "Craiyon"),
        ("Imagen 3", "Imagen"),
    ],
)
def test_generator_names(text, generator):
    assert vocabulary.generator_named(text) == generator


@pytest.mark.parametrize(
    "text",
    [
        "Adobe Photoshop 25.0 (Windows)",
        "GIMP 2.10",
        "Imagenomic Portraiture",
        "Fluxus",
        "darktable",
    ],
)
def test_ordinary_software_is_not_a_generator(text):
    assert vocabulary.generator_named(text) is None


# --------------------------------------------------------------------------------------------
# XMP: IPTC digital source type and software
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_attributes", [False, True])
def test_iptc_digital_source_type_in_jpeg_xmp(tmp_path, as_attributes):
    packet = xmp_packet(TRAINED, creator_tool="Adobe Firefly", as_attributes=as_attributes)
    result = read_provenance(jpeg_with_xmp(tmp_path / "ai.jpg", textured_image(64), packet))
    assert result.declared_ai is True
    assert [item.to_dict() for item in result.evidence] == [
        {
            "source": "iptc",
            "field": "Iptc4xmpExt:DigitalSourceType",
            "value": TRAINED,
            "ai": True,
            "means": "declares AI generation (trained algorithmic media)",
            "signature": None,
        },
        {
            "source": "xmp",
            "field": "xmp:CreatorTool",
            "value": "Adobe Firefly",
            "ai": True,
            "means": "names a generator (Adobe Firefly)",
            "signature": None,
        },
    ]
    assert result.summary == (
        "declared AI-generated: IPTC digital source type, XMP xmp:CreatorTool names Adobe Firefly"
    )


def test_iptc_digital_source_type_in_png_itxt(tmp_path):
    packet = xmp_packet(IPTC_TYPES + "compositeWithTrainedAlgorithmicMedia").decode()
    path = png_with_text(
        tmp_path / "ai.png",
        textured_image(64),
        {"XML:com.adobe.xmp": packet},
        itxt={"XML:com.adobe.xmp"},
    )
    result = read_provenance(path)
    (item,) = result.evidence
    assert (item.source, item.ai) == ("iptc", True)
    assert item.means == "declares a composite that includes AI-generated elements"
    assert result.summary == "declared AI-generated: IPTC digital source type"


def test_camera_capture_source_type_and_editor_history_are_not_ai(tmp_path):
    packet = xmp_packet(
        IPTC_TYPES + "digitalCapture",
        creator_tool="Adobe Lightroom Classic 13.0",
        history_agent="Adobe Photoshop 25.0",
    )
    result = read_provenance(jpeg_with_xmp(tmp_path / "cam.jpg", textured_image(64), packet))
    assert result.declared_ai is False
    assert [(i.source, i.field, i.value, i.ai, i.means) for i in result.evidence] == [
        (
            "iptc",
            "Iptc4xmpExt:DigitalSourceType",
            IPTC_TYPES + "digitalCapture",
            False,
            "declares a capture by a digital camera",
        ),
        (
            "xmp",
            "xmp:CreatorTool",
            "Adobe Lightroom Classic 13.0",
            False,
            "names the software that wrote the file",
        ),
        (
            "xmp",
            "stEvt:softwareAgent",
            "Adobe Photoshop 25.0",
            False,
            "names software in the edit history",
        ),
    ]
    assert result.summary.startswith("no AI declaration found; metadata present: ")
    assert result.summary.endswith("(this proves nothing)")


def test_generator_in_xmp_edit_history(tmp_path):
    packet = xmp_packet(history_agent="Adobe Firefly")
    (item,) = read_provenance(
        jpeg_with_xmp(tmp_path / "h.jpg", textured_image(64), packet)
    ).evidence
    assert (item.field, item.ai, item.means) == (
        "stEvt:softwareAgent",
        True,
        "names a generator (Adobe Firefly)",
    )


def test_malformed_xmp_is_an_error_not_an_exception(tmp_path):
    path = jpeg_with_xmp(tmp_path / "bad.jpg", textured_image(64), b"<x:xmpmeta><unclosed>")
    result = read_provenance(path)
    assert result.evidence == []
    assert result.error is not None and result.error.startswith("xmp: ")


# --------------------------------------------------------------------------------------------
# PNG text chunks
# --------------------------------------------------------------------------------------------


def test_webui_parameters_chunk(tmp_path):
    text = (
        "an astronaut riding a horse\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x512"
    )
    result = read_provenance(
        png_with_text(tmp_path / "a.png", textured_image(64), {"parameters": text})
    )
    assert result.declared_ai is True
    (item,) = result.evidence
    assert (item.source, item.field, item.ai) == ("png", "parameters", True)
    assert item.value == " ".join(text.split())
    assert item.means == "carries generation metadata written by Stable Diffusion WebUI"
    assert result.summary == "declared AI-generated: PNG 'parameters' generation metadata"


def test_comfyui_prompt_and_workflow_chunks(tmp_path):
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}}
    workflow = {"nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    chunks = {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)}
    result = read_provenance(png_with_text(tmp_path / "c.png", textured_image(64), chunks))
    assert result.declared_ai is True
    assert [(i.source, i.field, i.ai, i.means) for i in result.evidence] == [
        ("png", "prompt", True, "carries generation metadata written by ComfyUI"),
        ("png", "workflow", True, "carries generation metadata written by ComfyUI"),
    ]
    assert len(result.evidence[1].value) <= MAX_VALUE_CHARS


def test_long_values_are_shortened_to_200_characters(tmp_path):
    chunks = {"workflow": json.dumps({"nodes": list(range(2000))})}
    (item,) = read_provenance(
        png_with_text(tmp_path / "w.png", textured_image(64), chunks)
    ).evidence
    assert len(item.value) == 200 and item.value.endswith("…")


def test_invokeai_and_novelai_chunks(tmp_path):
    invoke = png_with_text(
        tmp_path / "i.png",
        textured_image(64),
        {"invokeai_metadata": json.dumps({"positive_prompt": "a cat", "steps": 30})},
    )
    (item,) = read_provenance(invoke).evidence
    assert (item.field, item.ai, item.means) == (
        "invokeai_metadata",
        True,
        "carries generation metadata written by InvokeAI",
    )
    comment = {"prompt": "a cat", "steps": 28, "sampler": "k_euler", "seed": 7, "uc": "lowres"}
    novel = png_with_text(
        tmp_path / "n.png",
        textured_image(64),
        {"Software": "NovelAI", "Source": "NovelAI Diffusion V3", "Comment": json.dumps(comment)},
    )
    result = read_provenance(novel)
    assert [(i.field, i.ai, i.means) for i in result.evidence] == [
        ("Software", True, "names a generator (NovelAI)"),
        ("Source", True, "names a generator (NovelAI)"),
        ("Comment", True, "carries generation parameters written by NovelAI"),
    ]


def test_ordinary_png_text_is_not_ai(tmp_path):
    chunks = {"Comment": "Created with GIMP", "Software": "Inkscape 1.3", "Title": "cat"}
    result = read_provenance(png_with_text(tmp_path / "g.png", textured_image(64), chunks))
    assert [(i.field, i.value, i.ai) for i in result.evidence] == [
        ("Software", "Inkscape 1.3", False)
    ]


# --------------------------------------------------------------------------------------------
# Stable Diffusion's invisible watermark
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "order", "name"),
    [
        (SD1_PAYLOAD, "BGR", "Stable Diffusion 1.x"),
        (b"SDV2", "BGR", "Stable Diffusion 2.x"),
        (SDXL_BITS, "BGR", "Stable Diffusion XL"),
        (SDXL_BITS, "RGB", "Stable Diffusion XL"),  # diffusers' SDXL watermarker
    ],
)
def test_sd_watermark_is_detected_and_the_same_image_without_it_is_not(
    tmp_path, payload, order, name
):
    clean = textured_image(512, seed=3)
    clean.save(tmp_path / "clean.png")
    sd_watermark(clean, payload, order).save(tmp_path / "marked.png")

    marked = read_provenance(tmp_path / "marked.png")
    assert marked.declared_ai is True
    (item,) = marked.evidence
    assert (item.source, item.ai) == ("watermark", True)
    assert item.means == f"carries Stable Diffusion's invisible watermark ({name})"
    assert item.value.startswith(f"{name} payload, 0 of ")  # pristine texture keeps every bit
    assert item.value.endswith(f", {order} channel order)")
    assert marked.summary == "declared AI-generated: Stable Diffusion invisible watermark"

    assert read_provenance(tmp_path / "clean.png").evidence == []
    assert read_provenance(tmp_path / "marked.png", watermark=False).evidence == []


def test_sd_watermark_survives_lossless_formats_and_high_quality_444_jpeg(tmp_path):
    marked = sd_watermark(textured_image(768, seed=4), SD1_PAYLOAD)
    marked.save(tmp_path / "m.webp", lossless=True)
    marked.save(tmp_path / "m.jpg", quality=95, subsampling=0)
    for name in ("m.webp", "m.jpg"):
        (item,) = read_provenance(tmp_path / name).evidence
        assert item.means == "carries Stable Diffusion's invisible watermark (Stable Diffusion 1.x)"


def test_sd_watermark_on_a_non_square_image(tmp_path):
    marked = sd_watermark(textured_image(640, seed=5).crop((0, 0, 640, 404)), SDXL_BITS, "RGB")
    marked.save(tmp_path / "wide.png")
    (item,) = read_provenance(tmp_path / "wide.png").evidence
    assert item.means == "carries Stable Diffusion's invisible watermark (Stable Diffusion XL)"


def _photos() -> list[tuple[str, Image.Image]]:
    from skimage import data

    photos = [(n, Image.fromarray(getattr(data, n)())) for n in ("astronaut", "coffee", "chelsea")]
    photos += [(n, Image.fromarray(getattr(data, n)()).convert("RGB")) for n in ("camera", "moon")]
    rng = np.random.default_rng(0)
    photos.append(("noise", Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))))
    photos.append(("grey", Image.new("RGB", (512, 512), (128, 128, 128))))
    photos.append(("red", Image.new("RGB", (400, 400), (200, 30, 30))))
    photos += [(f"textured{s}", textured_image(512, seed=s)) for s in range(6)]
    return photos


def test_no_watermark_false_positives_on_photos_noise_and_flat_images(tmp_path):
    for name, img in _photos():
        path = tmp_path / f"{name}.png"
        img.save(path)
        result = read_provenance(path)
        assert result.evidence == [], name
        # And none is near a match: every payload misses by more than the allowance plus 2.
        rgb = np.asarray(img.convert("RGB"))
        for order in ("RGB", "BGR"):
            votes = watermark._decode_dwtdct_blocks(rgb, order)
            for mark in watermark._WATERMARKS:
                assert watermark._bit_errors(votes, mark.bits) > mark.max_errors + 2, name


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_u_channel_is_opencvs_bit_for_bit(order: str) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    px = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    px[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]] + [
        [1, 2, 3]
    ] * 3
    code = cv2.COLOR_BGR2YUV if order == "BGR" else cv2.COLOR_RGB2YUV
    np.testing.assert_array_equal(watermark.yuv_u(px, order), cv2.cvtColor(px, code)[..., 1])


def test_small_images_are_not_checked_for_the_watermark(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(watermark, "_decode_dwtdct_blocks", lambda *a: calls.append(a))
    textured_image(200).save(tmp_path / "small.png")  # 40,000 pixels, under 256x256
    assert read_provenance(tmp_path / "small.png").evidence == []
    assert calls == []


def test_big_images_are_not_decoded_for_the_watermark(tmp_path, monkeypatch):
    monkeypatch.setattr(watermark, "WATERMARK_MAX_PIXELS", 300 * 300)
    textured_image(400).save(tmp_path / "big.png")

    def must_not_load(self, *args):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_load)
    monkeypatch.setattr(Image.Image, "convert", must_not_load)
    result = read_provenance(tmp_path / "big.png")
    assert result.evidence == [] and result.error is None


def test_png_text_after_the_pixels_is_read_when_the_pixels_are_decoded(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, Seed: 1", zip=False)
    path = tmp_path / "late.png"
    textured_image(300).save(path, pnginfo=info)
    data = path.read_bytes()
    # Move the tEXt chunk behind the image data, where some tools put it.
    start = data.index(b"tEXt") - 4
    length = int.from_bytes(data[start : start + 4], "big") + 12
    chunk, rest = data[start : start + length], data[:start] + data[start + length :]
    iend = rest.index(b"IEND") - 4
    path.write_bytes(rest[:iend] + chunk + rest[iend:])

    assert read_provenance(path, watermark=False).evidence == []  # header only
    (item,) = read_provenance(path).evidence
    assert (item.field, item.ai) == ("parameters", True)


def test_vectorised_decoder_matches_invisible_watermark_bit_for_bit():
    imwatermark = pytest.importorskip("imwatermark")
    rng = np.random.default_rng(7)
    images = [
        np.asarray(textured_image(512, seed=1)),
        rng.integers(0, 256, (300, 517, 3), dtype=np.uint8),
        np.asarray(sd_watermark(textured_image(520, seed=2), SD1_PAYLOAD)),
    ]
    for rgb in images:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        blocks = ((bgr.shape[0] // 4 * 4) // 8) * ((bgr.shape[1] // 4 * 4) // 8)
        expected = imwatermark.WatermarkDecoder("bits", blocks).decode(bgr, "dwtDct")
        ours = watermark._decode_dwtdct_blocks(bgr)
        np.testing.assert_array_equal(ours, np.asarray(expected, dtype=np.uint8))


def test_encoder_port_in_the_fixtures_matches_invisible_watermark():
    imwatermark = pytest.importorskip("imwatermark")
    bgr = np.ascontiguousarray(np.asarray(textured_image(512, seed=9))[:, :, ::-1])
    bits = list(np.unpackbits(np.frombuffer(SD1_PAYLOAD, dtype=np.uint8)))
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bits", bits)
    np.testing.assert_array_equal(
        embed_dwtdct_port(bgr.copy(), bits), encoder.encode(bgr.copy(), "dwtDct")
    )


# --------------------------------------------------------------------------------------------
# C2PA
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer():
    pytest.importorskip("c2pa")
    return make_test_signer()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_c2pa_manifest_declaring_ai_is_detected_with_an_honest_signature_status(
    tmp_path, signer, fmt, monkeypatch
):
    monkeypatch.delenv(C2PA_TRUST_ANCHORS_ENV, raising=False)
    path = c2pa_sign(
        tmp_path / f"signed.{fmt.lower()}",
        textured_image(128),
        fmt,
        c2pa_manifest(TRAINED),
        signer,
    )
    result = read_provenance(path)
    assert result.declared_ai is True
    assert result.error is None
    items = {item.field: item for item in only(result, "c2pa")}
    assert set(items) == {
        "claim_generator",
        "c2pa.actions: c2pa.created digitalSourceType",
        "c2pa.actions",
        "signature_info",
    }
    declared = items["c2pa.actions: c2pa.created digitalSourceType"]
    assert (declared.value, declared.ai) == (TRAINED, True)
    assert declared.means == "declares AI generation (trained algorithmic media)"
    # Signed correctly, but by a CA nobody trusts: valid signature, unverified signer.
    assert {item.signature for item in result.evidence} == {"unverified (untrusted certificate)"}
    assert items["claim_generator"].value == "fakescope-test-generator 1.0"
    assert items["claim_generator"].ai is False
    assert items["c2pa.actions"].value == "c2pa.created"
    assert "signer fakescope test signer" in items["signature_info"].value
    assert result.summary == (
        "declared AI-generated: C2PA manifest (signed with an untrusted certificate)"
    )


def test_c2pa_signature_is_valid_when_the_ca_is_a_trust_anchor(tmp_path, signer, monkeypatch):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signer.ca_pem)
    monkeypatch.setenv(C2PA_TRUST_ANCHORS_ENV, str(anchors))
    path = c2pa_sign(
        tmp_path / "t.jpg", textured_image(128), "JPEG", c2pa_manifest(TRAINED), signer
    )
    result = read_provenance(path)
    assert {item.signature for item in result.evidence} == {"valid"}
    assert result.summary == "declared AI-generated: C2PA manifest (signature valid)"


def test_c2pa_tampered_file_is_invalid(tmp_path, signer, monkeypatch):
    monkeypatch.delenv(C2PA_TRUST_ANCHORS_ENV, raising=False)
    path = c2pa_sign(
        tmp_path / "s.jpg", textured_image(128), "JPEG", c2pa_manifest(TRAINED), signer
    )
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF  # flip pixel data that the manifest's hash covers
    path.write_bytes(bytes(data))
    result = read_provenance(path, watermark=False)
    assert result.declared_ai is True  # the claim is still there, but its signature says no
    (signature,) = {item.signature for item in result.evidence}
    assert signature.startswith("invalid: assertion.dataHash.mismatch")
    assert result.summary == "declared AI-generated: C2PA manifest (signature invalid)"


def test_c2pa_camera_capture_is_not_ai(tmp_path, signer, monkeypatch):
    monkeypatch.delenv(C2PA_TRUST_ANCHORS_ENV, raising=False)
    manifest = c2pa_manifest(IPTC_TYPES + "digitalCapture", generator="Example Camera App")
    path = c2pa_sign(tmp_path / "cam.jpg", textured_image(128), "JPEG", manifest, signer)
    result = read_provenance(path)
    assert result.declared_ai is False
    capture = [i for i in result.evidence if i.field.endswith("digitalSourceType")]
    assert [(i.ai, i.means, i.signature) for i in capture] == [
        (False, "declares a capture by a digital camera", "unverified (untrusted certificate)")
    ]
    assert result.summary == (
        "no AI declaration found; metadata present: C2PA manifest (signed with an untrusted "
        "certificate) (this proves nothing)"
    )


def test_c2pa_generator_named_as_claim_generator(tmp_path, signer):
    manifest = c2pa_manifest(IPTC_TYPES + "digitalCreation", generator="ChatGPT")
    path = c2pa_sign(tmp_path / "g.png", textured_image(128), "PNG", manifest, signer)
    result = read_provenance(path)
    assert result.declared_ai is True
    (named,) = [i for i in result.evidence if i.ai]
    assert (named.field, named.value, named.means) == (
        "claim_generator",
        "ChatGPT 1.0",
        "names a generator (OpenAI)",
    )


def test_c2pa_remote_manifest_is_reported_and_not_fetched(tmp_path, signer):
    path = c2pa_sign(
        tmp_path / "r.jpg",
        textured_image(128),
        "JPEG",
        c2pa_manifest(TRAINED),
        signer,
        remote_url="http://127.0.0.1:9/manifest.c2pa",
    )
    result = read_provenance(path)
    assert result.error is None
    assert [(i.source, i.field, i.value, i.ai) for i in result.evidence] == [
        ("c2pa", "remote manifest", "http://127.0.0.1:9/manifest.c2pa", False)
    ]
    assert result.evidence[0].signature == "not checked (remote manifest)"


def test_unreadable_trust_anchor_file_is_an_error(tmp_path, signer, monkeypatch):
    monkeypatch.setenv(C2PA_TRUST_ANCHORS_ENV, str(tmp_path / "missing.pem"))
    path = c2pa_sign(
        tmp_path / "s.jpg", textured_image(128), "JPEG", c2pa_manifest(TRAINED), signer
    )
    result = read_provenance(path)
    assert result.declared_ai is True
    assert result.error is not None and "cannot read trust anchors" in result.error


# --------------------------------------------------------------------------------------------
# Several sources at once, and the development data
# --------------------------------------------------------------------------------------------


def test_evidence_from_several_sources_is_summarised_in_order(tmp_path):
    exif = Image.Exif()
    exif[0x0131] = "Midjourney"
    textured_image(64).save(tmp_path / "both.jpg", exif=exif.tobytes(), xmp=xmp_packet(TRAINED))
    result = read_provenance(tmp_path / "both.jpg")
    sources = [i.source for i in result.evidence]
    if "iptc" not in sources:  # Pillow < 11 cannot write XMP into a JPEG
        pytest.skip("this Pillow does not write JPEG XMP")
    assert sources == ["exif", "iptc"]
    assert result.summary == (
        "declared AI-generated: EXIF Software names Midjourney, IPTC digital source type"
    )


@pytest.mark.shared
def test_real_photos_of_the_development_set_declare_nothing(shared_data: Path):
    reals = sorted((shared_data / "real").glob("*.jpg"))[:150]
    assert reals
    for path in reals:
        result = read_provenance(path)
        assert result.declared_ai is False, (path.name, result.summary)
        assert only(result, "watermark") == []
