"""fakescope adapt: a probe learns a new generator from a few examples, measures itself, refuses
to make things worse, records where it came from, and names the files it could not read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.cli import main
from fakescope.embed.backbones import OnnxBackbone
from fakescope.models.checkpoint import load_detector, read_tensors, save_checkpoint
from fakescope.models.detector import Preprocessing
from fakescope.models.header import read_meta
from fakescope.models.probe import attach_novelty, create_probe_detector
from fakescope.train import adapt as adapt_mod
from fakescope.train.adapt import STORE_META, AdaptError, ReferenceRows, adapt, make_reference
from fakescope.utils import file_digest

from .helpers import W, build_tiny_encoder

PRE = Preprocessing(size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0)

# The parent knows red fakes against grey photos; the new generator makes blue-tinted images.
KNOWN = {"grey": (0.5, 0.5, 0.5, 0), "red": (0.8, 0.4, 0.4, 1)}
NEW_FAKE, NEW_REAL = (0.45, 0.45, 0.62), (0.5, 0.5, 0.5)


@pytest.fixture(autouse=True)
def _each_example_its_own_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # the tiny encoder embeds an image by its mean colour, so all examples look alike to the
    # near-duplicate rule; the rule itself is tested below
    monkeypatch.setattr(adapt_mod, "DUPLICATE_COS", 1.0 - 1e-9)


def colours(rng: np.random.Generator, mean: tuple[float, ...], n: int, spread: float) -> np.ndarray:
    return np.clip(np.asarray(mean[:3]) + rng.normal(0.0, spread, (n, 3)), 0.0, 1.0)


def embed_colours(c: np.ndarray) -> np.ndarray:
    return (c @ W).astype(np.float32)  # what the tiny encoder gives for flat images


def parent_file(tmp_path: Path, with_reference: bool = True) -> Path:
    rng = np.random.default_rng(0)
    encoder = build_tiny_encoder(tmp_path / "enc" / "tiny.onnx")
    det = create_probe_detector(OnnxBackbone(encoder, preprocessing=PRE), dim=4, l2=True)
    rows, labels, sources = [], [], []
    for name, (*mean, label) in KNOWN.items():
        c = colours(rng, tuple(mean), 200, 0.03)
        rows.append(embed_colours(c))
        labels += [label] * len(c)
        sources += [name] * len(c)
    x, y, src = np.concatenate(rows), np.array(labels), np.array(sources)
    xl = x / np.linalg.norm(x, axis=1, keepdims=True)
    # a head that separates red from grey, and is blind to the new generator's blue tint
    direction = (xl[y == 1].mean(0) - xl[y == 0].mean(0)) * 40.0
    det.net.set_head(xl.mean(0), np.ones(4), direction, 0.0)
    attach_novelty(det, x, quantile=0.999)
    fit = np.arange(len(y)) % 2 == 0
    extra, tensors = {}, None
    if with_reference:
        ref = make_reference(xl, y, src, det.head_logits(x), fit, ~fit)
        tensors, extra = ref.tensors(), {STORE_META: ref.meta()}
    return save_checkpoint(tmp_path / "parent.safetensors", det, extra_tensors=tensors, **extra)


def write_examples(root: Path, n: int, fake=NEW_FAKE, real=NEW_REAL, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for cls, mean in (("fake", fake), ("real", real)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(colours(rng, mean, n, 0.02)):
            pixel = (c * 255).round().astype(np.uint8)
            Image.fromarray(np.tile(pixel, (16, 16, 1))).save(root / cls / f"{cls}{i:03d}x.png")
    return root


def test_adapt_writes_a_detector_that_catches_the_new_generator_and_records_its_parent(
    tmp_path: Path,
) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 12)
    out = tmp_path / "adapted.safetensors"
    result = adapt(examples, out, detector=str(parent))
    assert result.written == str(out), result.summary()
    assert result.cv["after"] > result.cv["before"] + 0.2  # the parent is blind, the child sees
    assert result.known["before"] - result.known["after"] <= 0.01  # and forgets nothing much
    meta = read_meta(out)
    rec = meta["adapted"]
    assert rec["parent_sha256"] == file_digest(parent)
    assert rec["examples"]["fake"] == 12 and rec["examples"]["real"] == 12
    assert len(rec["examples"]["sha256"]) == 64
    assert rec["cv"]["after"] == pytest.approx(result.cv["after"])
    # the child loads, scores the new generator as fake, and says it is adapted
    child, base = load_detector(out), load_detector(parent)
    assert "(adapted from parent.safetensors)" in child.display_name
    assert child.description.startswith("adapted from parent.safetensors with 12 fake")
    fresh = write_examples(tmp_path / "fresh", 6, seed=7)
    images = [Image.open(p).convert("RGB") for p in sorted((fresh / "fake").glob("*.png"))]
    reals = [Image.open(p).convert("RGB") for p in sorted((fresh / "real").glob("*.png"))]
    gap = lambda d: d.image_logits(images)[0].mean() - d.image_logits(reals)[0].mean()  # noqa: E731
    assert gap(child) > gap(base) + 1.0
    # the guard learnt the new images too: they are not "unlike the training data"
    _, nov = child.image_logits(images)
    assert not any(child.is_novel(float(v)) for v in nov)
    # it carries its reference rows, moved to its own head, so it can be adapted again
    tensors, _ = read_tensors(out)
    ref = ReferenceRows.from_checkpoint(tensors, meta)
    assert ref is not None
    np.testing.assert_allclose(
        ref.logit[ref.check], child.head_logits(_raw(ref, ref.check)), rtol=1e-3, atol=1e-2
    )


def _raw(ref: ReferenceRows, mask: np.ndarray) -> np.ndarray:
    return ref.rows(mask)  # L2-normalised rows: the probe's L2 step leaves them as they are


def test_the_cli_prints_the_measurements_and_predict_names_the_adapted_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 10)
    out = tmp_path / "mine.safetensors"
    assert main(["adapt", str(examples), "--out", str(out), "--detector", str(parent)]) == 0
    text = capsys.readouterr().out
    assert (
        "nested cross-validation" in text and "on what it knew" in text and f"wrote {out}" in text
    )
    img = next((examples / "fake").glob("*.png"))
    assert main(["predict", str(img), "--detector", str(out), "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["detector"] == "mine.safetensors (adapted from parent.safetensors)"
    assert main(["info", str(out)]) == 0
    assert '"adapted"' in capsys.readouterr().out


def test_too_few_examples_is_a_clear_refusal(tmp_path: Path) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 3)
    with pytest.raises(AdaptError, match="at least 4 fake and 4 real examples; it has 3 fake"):
        adapt(examples, tmp_path / "out.safetensors", detector=str(parent))
    assert not (tmp_path / "out.safetensors").exists()


def test_unreadable_files_are_named_and_the_rest_is_used(tmp_path: Path) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 8)
    (examples / "fake" / "broken.png").write_bytes(b"not a png at all")
    result = adapt(examples, tmp_path / "out.safetensors", detector=str(parent))
    assert [Path(p).name for p, _ in result.failures] == ["broken.png"]
    assert result.examples["fake"] == 8 and result.written
    assert "skipped" in result.summary() and "broken.png" in result.summary()


def test_a_worse_result_on_what_it_knew_is_refused_unless_forced(tmp_path: Path) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 10)
    out = tmp_path / "out.safetensors"
    # any change at all counts as too much forgetting with a negative margin
    result = adapt(examples, out, detector=str(parent), margin=-1.0)
    assert result.written is None and result.decision.startswith("refused: AUC on what it knew")
    assert not out.exists()
    forced = adapt(examples, out, detector=str(parent), margin=-1.0, force=True)
    assert forced.written and forced.decision.endswith("(forced)") and out.is_file()


def test_no_gain_writes_nothing_and_says_so(tmp_path: Path, capsys) -> None:
    parent = parent_file(tmp_path)
    examples = write_examples(tmp_path / "examples", 8, fake=NEW_REAL, real=NEW_REAL)
    out = tmp_path / "out.safetensors"
    code = main(["adapt", str(examples), "--out", str(out), "--detector", str(parent)])
    assert code == 3 and not out.exists()
    assert "no gain" in capsys.readouterr().out


def test_a_detector_without_reference_rows_needs_force(tmp_path: Path) -> None:
    parent = parent_file(tmp_path, with_reference=False)
    examples = write_examples(tmp_path / "examples", 10)
    result = adapt(examples, tmp_path / "out.safetensors", detector=str(parent))
    assert result.written is None and "carries no reference rows" in result.decision


def test_only_probes_adapt(tmp_path: Path) -> None:
    from fakescope.models.registry import create_detector

    net = save_checkpoint(tmp_path / "cnn.safetensors", create_detector("test_efficientnet"))
    examples = write_examples(tmp_path / "examples", 4)
    with pytest.raises(AdaptError, match="adapt works on probe detectors.*'timm'"):
        adapt(examples, tmp_path / "out.safetensors", detector=str(net))


def test_near_duplicates_share_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapt_mod, "DUPLICATE_COS", 0.97)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 64)).astype(np.float32)
    x[3] = x[1] + 0.01 * rng.normal(size=64)  # a re-encoded copy
    x[4] = x[3] + 0.01 * rng.normal(size=64)  # ... and a copy of the copy
    g = adapt_mod._groups(x)
    assert g[1] == g[3] == g[4] and len(set(g.tolist())) == 3


def test_the_built_in_default_carries_reference_rows() -> None:
    from fakescope.zoo import detector_file

    path = detector_file("builtin:clip-layers")
    tensors, meta = read_tensors(path)
    ref = ReferenceRows.from_checkpoint(tensors, meta)
    assert ref is not None and (~ref.check).sum() == 1000 and ref.check.sum() > 100
    assert "nano-banana-pro" in ref.sources


def test_the_server_says_an_adapted_detector_is_in_use(tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from fakescope.serve import ServeSettings, create_app

    parent = parent_file(tmp_path)
    out = tmp_path / "mine.safetensors"
    assert adapt(write_examples(tmp_path / "examples", 10), out, detector=str(parent)).written
    settings = ServeSettings(device="cpu", tmp_root=str(tmp_path / "uploads"))
    with TestClient(create_app(load_detector(out), settings), base_url="http://localhost") as c:
        info = c.get("/v1/model").json()
        assert info["detector"] == "mine.safetensors (adapted from parent.safetensors)"
        assert info["description"].startswith("adapted from parent.safetensors with 10 fake")
        assert info["adapted"]["parent_sha256"] == file_digest(parent)
        img = next((tmp_path / "examples" / "fake").glob("*.png"))
        with img.open("rb") as fh:
            row = c.post("/v1/detect", files={"file": (img.name, fh, "image/png")}).json()
        assert row["detector"] == info["detector"]
