"""Built-in detectors: found by name, clear errors, and the shipped CLIP probes on real weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

import fakescope
from fakescope.models import load_detector
from fakescope.models.header import read_meta
from fakescope.models.novelty import REASON
from fakescope.zoo import BUILTINS, DEFAULT_DETECTOR, detector_file

from .helpers import run_into_a_closed_pipe

CLIP_FILE = "clip_vit_b16_openai_visual.int8.onnx"


def test_builtin_files_ship_with_the_package() -> None:
    assert DEFAULT_DETECTOR.removeprefix("builtin:") in BUILTINS
    for name in BUILTINS:
        meta = read_meta(detector_file(f"builtin:{name}"))
        spec = meta["spec"]
        assert spec["kind"] == "probe" and spec["model_kwargs"]["l2"] is True
        assert spec["calibration"]["method"] == "platt"
        assert spec["model_kwargs"]["novelty"]["n"] > 100  # the out-of-depth guard ships too
        assert meta["bench"]["recipe"]["name"]  # the recipe that built it travels with it
        assert meta["bench"]["protocol"]["modern"] > 0.5  # and its protocol row
        text = json.dumps(meta)
        assert "/work/" not in text and "/tmp/" not in text  # no personal absolute paths shipped


def test_unknown_builtin_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="clip-layers"):
        load_detector("builtin:nope")


def test_a_builtin_name_without_its_prefix_suggests_it(tmp_path, monkeypatch, capsys) -> None:
    """``--detector clip-layers`` is no file: the error names the file and suggests
    ``builtin:clip-layers``; a name that is no built-in's gets no suggestion."""
    from fakescope.cli import main

    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    for given, builtin in (
        ("clip-layers", "builtin:clip-layers"),
        ("clip_baseline.safetensors", "builtin:clip-baseline"),
    ):
        assert main(["predict", str(photo), "--detector", given]) == 1
        err = capsys.readouterr().err
        assert f"{given}: checkpoint file not found" in err and f"pass {builtin}" in err
        assert main(["info", given]) == 1
        assert f"pass {builtin}" in capsys.readouterr().err
    assert main(["info", "mine.safetensors"]) == 1
    err = capsys.readouterr().err
    assert "mine.safetensors: checkpoint file not found" in err and "builtin:" not in err


def test_builtin_without_backbone_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="FAKESCOPE_WEIGHTS"):
        load_detector(DEFAULT_DETECTOR)


# --------------------------------------------------------------------------------------------
# On the real CLIP tower (skipped without ../shared/weights)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clip_weights(shared_weights, monkeypatch):
    if not (shared_weights / CLIP_FILE).is_file():
        pytest.skip("CLIP ONNX not in the shared weights")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shared_weights))
    return shared_weights


def photos() -> dict[str, Image.Image]:
    import skimage.data as sk

    return {n: Image.fromarray(getattr(sk, n)()) for n in ("astronaut", "coffee", "chelsea")}


