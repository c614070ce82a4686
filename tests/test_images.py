"""Tests for fakescope.data.images: every mode to RGB, and a clear reason for every bad file."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import types
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    check_image,
    load_image,
    to_rgb,
    verify_files,
)
from fakescope.data.manifest import DataError

SIZE = (16, 16)


def _pixel(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return img.getpixel(xy)  # type: ignore[return-value]


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 3) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` but whose data is a few bytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _reason(path: Path, **kwargs: int) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    assert info.value.path == str(path)
    assert str(info.value) == f"{path}: {info.value.reason}"
    assert check_image(path, **kwargs) == info.value.reason
    return info.value.reason


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    return path


# ------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 120_000_000
    assert {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".tiff",
        ".jfif",
        ".heic",
        ".avif",
    } <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM"])
def test_common_formats_load_as_rgb(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new("RGB", SIZE, (200, 30, 60)).save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == SIZE
    assert _close(_pixel(img, (8, 8)), (200, 30, 60), tol=12)  # GIF and JPEG are lossy
    assert check_image(path) is None


def test_sixteen_bit_png_scales_by_257(tmp_path: Path) -> None:
    values = np.array([[65535, 257], [0, 32896]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    img = load_image(path)
    assert [_pixel(img, xy)[0] for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [255, 1, 0, 128]
    assert len(set(_pixel(img, (1, 1)))) == 1  # grey


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_sixteen_bit_modes_in_memory(mode: str) -> None:
    raw = np.array([[65535, 32896]], dtype=">u2" if mode == "I;16B" else "<u2").tobytes()
    img = Image.frombytes(mode, (2, 1), raw)
    rgb = to_rgb(img)
    assert _pixel(rgb, (0, 0)) == (255, 255, 255)
    assert _pixel(rgb, (1, 0)) == (128, 128, 128)


def test_mode_i_within_sixteen_bits_and_beyond() -> None:
    sixteen = to_rgb(Image.fromarray(np.array([[65535, 0]], dtype=np.int32)))
    assert _pixel(sixteen, (0, 0)) == (255, 255, 255)
    wide = to_rgb(Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32)))
    assert [_pixel(wide, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_mode() -> None:
    unit = to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    assert [_pixel(unit, (x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = to_rgb(Image.fromarray(np.array([[-2.0, 3.0, 8.0, np.nan]], dtype=np.float32)))
    assert [_pixel(wide, (x, 0))[0] for x in range(4)] == [0, 128, 255, 0]


def test_cmyk_tiff_and_jpeg(tmp_path: Path) -> None:
    cyan = Image.new("CMYK", SIZE, (255, 0, 0, 0))
    cyan.save(tmp_path / "cyan.tif")
    cyan.save(tmp_path / "cyan.jpg", quality=95)
    assert _pixel(load_image(tmp_path / "cyan.tif")) == (0, 255, 255)
    assert _close(_pixel(load_image(tmp_path / "cyan.jpg")), (0, 255, 255), tol=4)


def test_rgba_transparent_becomes_white(tmp_path: Path) -> None:
    arr = np.zeros((*SIZE, 4), dtype=np.uint8)
    arr[:, :, 0] = 255  # red, ...
    arr[:8, :, 3] = 0  # ... fully transparent on top
    arr[8:, :, 3] = 128  # ... half transparent below
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert _pixel(img, (0, 0)) == (255, 255, 255)
    assert _close(_pixel(img, (0, 12)), (255, 127, 127), tol=1)


def test_rgb_colour_key_transparency(tmp_path: Path) -> None:
    img = Image.new("RGB", SIZE, (1, 2, 3))
    img.paste((9, 9, 9), (0, 8, 16, 16))
    img.save(tmp_path / "key.png", transparency=(1, 2, 3))
    out = load_image(tmp_path / "key.png")
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _pixel(out, (0, 12)) == (9, 9, 9)


def test_la_and_pa() -> None:
    la = Image.new("LA", SIZE, (0, 0))
    assert _pixel(to_rgb(la)) == (255, 255, 255)
    pa = Image.new("PA", SIZE, (1, 255))
    pa.putpalette([0, 0, 0, 10, 20, 30])
    assert _pixel(to_rgb(pa)) == (10, 20, 30)


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency(tmp_path: Path, fmt: str) -> None:
    img = Image.new("P", SIZE, 0)
    img.putpalette([9, 9, 9, 0, 0, 255])
    img.paste(1, (0, 8, 16, 16))
    path = tmp_path / f"p.{fmt}"
    img.save(path, transparency=0)
    rgb = load_image(path)
    assert _pixel(rgb, (0, 0)) == (255, 255, 255)
    assert _pixel(rgb, (0, 12)) == (0, 0, 255)


def test_palette_without_transparency(tmp_path: Path) -> None:
    img = Image.new("P", SIZE, 1)
    img.putpalette([0, 0, 0, 40, 50, 60])
    img.save(tmp_path / "p.png")
    assert _pixel(load_image(tmp_path / "p.png")) == (40, 50, 60)


def test_greyscale_and_bilevel(tmp_path: Path) -> None:
    Image.new("L", SIZE, 77).save(tmp_path / "l.png")
    Image.new("1", SIZE, 1).save(tmp_path / "b.png")
    assert _pixel(load_image(tmp_path / "l.png")) == (77, 77, 77)
    assert _pixel(load_image(tmp_path / "b.png")) == (255, 255, 255)


def test_lab_converts_to_grey() -> None:
    rgb = to_rgb(Image.new("LAB", SIZE, (128, 128, 128)))
    r, g, b = _pixel(rgb)
    assert abs(r - g) <= 2 and abs(g - b) <= 2 and 100 < r < 140


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    img = Image.new("RGB", (20, 10), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 2, 2))  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif.tobytes())
    out = load_image(path)
    assert out.size == (10, 20)
    # Orientation 6 means "rotate 90 degrees clockwise to display": top-left goes to top-right.
    assert _pixel(out, (9, 0)) == (255, 0, 0)
    assert _pixel(out, (0, 0)) == (0, 0, 0)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", SIZE, c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert _close(_pixel(load_image(path)), (255, 0, 0))


def test_one_pixel_image(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "dot.png")
    img = load_image(tmp_path / "dot.png")
    assert img.size == (1, 1) and _pixel(img) == (1, 2, 3)


def test_loaded_image_survives_file_removal(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", SIZE, (5, 6, 7)).save(path)
    img = load_image(path)
    path.unlink()
    assert _pixel(img.resize((4, 4))) == (5, 6, 7)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_error_type_and_pickle() -> None:
    err = ImageLoadError("/a/b.png", "file not found")
    assert (err.path, err.reason, str(err)) == (
        "/a/b.png",
        "file not found",
        "/a/b.png: file not found",
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason) == (err.path, err.reason)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").touch()
    assert _reason(tmp_path / "empty.jpg") == "empty file (0 bytes)"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    assert _reason(tmp_path / "notes.jpg") == "not a recognised image format"


def test_heic_without_decoder_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    assert _reason(tmp_path / "photo.heic").startswith("not a recognised image format")


def test_truncated_jpeg(tmp_path: Path, jpeg: Path) -> None:
    data = jpeg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert _reason(cut).startswith("truncated or corrupt image data: ")
    assert check_image(jpeg) is None


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    full = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert _reason(cut).startswith("truncated or corrupt image data: ")


def test_missing_file(tmp_path: Path) -> None:
    assert _reason(tmp_path / "nope.png") == "file not found"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    assert "directory" in _reason(tmp_path / "folder.png")


def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", SIZE).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        assert _reason(path) == "permission denied"
    finally:
        path.chmod(0o644)


def test_permission_denied_when_open_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores file modes, so simulate the failure where the file is opened.
    path = tmp_path / "secret.png"
    Image.new("RGB", SIZE).save(path)

    def deny(*args: object, **kwargs: object) -> Image.Image:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", deny)
    assert _reason(path) == "permission denied"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_over_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 12000, 12000)
    assert path.stat().st_size < 200
    reason = _reason(path)
    assert reason == (
        "image is 12000x12000 = 144,000,000 pixels, over the limit of 120,000,000 "
        "(possible decompression bomb)"
    )


def test_pils_guard_stays_on_above_twice_its_global(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    # Even with no limit of ours, PIL's own guard refuses the header; nothing is decoded.
    for limit in (None, 10**10):
        reason = _reason(path, max_pixels=limit)
        assert reason.startswith("possible decompression bomb: ")
        assert "900000000 pixels" in reason
    assert before == Image.MAX_IMAGE_PIXELS


def test_pixel_limits_are_per_call_and_pils_global_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads with different limits get their own answers; PIL's guard is never switched off."""
    original = Image.MAX_IMAGE_PIXELS
    writes: list[object] = []

    class WatchedModule(types.ModuleType):
        def __setattr__(self, name: str, value: object) -> None:
            if name == "MAX_IMAGE_PIXELS":
                writes.append(value)
            super().__setattr__(name, value)

    monkeypatch.setattr(Image, "__class__", WatchedModule)
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(small)  # 60,000 pixels
    bomb = _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    rounds, stop, seen = 60, threading.Event(), set()

    def allow() -> list[bool]:
        return [load_image(small, max_pixels=100_000).size == (300, 200) for _ in range(rounds)]

    def refuse() -> list[bool]:
        return [
            "over the limit of 50,000" in (check_image(small, max_pixels=50_000) or "")
            for _ in range(rounds)
        ]

    def bomb_without_our_limit() -> list[bool]:
        return [
            (check_image(bomb, max_pixels=None) or "").startswith("possible decompression bomb")
            for _ in range(rounds)
        ]

    def third_party_open() -> list[bool]:
        # Code elsewhere in the process that relies on PIL's guard while we load images.
        out = []
        for _ in range(rounds):
            try:
                Image.open(bomb).close()
                out.append(False)
            except Image.DecompressionBombError:
                out.append(True)
        return out

    def watch() -> None:
        while not stop.is_set():
            seen.add(Image.MAX_IMAGE_PIXELS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(f) for f in (allow, refuse, bomb_without_our_limit)]
            futures.append(pool.submit(third_party_open))
            results = [f.result() for f in futures]
    finally:
        stop.set()
        watcher.join()
    assert [all(r) for r in results] == [True, True, True, True]
    assert writes == []
    assert seen == {original}
    assert original == Image.MAX_IMAGE_PIXELS


