"""The development corpus, the generalisation protocol and the recipes that build the built-ins,
end to end on a tiny corpus and a tiny CLIP-shaped tower (no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fakescope.zoo as fz
from fakescope.data.corpus import build_corpus, held_out_reals, read_corpus
from fakescope.experiments import heldout as H
from fakescope.models.checkpoint import load_detector
from fakescope.models.header import read_meta
from fakescope.train.families import CorpusFeatures, ProbeFamily, calibration_rows, fit_family
from fakescope.train.recipes import (
    RECIPES,
    SHIPPED_BATCH,
    build,
    training_rows,
    tuned_recipe,
)

from .helpers import SHARED
from .tower_helpers import TINY_224, export_int8, tiny_vit

#: source -> (label, era, n images): a modern generator and photos, a 2022 generator and photos.
SOURCES = {
    "nano-banana-pro": ("fake", "2024+", 16),
    "gpt-4o-image": ("fake", "2024+", 12),
    "unsplash": ("real", "2024+", 24),
    "camera-2025": ("real", "2024+", 12),
    "dalle-mini": ("fake", "2022", 16),
    "imagenet": ("real", "2022", 12),
}


def _image(label: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """Smooth colour fields; fakes carry a fine periodic texture (learnable, like upsampling)."""
    base = rng.uniform(60, 190, size=(6, 6, 3))
    img = np.kron(base, np.ones((size // 6, size // 6, 1))) + rng.normal(0, 6, (size, size, 3))
    if label == "fake":
        yy, xx = np.mgrid[0:size, 0:size]
        img += 30 * (((yy + xx) % 4) < 2)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _pool(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for source, (label, era, n) in SOURCES.items():
        for i in range(n):
            rel = Path(label) / source / f"{i:03d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _image(label, rng).save(root / rel, quality=95)
            group = f"g{i}"
            if source == "dalle-mini":  # half are photographic prompts, half art
                group = "woman-coffeeshop-working-her-laptop" if i % 2 else "castle-in-clouds"
                group += f"-{i % 4}"
            rows.append(
                {"path": str(rel), "label": label, "source": source, "group": group, "era": era}
            )
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rows.append(
        {"path": "broken.jpg", "label": "real", "source": "unsplash", "group": "x", "era": "2024+"}
    )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def _dev(root: Path) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for source, label in (("diffusiondb", "fake"), ("coco", "real"), ("imagenet", "real")):
        for i in range(20 if label == "fake" else 10):
            rel = Path(label) / f"{source}_{i:03d}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _image(label, rng).save(root / rel, quality=95)
            rows.append({"path": str(rel), "label": label, "source": source})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    out = root / "corpus"
    build_corpus(out, _dev(root / "dev"), _pool(root / "pool"), None, workers=0)
    return out


@pytest.fixture(scope="module")
def tower(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny int8 tower, with its activation ranges beside it (as the shipped one has them
    in the package)."""
    from fakescope.train.recipes import calibrate_tower

    path = export_int8(tiny_vit(**TINY_224), tmp_path_factory.mktemp("w") / "tiny.int8.onnx")
    calibrate_tower(read_corpus(corpus_dir), path, path.with_name(f"{path.stem}.ranges.json"))
    return path


@pytest.fixture(scope="module")
def feats(corpus_dir: Path, tower: Path, tmp_path_factory: pytest.TempPathFactory):
    return CorpusFeatures(read_corpus(corpus_dir), tower, tmp_path_factory.mktemp("cache"), 0)


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def test_corpus_is_normalised_labelled_and_lists_what_it_left_out(corpus_dir: Path) -> None:
    df = read_corpus(corpus_dir)
    assert set(df["era"]) == {"dev", "2022", "2024+"}
    assert len(df) == 40 + sum(n for *_, n in SOURCES.values())  # the broken file is left out
    skipped = pd.read_csv(corpus_dir / "skipped.csv")
    assert skipped["path"].str.endswith("broken.jpg").all()
    with Image.open(df["path"].iloc[0]) as im:
        assert im.size == (512, 512) and im.format == "JPEG"
    assert (df.loc[df["holdout"] == "dev-test", "era"] == "dev").all()
    assert (df.loc[df["holdout"] == "test", "label"] == 0).all()  # only photos are held out


