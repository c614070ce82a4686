"""Dataset audit: header features, planted shortcuts flagged, clean sets not, duplicates, normalise."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.audit.duplicates import close_pairs, find_duplicates
from fakescope.audit.metadata import estimate_jpeg_quality, extract_features, read_features
from fakescope.audit.report import run_audit
from fakescope.cli import build_parser
from fakescope.data.manifest import build_manifest
from fakescope.data.normalise import Normalise, normalise_dataset, normalise_image

N_BOOT = 100


def blob_image(rng: np.random.Generator, size: tuple[int, int] = (48, 48)) -> Image.Image:
    """A distinct smooth random image (a 4x4 random field upsampled, plus a little noise)."""
    field = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = Image.fromarray(field).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def save(img: Image.Image, path: Path, fmt: str = "JPEG", quality: int = 90) -> Path:
    """Write ``img`` as JPEG (at ``quality``) or PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        img.save(path, format="JPEG", quality=quality)
    else:
        img.save(path, format=fmt)
    return path


def make_set(
    root: Path,
    n: int = 30,
    fake: tuple[str, tuple[int, int]] = ("JPEG", (48, 48)),
    real: tuple[str, tuple[int, int]] = ("JPEG", (48, 48)),
    seed: int = 0,
) -> Path:
    """``root/fake`` and ``root/real`` with ``n`` random images each in the given format and size."""
    rng = np.random.default_rng(seed)
    for cls, (fmt, size) in (("fake", fake), ("real", real)):
        ext = "jpg" if fmt == "JPEG" else fmt.lower()
        for i in range(n):
            save(blob_image(rng, size), root / cls / f"{cls}_{i:03d}.{ext}", fmt)
    return root


# --------------------------------------------------------------------------------------------
# Header features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [30, 40, 50, 60, 70, 75, 80, 85, 90, 95])
def test_jpeg_quality_estimate_within_two(tmp_path: Path, quality: int) -> None:
    img = blob_image(np.random.default_rng(quality), (64, 64))
    path = save(img, tmp_path / "q.jpg", quality=quality)
    row = read_features(path)
    assert row["format"] == "JPEG" and row["error"] is None
    assert abs(row["jpeg_quality"] - quality) <= 2
    assert row["jpeg_table_error"] == pytest.approx(0.0)


def test_quality_estimate_of_a_non_ijg_table() -> None:
    quality, error = estimate_jpeg_quality([3] * 64)
    assert 1 <= quality <= 100 and error > 0
    with pytest.raises(ValueError):
        estimate_jpeg_quality([1, 2, 3])