def test_small_max_pixels(tmp_path: Path) -> None:
    Image.new("RGB", SIZE).save(tmp_path / "x.png")
    reason = _reason(tmp_path / "x.png", max_pixels=100)
    assert "16x16 = 256 pixels, over the limit of 100" in reason
    assert load_image(tmp_path / "x.png", max_pixels=256).size == SIZE


# ------------------------------------------------------------------------------------------
# verify_files
# ------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_table(tmp_path: Path, jpeg: Path) -> pd.DataFrame:
    (tmp_path / "empty.png").touch()
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("L", SIZE, 3).save(tmp_path / "grey.png")
    rows = [
        (str(jpeg), 1, "a"),
        (str(tmp_path / "empty.png"), 0, "b"),
        (str(tmp_path / "grey.png"), 0, "c"),
        (str(tmp_path / "missing.png"), 1, "d"),
        (str(tmp_path / "text.jpg"), 1, "e"),
    ]
    return pd.DataFrame(rows, columns=["path", "label", "note"], index=[10, 11, 12, 13, 14])


@pytest.mark.parametrize("workers", [0, 2])
def test_verify_files_separates_and_keeps_order(mixed_table: pd.DataFrame, workers: int) -> None:
    good, skipped = verify_files(mixed_table, workers=workers)
    assert list(good.columns) == ["path", "label", "note"]
    assert list(good["note"]) == ["a", "c"]
    assert list(good.index) == [0, 1]
    assert list(skipped.columns) == ["path", "label", "reason"]
    assert list(skipped["path"]) == list(mixed_table["path"].iloc[[1, 3, 4]])
    assert list(skipped["label"]) == [0, 1, 1]
    assert list(skipped["reason"]) == [
        "empty file (0 bytes)",
        "file not found",
        "not a recognised image format",
    ]


def test_verify_files_without_label_column(mixed_table: pd.DataFrame) -> None:
    good, skipped = verify_files(mixed_table[["path"]], progress=True)
    assert len(good) == 2 and len(skipped) == 3
    assert skipped["label"].isna().all()


def test_verify_files_empty_and_missing_column() -> None:
    good, skipped = verify_files(pd.DataFrame({"path": [], "label": []}))
    assert good.empty and skipped.empty
    assert list(skipped.columns) == ["path", "label", "reason"]
    with pytest.raises(DataError, match="no 'path' column"):
        verify_files(pd.DataFrame({"file": ["x.png"]}))
