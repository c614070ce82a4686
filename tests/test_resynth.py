"""Tests for re-synthesising real photos into simulated-generator fakes (fakescope.demo.resynth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.demo import resynthesize_folder

FAST = {"size": 32, "seed": 0, "train_steps": 5, "train_crop": 16}


def _photos(root: Path, n: int = 3) -> list[Path]:
    """Small textured colour photos of assorted sizes and one greyscale one."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = 40 + 8 * i, 48 - 4 * i
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = root / f"photo_{i}.jpg"
        Image.fromarray(arr).save(path, quality=95)
        paths.append(path)
    grey = root / "grey.png"
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8), mode="L").save(grey)
    return [*paths, grey]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_count_size_and_format(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in")
    out = resynthesize_folder(src, tmp_path / "out", **FAST)
    assert len(out) == len(src)
    assert all(p.parent == tmp_path / "out" and p.is_file() for p in out)
    for path in out:
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.size == (32, 32)
            assert img.mode == "RGB"


def test_png_and_small_photos_are_upscaled(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in", n=1)
    out = resynthesize_folder(src, tmp_path / "out", **{**FAST, "size": 64}, fmt="png")
    for path in out:
        assert path.suffix == ".png"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (64, 64)


def test_output_differs_from_input(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in")
    out = resynthesize_folder(src, tmp_path / "out", **FAST, fmt="png")
    for s, o in zip(src, out, strict=True):
        original = _load(s)
        h, w = original.shape[:2]
        top, left = (h - 32) // 2, (w - 32) // 2
        crop = original[top : top + 32, left : left + 32]
        assert np.abs(_load(o) - crop).mean() > 1.0


def test_greyscale_stays_greyscale(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in", n=1)
    out = resynthesize_folder(src, tmp_path / "out", **FAST, fmt="png")
    arr = _load(out[-1])
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


def test_deterministic_file_list(tmp_path: Path) -> None:
    src = _photos(tmp_path / "in")
    a = resynthesize_folder(src, tmp_path / "a", **FAST, fmt="png")
    b = resynthesize_folder(src, tmp_path / "b", **FAST, fmt="png")
    assert [p.name for p in a] == [p.name for p in b]
    assert [p.name for p in a] == [
        "00000_photo_0.png",
        "00001_photo_1.png",
        "00002_photo_2.png",
        "00003_grey.png",
    ]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [p.name for p in a]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"size": 4}, "size"), ({"fmt": "gif"}, "format"), ({"train_steps": -1}, "train_steps")],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    src = _photos(tmp_path / "in", n=1)
    with pytest.raises(ValueError, match=match):
        resynthesize_folder(src, tmp_path / "out", **{**FAST, **kwargs})


def test_no_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no photos"):
        resynthesize_folder([], tmp_path / "out")
