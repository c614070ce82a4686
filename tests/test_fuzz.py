"""A short, seeded fuzz of the untrusted-file loaders: only ImageLoadError / VideoError may escape.

Cases are mutated tiny valid images and clips (and random bytes); the seeds, the mutations and
the checks are ``tests/fuzz_harness.py``'s; ``bench/fuzz.py`` runs the same property for
thousands of cases.
"""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakescope.data import video as V

from . import fuzz_harness as fz

pytest.importorskip("av")

CASE_TIMEOUT_S = 5.0
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

IMAGE_SEEDS = fz.image_seeds()
VIDEO_SEEDS = fz.video_seeds()
IMAGE_SUFFIXES = sorted({Path(name).suffix for name in IMAGE_SEEDS} | {".heic", ".ppm"})


def _image_case(workdir: Path, case: tuple[str, bytes]) -> None:
    """One mutated image through the loaders: loads, or fails with ImageLoadError, in time."""
    name, data = case
    path = workdir / f"case{Path(name).suffix}"
    path.write_bytes(data)
    with fz.time_limit(CASE_TIMEOUT_S):
        fz.check_image_case(path)


def _video_case(workdir: Path, case: tuple[str, bytes], mode: str) -> None:
    """One mutated clip through probing and sampling: frames, or a VideoError, in time."""
    name, data = case
    path = workdir / f"clip{Path(name).suffix}"
    path.write_bytes(data)
    with fz.time_limit(CASE_TIMEOUT_S):
        fz.check_video_case(path, mode)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(case=fz.mutated(IMAGE_SEEDS))
def test_fuzz_mutated_images(workdir: Path, case: tuple[str, bytes]) -> None:
    _image_case(workdir, case)


@pytest.mark.filterwarnings("ignore")
@settings(FUZZ, max_examples=100)
@given(data=st.binary(max_size=300), suffix=st.sampled_from(IMAGE_SUFFIXES))
def test_fuzz_random_bytes_as_images(workdir: Path, data: bytes, suffix: str) -> None:
    path = workdir / f"random{suffix}"
    path.write_bytes(data)
    with fz.time_limit(CASE_TIMEOUT_S):
        fz.check_image_case(path)


@pytest.mark.filterwarnings("ignore")
@FUZZ
@given(case=fz.mutated(VIDEO_SEEDS), mode=st.sampled_from(("uniform", "interval", "keyframes")))
def test_fuzz_mutated_videos(workdir: Path, case: tuple[str, bytes], mode: str) -> None:
    _video_case(workdir, case, mode)


def test_video_seeds_are_valid(workdir: Path) -> None:
    """The fuzz starts from clips that do load, so mutations reach the decoders."""
    assert any(Path(name).suffix in (".mp4", ".webm") for name in VIDEO_SEEDS)
    for name, data in VIDEO_SEEDS.items():
        path = workdir / f"seed-{name}"
        path.write_bytes(data)
        assert fz.check_video_case(path, "uniform") == "sampled frames", name
    for name, data in IMAGE_SEEDS.items():
        path = workdir / f"seed-{name}"
        path.write_bytes(data)
        assert fz.check_image_case(path) == "loaded", name


# -------------------------------------------------------------- what the long fuzz run found
def test_fuzz_finding_stream_without_decoder(workdir: Path) -> None:
    """An AVI whose codec tag names no known codec: PyAV gives the stream no codec context."""
    if "clip.avi" not in VIDEO_SEEDS:
        pytest.skip("no MPEG-4 encoder to write the AVI seed")
    path = workdir / "unknown-codec.avi"
    path.write_bytes(VIDEO_SEEDS["clip.avi"].replace(b"FMP4", b"QQQQ"))
    for call in (lambda: V.probe_video(path), lambda: list(V.sample_frames(path))):
        with pytest.raises(V.VideoError, match="unsupported video codec"):
            call()


# A mutated WebM (bench/fuzz.py) whose keyframe pass finds no flagged keyframe and whose demuxer
# then refuses to seek back (FFmpeg returns EPERM), zlib-compressed and base64-encoded.
_REWIND_FAILS_WEBM = (
    "eNqTcr2/eL5TWyOj03cg/tTI4vS5kcOpqaU8NSnXqb2Ryam1kUkiuCGdkcGBgYGBKUjQd3bJLt/d3cGrW0Q9GxdC"
    "WGIh67KD1zTe8N3dA+QJhRxOD17TxCgN4coE7wZKNjFpvWFkAINIBloBUc+VaZu0rm9s5ndy8G3o9UksSzMz0jME"
    "IgOjcEdUvktnh0PTAbA2kPP3rYO6zvR6I2Px0Y6dG9ZVS+THNs5pZFDaOqe5NC+lo5GhrTUsPizAsrmRUflxcwvr"
    "14cMD9o2NCrsapQA+flGcfGC5AMN6SdmuS5ud/Vz9ndxDXJpR7W1uHhT8oHuZIT56ScWui7ucAkNcgzx9PdzaZ9s"
    "YGAFRnpmBlDAIO+8rdQBAOBufIM="
)


def test_fuzz_finding_failed_rewind_is_a_video_error(workdir: Path) -> None:
    path = workdir / "rewind.webm"
    path.write_bytes(zlib.decompress(base64.b64decode(_REWIND_FAILS_WEBM)))
    try:
        frames = list(V.sample_frames(path, "keyframes"))
    except V.VideoError as e:
        assert e.reason
    else:
        assert all(f.image.mode == "RGB" for f in frames)


# ------------------------------------------------- the long run (make test-all: -m slow included)
LONG = settings(FUZZ, max_examples=2000)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@LONG
@given(case=fz.mutated(IMAGE_SEEDS))
def test_long_fuzz_of_images(workdir: Path, case: tuple[str, bytes]) -> None:
    _image_case(workdir, case)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@LONG
@given(case=fz.mutated(VIDEO_SEEDS), mode=st.sampled_from(("uniform", "interval", "keyframes")))
def test_long_fuzz_of_videos(workdir: Path, case: tuple[str, bytes], mode: str) -> None:
    _video_case(workdir, case, mode)