def test_held_out_photos_are_a_share_of_each_source_and_stable() -> None:
    df = pd.DataFrame(
        {
            "path": [f"/x/{s}/{i}.jpg" for s in ("a", "b") for i in range(200)],
            "label": "real",
            "source": [s for s in ("a", "b") for _ in range(200)],
            "group": [f"g{i // 2}" for _ in range(2) for i in range(200)],
        }
    )
    held = held_out_reals(df)
    for source in ("a", "b"):
        assert 0.3 < held[df["source"] == source].mean() < 0.5
    pairs = held.groupby([df["source"], df["group"]]).nunique()
    assert (pairs == 1).all()  # a group's images fall on one side
    assert held.equals(held_out_reals(df.sample(frac=1.0, random_state=0)).sort_index())


def test_read_corpus_names_a_missing_or_foreign_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fakescope corpus"):
        read_corpus(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\na.jpg,fake\n")
    with pytest.raises(Exception, match="not a corpus manifest"):
        read_corpus(tmp_path)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def test_folds_hold_out_each_modern_generator_and_the_2022_fakes(feats) -> None:
    corpus = feats.corpus
    folds = {f.name: f for f in H.make_folds(corpus)}
    assert set(folds) == {"nano-banana-pro", "gpt-4o-image", "2022"}
    src = corpus["source"].to_numpy()
    assert not (folds["nano-banana-pro"].train & (src == "nano-banana-pro")).any()
    old = (corpus["era"] == "2022").to_numpy() & (corpus["label"] == 1).to_numpy()
    assert not (folds["2022"].train & old).any()
    for fold in folds.values():  # no fold trains on held-out photos or the dev test split
        assert not (fold.train & (corpus["holdout"] != "").to_numpy()).any()
    neg = H.negatives(corpus)
    assert neg.any() and set(src[neg]) <= set(H.NEGATIVES)
    photo = folds["2022"].tests[H.PHOTOGRAPHIC]
    assert 0 < photo.sum() < folds["2022"].tests[H.ALL_2022].sum()


def test_a_family_on_the_protocol_gives_every_cell_with_intervals(feats) -> None:
    row = H.run_family(ProbeFamily("layers", pool="layers", c=3.0), feats, n_boot=50)
    names = {c.name for c in row.cells}
    assert {"nano-banana-pro", "gpt-4o-image", H.PHOTOGRAPHIC, H.ALL_2022} <= names
    for c in row.cells:
        assert 0.0 <= c.auc <= 1.0 and c.ci[0] <= c.auc + 1e-9 and c.ci[1] >= c.auc - 1e-9
        assert c.ece is not None and 0 <= c.ece <= 1
    assert row.in_distribution.auc > 0.8  # the texture is learnable
    assert set(row.logits) == {"nano-banana-pro", "gpt-4o-image", "2022"}
    table = H.format_table([row])
    assert "modern" in table and H.PHOTOGRAPHIC[:18] in table


def test_rank_check_reports_each_relation(feats) -> None:
    corpus = feats.corpus
    y = corpus["label"].to_numpy().astype(float)
    rng = np.random.default_rng(0)

    def prob(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-z))

    good = H.score_fixed("clip-baseline", corpus, prob(4 * y - 2 + rng.normal(0, 1, len(y))), 20)
    bad = H.score_fixed("clip-layers", corpus, prob(rng.normal(0, 1, len(y))), n_boot=20)
    relations = H.rank_check(
        {"clip-baseline": good, "clip-layers": bad},
        {"older": {"clip-baseline": 0.66, "clip-layers": 0.63}},
    )
    by = {r.text: r for r in relations}
    assert by["clip-baseline > clip-layers"].holds
    text = H.format_rank_check(relations)
    assert "rank agreement" in text and "clip-baseline > clip-layers" in text


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def test_calibration_rows_mix_every_source(feats) -> None:
    corpus = feats.corpus
    train = training_rows(corpus, ())
    cal = calibration_rows(corpus, train, share=0.3)
    assert cal.sum() > 0 and not (cal & ~train).any()
    assert len(set(corpus.loc[cal, "source"])) >= 4


