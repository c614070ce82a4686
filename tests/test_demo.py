"""Tests for the offline demo data set (fakescope.demo)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.demo import make_demo_dataset

SMALL = {"n_per_class": 12, "size": 32, "seed": 0, "train_steps": 20}
GREY_PHOTOS = {
    "camera",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
    "clock_motion",
    "page",
    "text",
}


def _pngs(root: Path, cls: str) -> list[Path]:
    return sorted((root / cls).glob("*/*.png"))


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", **SMALL)


def test_counts_per_class(demo_dir: Path) -> None:
    assert len(_pngs(demo_dir, "real")) == SMALL["n_per_class"]
    assert len(_pngs(demo_dir, "fake")) == SMALL["n_per_class"]
    meta = json.loads((demo_dir / "demo.json").read_text())
    assert meta["counts"] == {"real": 12, "fake": 12}
    assert meta["params"]["n_per_class"] == 12


def test_layout_and_readme(demo_dir: Path) -> None:
    assert sorted(p.name for p in demo_dir.iterdir()) == ["README.txt", "demo.json", "fake", "real"]
    for cls in ("real", "fake"):
        for path in _pngs(demo_dir, cls):
            group = path.parent.name
            assert re.fullmatch(re.escape(group) + r"_\d+\.png", path.name), path
    readme = (demo_dir / "README.txt").read_text()
    assert "scikit-image" in readme and "autoencoder" in readme


def test_png_format_and_size(demo_dir: Path) -> None:
    for path in _pngs(demo_dir, "real") + _pngs(demo_dir, "fake"):
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            assert img.size == (SMALL["size"], SMALL["size"])


def test_both_classes_cover_the_same_photo_groups(demo_dir: Path) -> None:
    def groups(cls: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for path in _pngs(demo_dir, cls):
            out[path.parent.name] = out.get(path.parent.name, 0) + 1
        return out

    real, fake = groups("real"), groups("fake")
    assert len(real) >= 5
    assert real == fake


def test_fakes_are_not_copies_of_reals(demo_dir: Path) -> None:
    reals = [_load(p) for p in _pngs(demo_dir, "real")]
    for path in _pngs(demo_dir, "fake"):
        fake = _load(path)
        assert not any(np.array_equal(fake, real) for real in reals), path


def test_fakes_of_greyscale_photos_stay_greyscale(demo_dir: Path) -> None:
    grey = [p for p in _pngs(demo_dir, "fake") if p.parent.name in GREY_PHOTOS]
    assert grey
    for path in grey:
        arr = _load(path)
        assert np.array_equal(arr[..., 0], arr[..., 1])
        assert np.array_equal(arr[..., 0], arr[..., 2])


def test_rerun_reuses_complete_dataset(demo_dir: Path) -> None:
    files = sorted(demo_dir.rglob("*"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    start = time.perf_counter()
    assert make_demo_dataset(demo_dir, **SMALL) == demo_dir
    assert time.perf_counter() - start < 1.0
    assert sorted(demo_dir.rglob("*")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_incomplete_dataset_is_regenerated(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path / "d", **SMALL)
    (out / "demo.json").unlink()
    stray = out / "real" / "stray" / "stray_0.png"
    stray.parent.mkdir()
    Image.new("RGB", (8, 8)).save(stray)
    make_demo_dataset(out, **SMALL)
    assert not stray.exists()
    assert (out / "demo.json").is_file()
    assert len(_pngs(out, "real")) == len(_pngs(out, "fake")) == SMALL["n_per_class"]


def test_changed_parameters_regenerate(tmp_path: Path) -> None:
    out = make_demo_dataset(tmp_path / "d", **SMALL)
    make_demo_dataset(out, **{**SMALL, "n_per_class": 7})
    assert len(_pngs(out, "real")) == len(_pngs(out, "fake")) == 7
    assert json.loads((out / "demo.json").read_text())["params"]["n_per_class"] == 7


def test_deterministic_for_a_seed(tmp_path: Path, demo_dir: Path) -> None:
    other = make_demo_dataset(tmp_path / "again", **SMALL)
    for cls in ("real", "fake"):
        assert [p.relative_to(other) for p in _pngs(other, cls)] == [
            p.relative_to(demo_dir) for p in _pngs(demo_dir, cls)
        ]
    for a, b in zip(_pngs(other, "real"), _pngs(demo_dir, "real"), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_refuses_to_delete_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path, **SMALL)
    assert (tmp_path / "real").is_dir()


@pytest.mark.parametrize(
    "bad", [{"n_per_class": 0}, {"size": 4}, {"train_steps": -1}, {"size": 100_000}]
)
def test_bad_parameters_raise(tmp_path: Path, bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path / "d", **{**SMALL, **bad})