@pytest.mark.parametrize(("code", "name"), [(0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")])
def test_chroma_subsampling(tmp_path: Path, code: int, name: str) -> None:
    path = tmp_path / "s.jpg"
    blob_image(np.random.default_rng(0), (64, 64)).save(path, quality=90, subsampling=code)
    assert read_features(path)["subsampling"] == name


def test_png_exif_make_mode_and_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    png = save(blob_image(rng, (60, 30)).convert("RGBA"), tmp_path / "a.png", "PNG")
    row = read_features(png)
    assert (row["format"], row["mode"], row["width"], row["height"]) == ("PNG", "RGBA", 60, 30)
    assert row["aspect"] == pytest.approx(2.0) and row["jpeg_quality"] is None
    assert row["bytes_per_pixel"] == pytest.approx(png.stat().st_size / 1800)
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    jpg = tmp_path / "cam.jpg"
    blob_image(rng, (40, 40)).save(jpg, quality=90, exif=exif)
    row = read_features(jpg)
    assert row["exif"] is True and row["camera_make"] == "Canon" and row["camera_model"] == "EOS 5D"
    assert read_features(save(blob_image(rng), tmp_path / "plain.jpg"))["exif"] is False


def test_bad_files_become_error_rows(tmp_path: Path) -> None:
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "text.jpg").write_text("not an image")
    save(blob_image(np.random.default_rng(0)), tmp_path / "fake" / "ok.jpg")
    df = pd.DataFrame(
        {
            "path": [str(tmp_path / "fake" / "text.jpg"), str(tmp_path / "fake" / "ok.jpg"), "/no"],
            "label": [1, 1, 0],
        }
    )
    feats = extract_features(df, workers=2)
    assert list(feats["path"]) == list(df["path"])
    assert feats["error"].notna().tolist() == [True, False, True]
    assert "not a recognised" in feats["error"][0] and feats["error"][2] == "file not found"


# --------------------------------------------------------------------------------------------
# Shortcuts
# --------------------------------------------------------------------------------------------


def test_png_vs_jpeg_is_flagged_and_named(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d", fake=("PNG", (48, 48)), real=("JPEG", (48, 48)))
    s = run_audit(data, tmp_path / "out", n_boot=N_BOOT, quiet=True)
    assert not s["clean"]["format"] and s["clean"]["size"]
    assert s["shortcut_aucs"]["format"] == pytest.approx(1.0)
    text = next(w for w in s["warnings"] if w.startswith("File format"))
    assert "alone separates the classes (AUC 1.00" in text
    assert "every fake is PNG and every real is JPEG" in text and "--normalise" in text
    assert s["metadata_only_auc"] > 0.9


def test_size_difference_is_flagged_as_resolution(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d", fake=("JPEG", (64, 64)), real=("JPEG", (48, 48)))
    s = run_audit(data, tmp_path / "out", n_boot=N_BOOT, quiet=True)
    assert not s["clean"]["size"] and s["clean"]["format"]
    assert s["shortcut_aucs"]["width"] == pytest.approx(1.0)
    resolution = [w for w in s["warnings"] if w.startswith("Resolution")]
    assert resolution and "fakes: all 64 px; reals: all 48 px" in resolution[0]
    assert "image size instead of the generator" in resolution[0]


def test_clean_set_is_not_flagged(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d")
    s = run_audit(data, tmp_path / "out", n_boot=N_BOOT, quiet=True)
    assert all(s["clean"].values()), s["warnings"]
    assert s["warnings"] == []
    assert all(auc < 0.75 for auc in s["shortcut_aucs"].values() if auc is not None)
    assert s["metadata_only_auc"] < 0.75
    assert "No metadata shortcut" in (tmp_path / "out" / "audit.html").read_text()


def test_audit_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_set(tmp_path / "d", n=12, fake=("PNG", (48, 48)))
    out = tmp_path / "out"
    run_audit(data, out, n_boot=N_BOOT)
    printed = capsys.readouterr().out
    assert "FLAGGED: format shortcuts" in printed and "audit report:" in printed
    for name in ("audit.json", "features.csv", "duplicates.csv", "audit.html"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("*.png"))) == 4
    summary = json.loads((out / "audit.json").read_text())
    assert summary["n"] == 24 and summary["warnings"]
    html = (out / "audit.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert html.index("Warnings") < html.index("Per class") < html.index("Per source")
    assert "could be chance" in summary["warnings"][0]  # 12 per class is small
    feats = pd.read_csv(out / "features.csv")
    assert len(feats) == 24 and {"format", "jpeg_quality", "subsampling"} <= set(feats.columns)


def test_audit_page_escapes_hostile_names(tmp_path: Path) -> None:
    hostile = "<script>alert(1)"  # no slash: it is a file name
    data = make_set(tmp_path / f"d{hostile}", n=8, fake=("PNG", (48, 48)))
    copy = data / "fake" / f"{hostile}.png"
    copy.write_bytes((data / "fake" / "fake_000.png").read_bytes())  # a named duplicate pair
    out = tmp_path / "out"
    run_audit(data, out, n_boot=N_BOOT, quiet=True)
    html = (out / "audit.html").read_text()
    assert "<script" not in html
    assert "d&lt;script&gt;alert(1): 17 files" in html  # the data folder
    assert "<td>&lt;script&gt;alert(1).png</td>" in html  # a pair's path
    assert html.count("data:image/png;base64,") == 4 and "Per source and class" in html
    assert not list(out.glob("*.tmp*"))


# --------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------


def _copy(img: Image.Image, factor: float, quality: int) -> Image.Image:
    """A resized and re-encoded copy."""
    w, h = img.size
    small = img.resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@pytest.fixture
def leaky_set(tmp_path: Path) -> Path:
    """20 distinct images per class split 12/4/4, plus 3 train->test copies and 1 train->val."""
    rng = np.random.default_rng(3)
    rows = []
    for cls, label in (("fake", 1), ("real", 0)):
        for i in range(20):
            split = "train" if i < 12 else "val" if i < 16 else "test"
            path = save(blob_image(rng, (64, 64)), tmp_path / cls / f"{i:02d}.jpg")
            rows.append((str(path), label, split))
    plan = [
        ("fake", 0, "test", 0.9, 70),
        ("fake", 1, "test", 0.8, 60),
        ("real", 2, "test", 1.0, 50),
    ]
    plan.append(("real", 3, "val", 0.9, 80))
    for cls, i, split, factor, quality in plan:
        src = tmp_path / cls / f"{i:02d}.jpg"
        copy = save(
            _copy(Image.open(src).convert("RGB"), factor, quality), tmp_path / cls / f"c{i}.jpg"
        )
        rows.append((str(copy), int(cls == "fake"), split))
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(manifest, index=False)
    return manifest


def test_planted_duplicates_across_splits(leaky_set: Path) -> None:
    df = build_manifest(leaky_set)
    pairs, summary = find_duplicates(df, threshold=6, workers=2)
    assert summary["n_pairs"] == 4 and len(pairs) == 4
    assert summary["pairs_by_split"] == {"train-test": 3, "train-val": 1, "val-test": 0}
    assert summary["leaked_images"] == {"test": 3, "val": 1}
    assert summary["n_identical_files"] == 0 and summary["n_label_conflicts"] == 0
    assert summary["n_clusters"] == 4
    assert all(Path(p).name.startswith("c") for p in pairs["path_a"].tolist() + pairs["path_b"])
    assert (pairs["phash_distance"] <= 6).all()


def test_distinct_images_are_not_paired(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d", n=25)
    pairs, summary = find_duplicates(build_manifest(data), threshold=6)
    assert summary["n_pairs"] == 0 and pairs.empty and "pairs_by_split" not in summary


def test_identical_files_and_label_conflict(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a = save(blob_image(rng), tmp_path / "fake" / "a.jpg")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a-copy.jpg").write_bytes(a.read_bytes())
    save(blob_image(rng), tmp_path / "real" / "b.jpg")
    pairs, summary = find_duplicates(build_manifest(tmp_path))
    assert summary["n_identical_files"] == 1 and summary["n_label_conflicts"] == 1
    assert pairs["phash_distance"].tolist() == [0]


def test_close_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 50, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 50).astype(np.uint64)
    h = np.concatenate([base, base[:20] ^ flips[:20]])
    i, j, d = close_pairs(h, 6)
    brute = [
        (a, b, bin(int(h[a]) ^ int(h[b])).count("1"))
        for a in range(len(h))
        for b in range(a + 1, len(h))
        if bin(int(h[a]) ^ int(h[b])).count("1") <= 6
    ]
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == brute
    assert len(brute) >= 20


def test_audit_with_splits_file_counts_leakage(leaky_set: Path, tmp_path: Path) -> None:
    s = run_audit(leaky_set, tmp_path / "out", splits=leaky_set, n_boot=N_BOOT, quiet=True)
    assert s["duplicates"]["pairs_by_split"]["train-test"] == 3
    assert any("cross the splits" in w and "3 test" in w for w in s["warnings"])
    assert len(pd.read_csv(tmp_path / "out" / "duplicates.csv")) == 4


def test_audit_cli(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d", n=8, real=("PNG", (48, 48)))
    parser = build_parser()
    out = tmp_path / "out"
    args = parser.parse_args(["audit", str(data), "--out", str(out), "--workers", "0"])
    assert args.func(args) == 0
    assert (out / "audit.html").is_file()


# --------------------------------------------------------------------------------------------
# --normalise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_normalise_image_size_and_format(mode: str) -> None:
    img = blob_image(np.random.default_rng(0), (100, 70)).convert(mode)
    out = normalise_image(img, size=64, quality=80)
    assert out.size == (64, 64) and out.format == "JPEG" and out.mode == "RGB"
    assert Normalise(32, 90)(img).size == (32, 32)
    tables = out.quantization
    assert estimate_jpeg_quality(tables[0])[0] == 80


def test_normalise_dataset_removes_the_shortcut(tmp_path: Path) -> None:
    data = make_set(tmp_path / "d", n=20, fake=("PNG", (64, 48)), real=("JPEG", (48, 40)))
    df = build_manifest(data)
    cache = tmp_path / "cache"
    norm = normalise_dataset(df, cache, size=32, quality=90, workers=2)
    assert (norm["original_path"] == df["path"]).all()
    assert all(Path(p).is_file() and str(cache) in p for p in norm["path"])
    first = {p: Path(p).stat().st_mtime_ns for p in norm["path"]}
    again = normalise_dataset(df, cache, size=32, quality=90)
    assert {p: Path(p).stat().st_mtime_ns for p in again["path"]} == first
    manifest = tmp_path / "norm.csv"
    norm.to_csv(manifest, index=False)
    s = run_audit(manifest, tmp_path / "out", n_boot=N_BOOT, quiet=True)
    assert s["clean"]["format"] and s["clean"]["size"]


def test_normalise_dataset_keeps_unreadable_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    norm = normalise_dataset(pd.DataFrame({"path": [str(bad)], "label": [1]}), tmp_path / "c")
    assert norm["path"].tolist() == [str(bad)]


def test_normalise_helpers_for_the_cli(tmp_path: Path) -> None:
    from fakescope.config import TrainConfig
    from fakescope.data.normalise import normalise_data_arg, normalise_train_config
    from fakescope.data.splits import load_splits

    data = make_set(tmp_path / "d", n=6, fake=("PNG", (50, 40)))
    cache = tmp_path / "cache"
    manifest = build_manifest(normalise_data_arg(data, size=32, quality=85, out_dir=cache))
    assert len(manifest) == 12 and all(str(cache) in p for p in manifest["path"])
    assert {Image.open(p).size for p in manifest["path"]} == {(32, 32)}
    cfg = normalise_train_config(TrainConfig(data=str(data), workers=0), 32, 85, out_dir=cache)
    splits = load_splits(cfg.splits)
    assert set(splits["split"]) <= {"train", "val", "test"} and len(splits) == 12
    assert all(str(cache) in p for p in splits["path"])


def test_cli_parsers_accept_the_documented_options(tmp_path: Path) -> None:
    from fakescope.cli.evaluate import cmd_robustness
    from fakescope.cli.experiments import cmd_crossval

    parser = build_parser()
    args = parser.parse_args(
        ["crossval", "data", "--folds", "3", "--model", "m", "--family", "finetune"]
        + ["--epochs", "1", "--img-size", "32", "--resize-mode", "crop", "--workers", "0"]
        + ["--out", "o", "--normalise", "--normalise-size", "256"]
    )
    assert args.func is cmd_crossval and args.folds == 3 and args.normalise_size == 256
    args = parser.parse_args(["robustness", "ck.safetensors", "d", "--only", "jpeg30,png"])
    assert args.func is cmd_robustness and args.only == ["jpeg30", "png"] and args.split == "test"
    args = parser.parse_args(["audit", "d", "--splits", "s.csv", "--hash-threshold", "4"])
    assert args.hash_threshold == 4 and args.splits == "s.csv"


def test_one_class_set_does_not_crash(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(5):
        save(blob_image(rng), tmp_path / "d" / "fake" / f"{i}.jpg")
    s = run_audit(tmp_path / "d", tmp_path / "out", n_boot=N_BOOT, quiet=True)
    assert s["shortcut_aucs"] == {} and s["metadata_only_auc"] is None
    assert (tmp_path / "out" / "audit.html").is_file()


@pytest.mark.shared
def test_shared_dev_set_is_clean_of_format_and_size_shortcuts(
    shared_data: Path, tmp_path: Path
) -> None:
    s = run_audit(shared_data, tmp_path / "out", n_boot=200, workers=2, quiet=True)
    assert s["n"] == 900 and s["clean"]["format"] and s["clean"]["size"]
    assert "clean of format shortcuts" in s["verdict"][0]
    assert s["duplicates"]["n_identical_files"] >= 1


def test_subcommands_fit_into_the_project_parser(tmp_path: Path) -> None:
    parser = build_parser()
    data = make_set(tmp_path / "d", n=6)
    args = parser.parse_args(["-q", "audit", str(data), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "o" / "audit.json").read_text())["n"] == 12