def test_probe_recipe_round_trip(feats, tmp_path: Path) -> None:
    recipe = RECIPES["clip-layers"]
    path = build(recipe, feats, tmp_path / "layers.safetensors")
    meta = read_meta(path)
    assert meta["bench"]["recipe"]["pool"] == "layers"
    assert meta["bench"]["recipe"]["exclude"] == list(recipe.exclude)
    fit = meta["bench"]["trained_on"]["fit"]
    assert "coco (real)" in fit and "nano-banana-pro (fake)" in fit
    assert not any(k.startswith("dalle-mini") for k in fit)  # the pool's 2022 part is left out
    backbone = meta["spec"]["model_kwargs"]["backbone"]
    assert backbone["path"] == "tiny.int8.onnx"  # by name only
    assert backbone["activations"].startswith("fixed:")  # served with fixed activation ranges
    assert backbone["batch_size"] == SHIPPED_BATCH
    det = load_detector(path, backbone_path=str(feats.tower_file))
    x = feats.get("layers")
    corpus = feats.corpus
    z = det.head_logits(x[:8])
    images = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    together = det.tensor_logits(images)[0]
    alone = np.concatenate([det.tensor_logits(images[i : i + 1])[0] for i in range(4)])
    np.testing.assert_array_equal(together, alone)  # batch-invariant
    fitted = fit_family(recipe.family, feats, training_rows(corpus, recipe.exclude))
    np.testing.assert_allclose(z, fitted.logits[:8], rtol=1e-4, atol=1e-4)


def test_tuned_recipe_round_trip_runs_without_torch_blocks(feats, tmp_path: Path) -> None:
    """A tuned recipe stores its deltas; the loaded detector runs the int8 graph with them."""
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.infer.api import predict

    recipe = tuned_recipe(
        "tiny-effort", "effort", rank=1, blocks=1, epochs=1, per_epoch=16, batch_size=8, lr=1e-3
    )
    path = build(recipe, feats, tmp_path / "tuned.safetensors")
    meta = read_meta(path)
    tuning = meta["spec"]["model_kwargs"]["tuning"]
    assert tuning["method"] == "effort" and set(tuning["deltas"]) == {
        "blocks.1.attn.qkv",
        "blocks.1.attn.proj",
    }
    det = load_detector(path, backbone_path=str(feats.tower_file))
    deltas = det.net.deltas.arrays()
    plain = OnnxBackbone(feats.tower_file, pool="layers")
    tuned = OnnxBackbone(feats.tower_file, pool="layers", deltas=deltas)
    img = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    assert not np.allclose(plain.embed(img), tuned.embed(img))  # the deltas change the tower
    np.testing.assert_allclose(det.net.backbone.embed(img), tuned.embed(img), rtol=1e-5)
    rows = predict([feats.corpus["path"].iloc[0]], detector=det)
    assert 0.0 <= rows[0].score <= 1.0
    assert det.head_logits(tuned.embed(img)).shape == (1,)
    assert json.loads(path.with_suffix(".json").read_text())["bench"]["history"]