def far_away() -> dict[str, Image.Image]:
    """Inputs unlike anything the built-ins learnt from: sky, text, flat colour, micrographs."""
    import skimage.data as sk

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    sky = np.zeros((512, 512))
    for _ in range(150):  # a star field: point sources on black
        y, x = rng.integers(0, 512, 2)
        sky += rng.uniform(80, 255) * np.exp(
            -((yy - y) ** 2 + (xx - x) ** 2) / (2 * rng.uniform(0.6, 2) ** 2)
        )
    stars = np.clip(np.stack([sky, sky * 0.95, sky * 0.9], -1), 0, 255).astype(np.uint8)
    text = Image.new("RGB", (800, 500), "white")
    draw = ImageDraw.Draw(text)
    for i in range(20):
        draw.text(
            (10, 10 + 24 * i), f"{i}: The quick brown fox jumps over the lazy dog.", fill="black"
        )
    return {
        "star field": Image.fromarray(stars),
        "Hubble deep field": Image.fromarray(sk.hubble_deep_field()),
        "Hubble deep field, JPEG q75": jpeg(Image.fromarray(sk.hubble_deep_field()), 75),
        "text screenshot": text,
        "scanned page": Image.fromarray(sk.page()).convert("RGB"),
        "flat grey": Image.new("RGB", (512, 512), (128, 128, 128)),
        "flat blue": Image.new("RGB", (512, 512), (30, 60, 200)),
        "fluorescence micrograph": fluorescence(rng),
    }


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """``img`` as a user would have it: saved as JPEG and opened again."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def fluorescence(rng: np.random.Generator) -> Image.Image:
    """Stained nuclei on black, as a fluorescence microscope shows them."""
    yy, xx = np.mgrid[0:512, 0:512]
    img = np.zeros((512, 512, 3))
    for _ in range(60):
        y, x = rng.integers(0, 512, 2)
        r = rng.uniform(8, 18)
        blob = np.exp(-((((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r)) ** 2))
        img += blob[..., None] * np.array([20, rng.uniform(120, 230), rng.uniform(40, 120)])
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.shared
def test_default_builtin_flags_far_away_inputs_as_uncertain(clip_weights) -> None:
    det = load_detector(DEFAULT_DETECTOR)
    far = far_away()
    rows = fakescope.predict(list(far.values()), detector=det)
    for name, row in zip(far, rows, strict=True):
        assert row.verdict == "uncertain", f"{name}: {row}"
        assert row.reason == REASON and row.novelty > det.novelty_threshold, name
    for name, row in zip(
        photos(), fakescope.predict(list(photos().values()), detector=det), strict=True
    ):
        assert row.reason is None and row.verdict in ("real", "fake", "uncertain"), name


@pytest.mark.shared
def test_default_builtin_scores_alone_and_in_a_batch_the_same(clip_weights) -> None:
    det = load_detector(DEFAULT_DETECTOR)
    imgs = [*photos().values(), *far_away().values()]
    alone = [fakescope.predict(im, detector=det)[0].score for im in imgs[:3]]
    batch = fakescope.predict(imgs, detector=det, batch_size=len(imgs))
    assert [r.score for r in batch[:3]] == alone


@pytest.mark.shared
def test_default_builtin_on_dev_images_is_rarely_out_of_depth(clip_weights, shared_data) -> None:
    import pandas as pd

    dev = shared_data
    df = pd.read_csv(dev / "manifest.csv").sample(40, random_state=0)
    rows = fakescope.predict([str(dev / p) for p in df["path"]], detector=DEFAULT_DETECTOR)
    assert sum(r.reason is not None for r in rows) <= 1
    right = sum(r.verdict == lab for r, lab in zip(rows, df["label"], strict=True))
    assert right >= 36  # 90% of 40 on the set it was trained beside


@pytest.mark.shared
def test_baseline_builtin_runs(clip_weights) -> None:
    rows = fakescope.predict(photos()["coffee"], detector="builtin:clip-baseline")
    assert rows[0].model.startswith("probe:clip_vit_b16") and 0.0 <= rows[0].score <= 1.0
    assert rows[0].detector == "builtin:clip-baseline"  # the name people know


def test_builtins_are_named_and_described_in_words() -> None:
    from fakescope.zoo import describe, display_name

    for name in BUILTINS:
        ref = f"builtin:{name}"
        assert display_name(ref) == ref
        about = describe(ref)
        assert about and "CLIP ViT-B/16" in about and "dev set" not in about and ";" not in about
    assert display_name("runs/x/best.safetensors") == "best.safetensors"
    assert describe("runs/x/best.safetensors") is None


def test_info_reads_a_builtin(capsys) -> None:
    from fakescope.cli import main

    assert main(["info", DEFAULT_DETECTOR]) == 0
    assert json.loads(capsys.readouterr().out)["bench"]["builtin"] == "clip-layers"


@pytest.mark.parametrize("args", [("info", DEFAULT_DETECTOR), ("models", "--all")])
def test_a_closed_stdout_ends_quietly(args: tuple[str, ...]) -> None:
    code, err = run_into_a_closed_pipe(*args)
    assert code == 141, err  # 128 + SIGPIPE, as Unix tools end
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


@pytest.mark.shared
def test_default_builtin_exports_to_one_onnx_file_with_the_same_scores(
    clip_weights, tmp_path
) -> None:
    """The exported default (tower, features and head in one graph) scores as the detector does."""
    from fakescope.models.onnx_export import export_onnx

    det = load_detector(DEFAULT_DETECTOR)
    exported = load_detector(export_onnx(det, tmp_path / "default.onnx"))
    imgs = list(photos().values()) + [far_away()["flat grey"]]
    want = [r.score for r in fakescope.predict(imgs, detector=det)]
    got = [r.score for r in fakescope.predict(imgs, detector=exported)]
    np.testing.assert_allclose(got, want, atol=1e-4)