@pytest.mark.parametrize("tuned", [False, True])
def test_exported_probe_gives_the_detector_s_logits(feats, tmp_path: Path, tuned: bool) -> None:
    """One ONNX file (tower, deltas, features, head) scores as the detector does."""
    from fakescope.models.onnx_export import export_onnx

    recipe = RECIPES["clip-layers"]
    if tuned:
        recipe = tuned_recipe(
            "tiny-lora", "lora", rank=2, blocks=1, epochs=1, per_epoch=16, batch_size=8, lr=1e-2
        )
    det = load_detector(
        build(recipe, feats, tmp_path / "d.safetensors"), backbone_path=str(feats.tower_file)
    )
    onnx_det = load_detector(export_onnx(det, tmp_path / "d.onnx"))
    assert onnx_det.spec.kind == "onnx" and onnx_det.spec.calibration == det.spec.calibration
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3, 224, 224)).astype(np.float32)
    want = np.concatenate([det.tensor_logits(x[i : i + 1])[0] for i in range(3)])
    got = np.concatenate([onnx_det.tensor_logits(x[i : i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_calibrate_tower_samples_training_sources_and_fixes_the_tower(
    corpus_dir: Path, tower: Path, tmp_path: Path
) -> None:
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.embed.quant import read_ranges
    from fakescope.train.recipes import RANGES_PER_SOURCE, calibrate_tower
    from fakescope.utils import file_digest

    corpus = read_corpus(corpus_dir)
    local = tmp_path / tower.name
    local.write_bytes(tower.read_bytes())
    out = calibrate_tower(corpus, local, tmp_path / f"{local.stem}.ranges.json")
    ranges, meta = read_ranges(out)
    assert meta["sha256"] == file_digest(local)
    rows = corpus[training_rows(corpus, ()) & (corpus["holdout"] != "test").to_numpy()]
    assert meta["sources"] == sorted(rows["source"].unique())  # every source, none held out
    per_source = rows.groupby("source").size().clip(upper=RANGES_PER_SOURCE)
    assert meta["images"] == int(per_source.sum())
    fixed = OnnxBackbone(local, pool="layers", activations="fixed", batch_size=4)
    assert fixed.ranges == ranges and fixed.batch_size == 4


TOWER = SHARED / "weights" / "clip_vit_b16_openai_visual.int8.onnx"


@pytest.mark.skipif(not TOWER.is_file(), reason=f"needs the shared CLIP tower ({TOWER})")
def test_recipe_makes_the_shipped_tower_reference(tmp_path: Path, capsys) -> None:
    from fakescope.cli import main
    from fakescope.zoo import TOWER_FILES

    out = tmp_path / "reference.npz"
    argv = ["recipe", "clip-tower-reference", "--backbone-path", str(TOWER), "--out", str(out)]
    assert main(argv) == 0
    shipped = np.load(Path(fz.__file__).with_name(TOWER_FILES["clip-tower-reference"][0]))
    made = np.load(out)
    assert sorted(made.files) == sorted(shipped.files)
    for name in shipped.files:  # the package makes what it ships, value for value
        np.testing.assert_array_equal(made[name], shipped[name], err_msg=name)


def test_recipe_names_what_it_needs(tmp_path: Path, capsys) -> None:
    from fakescope.cli import main

    code = main(["recipe", "clip-layers", "--out", str(tmp_path / "x.safetensors")])
    assert code != 0 and "needs --corpus" in capsys.readouterr().err
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the tower")
    argv = ["recipe", "clip-tower-reference", "--backbone-path", str(other), "--out", "r.npz"]
    assert main(argv) != 0 and "not the original tower file" in capsys.readouterr().err
    for content, reason in (
        (None, "cannot read it"),
        ("{oops", "not a JSON file"),
        ("[1]", "object"),
    ):
        row = tmp_path / "row.json"
        row.unlink(missing_ok=True)
        if content is not None:
            row.write_text(content)
        argv = ["recipe", "clip-layers", "--corpus", "c", "--out", "x", "--protocol", str(row)]
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert f"--protocol {row}" in err and reason in err, err
