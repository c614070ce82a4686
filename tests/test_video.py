"""Video sampling, probing, aggregation and timeline plots on tiny clips written with PyAV."""

from __future__ import annotations

import math
import pickle
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakescope.data import video as V
from fakescope.data.video import probe as video_probe
from fakescope.data.video import rotation as video_rotation
from fakescope.data.video import sampling as video_sampling
from fakescope.infer import video as VS

from .helpers import CLIP_H as H
from .helpers import CLIP_W as W
from .helpers import MP4_CODEC, WEBM_CODEC, cfr, write_audio_only, write_clip
from .helpers import frame_level as _level

av = pytest.importorskip("av")


# --------------------------------------------------------------------------------- clip writers
needs_mp4 = pytest.mark.skipif(MP4_CODEC is None, reason="no H.264 or MPEG-4 encoder in PyAV")


def write_gif(path: Path, durations_ms: Sequence[int]) -> Path:
    frames = [
        Image.new("RGB", (W, H), (40 * i % 256, 200 - 30 * i, 90)) for i in range(len(durations_ms))
    ]
    frames[0].save(
        path, save_all=True, append_images=frames[1:], duration=list(durations_ms), loop=0
    )
    return path


def mean_level(img: Image.Image) -> float:
    """Mean grey level of the bottom-right quarter (away from the white marker)."""
    return float(np.asarray(img)[H // 2 :, W // 2 :].mean())


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny clips shared by the module's tests (written once)."""
    if MP4_CODEC is None:
        pytest.skip("no H.264 or MPEG-4 encoder in PyAV")
    root = tmp_path_factory.mktemp("clips")
    return {
        "cfr": write_clip(root / "cfr.mp4", cfr(30, 10), gop=10),  # 3 s, keyframes at 0, 1, 2 s
        "vfr": write_clip(root / "vfr.mp4", [0, 0.1, 0.15, 0.6, 0.65, 1.4, 2.0], gop=100),
        "long": write_clip(root / "long.mp4", cfr(240, 4), rate=4, gop=8),  # 60 s, key every 2 s
    }


@pytest.fixture
def count_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every frame the package decodes (through its single decode helper, ``_decoded``,
    which probing and sampling both call)."""
    counter = [0]
    real = video_probe._decoded

    def counting(*args: object, **kwargs: object) -> Iterator[object]:
        for frame in real(*args, **kwargs):  # type: ignore[arg-type]
            counter[0] += 1
            yield frame

    monkeypatch.setattr(video_probe, "_decoded", counting)
    monkeypatch.setattr(video_sampling, "_decoded", counting)
    return counter


def _check_frames(frames: list[V.Frame], duration: float, size: tuple[int, int] = (W, H)) -> None:
    assert [f.index for f in frames] == list(range(len(frames)))
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(0 <= t <= duration for t in times)
    assert all(f.image.mode == "RGB" and f.image.size == size for f in frames)


# ------------------------------------------------------------------------------------ probing
def test_probe_video(clips: dict[str, Path]) -> None:
    info = V.probe_video(clips["cfr"])
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert info.fps == pytest.approx(10.0)
    assert info.n_frames in (30, None)
    assert (info.width, info.height, info.rotation) == (W, H, 0)
    assert info.codec in ("h264", "mpeg4")


def test_is_video(tmp_path: Path, clips: dict[str, Path]) -> None:
    still = tmp_path / "still.gif"
    Image.new("RGB", (W, H), "red").save(still)
    broken = tmp_path / "broken.webp"
    broken.write_bytes(b"RIFF not really")
    assert V.is_video(clips["cfr"])
    assert V.is_video(tmp_path / "not-even-there.MOV")  # containers go by extension
    assert V.is_video(write_gif(tmp_path / "anim.gif", [100, 100, 100]))
    assert not V.is_video(still)
    assert not V.is_video(broken)
    assert not V.is_video(tmp_path / "photo.png")


# -------------------------------------------------------------------------------- sampling modes
def test_uniform(clips: dict[str, Path]) -> None:
    frames = list(V.sample_frames(clips["cfr"], "uniform", n=6))
    assert len(frames) == 6
    _check_frames(frames, 3.0)
    # centres of six 0.5 s segments: 0.25, 0.75, ... -> frames shown then (0.2, 0.7, ...)
    assert [f.time_s for f in frames] == pytest.approx([0.2, 0.7, 1.2, 1.7, 2.2, 2.7])
    assert mean_level(frames[1].image) == pytest.approx(_level(7), abs=4)


def test_uniform_more_than_available(clips: dict[str, Path]) -> None:
    frames = list(V.sample_frames(clips["cfr"], "uniform", n=50, max_frames=64))
    assert len(frames) == 30  # every frame once, no duplicates, no error
    _check_frames(frames, 3.0)
    assert [f.time_s for f in frames] == pytest.approx(cfr(30, 10))


def test_uniform_capped_by_max_frames(clips: dict[str, Path]) -> None:
    assert len(list(V.sample_frames(clips["cfr"], "uniform", n=20, max_frames=5))) == 5


def test_interval(clips: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    frames = list(V.sample_frames(clips["cfr"], "interval", every_s=0.5))
    assert [f.time_s for f in frames] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5])
    _check_frames(frames, 3.0)
    capped = list(V.sample_frames(clips["cfr"], "interval", every_s=0.5, max_frames=4))
    assert [f.time_s for f in capped] == pytest.approx([0, 0.5, 1.0, 1.5])
    assert "capped" in caplog.text


def test_keyframes(clips: dict[str, Path]) -> None:
    frames = list(V.sample_frames(clips["cfr"], "keyframes"))
    assert [f.time_s for f in frames] == pytest.approx([0.0, 1.0, 2.0])
    _check_frames(frames, 3.0)
    assert len(list(V.sample_frames(clips["cfr"], "keyframes", max_frames=2))) == 2


def test_keyframes_without_flagged_packets(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = video_sampling._decoded

    def no_flags(*args: object, keyframes_only: bool = False) -> Iterator[object]:
        return iter(()) if keyframes_only else real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(
        video_sampling, "_decoded", no_flags
    )  # as if the container flagged no keyframes
    frames = list(V.sample_frames(clips["cfr"], "keyframes"))
    assert [f.time_s for f in frames] == pytest.approx([0.0, 1.0, 2.0])


def test_variable_frame_rate_times(clips: dict[str, Path]) -> None:
    written = [0, 0.1, 0.15, 0.6, 0.65, 1.4, 2.0]
    every = list(V.sample_frames(clips["vfr"], "uniform", n=60))
    assert [f.time_s for f in every] == pytest.approx(written, abs=1e-3)
    levels = [mean_level(f.image) for f in every]
    assert levels == pytest.approx([_level(i) for i in range(7)], abs=4)
    # on screen at 0, 0.5, 1.0, 1.5, 2.0 s: the frames written at 0, 0.15, 0.65, 1.4, 2.0 s
    spaced = list(V.sample_frames(clips["vfr"], "interval", every_s=0.5))
    assert [f.time_s for f in spaced] == pytest.approx([0, 0.15, 0.65, 1.4, 2.0], abs=1e-3)


def test_long_clip_uniform_is_bounded(clips: dict[str, Path], count_decoded: list[int]) -> None:
    frames = list(V.sample_frames(clips["long"], "uniform", n=8))
    assert len(frames) == 8
    expected = [(i + 0.5) * 7.5 for i in range(8)]  # segment centres of a 60 s clip
    assert [f.time_s for f in frames] == pytest.approx(expected, abs=0.25)
    assert 8 <= count_decoded[0] <= 8 * 9  # at most a GOP per target, far from all 240


def test_unknown_duration_falls_back(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video_sampling, "_duration_s", lambda container, stream: None)
    uniform = list(V.sample_frames(clips["cfr"], "uniform", n=5, max_frames=8))
    assert len(uniform) == 5
    _check_frames(uniform, 3.0)
    assert uniform[0].time_s < 0.6 and uniform[-1].time_s > 2.2  # spread over the whole clip
    spaced = list(V.sample_frames(clips["cfr"], "interval", every_s=1.0))
    assert [f.time_s for f in spaced] == pytest.approx([0.0, 1.0, 2.0])


@pytest.mark.skipif(WEBM_CODEC is None, reason="no VP8/VP9 encoder in PyAV")
def test_webm(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.webm", cfr(20, 10), codec=WEBM_CODEC, gop=10)
    info = V.probe_video(clip)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.codec.startswith("vp") or "vp" in info.codec
    for mode, expected in (("uniform", 4), ("interval", 2), ("keyframes", 2)):
        frames = list(V.sample_frames(clip, mode, n=4, every_s=1.0))
        assert len(frames) == expected, mode
        _check_frames(frames, 2.0)


# ------------------------------------------------------------------------------------ rotation
def test_rotate_upright_helper() -> None:
    img = Image.new("RGB", (4, 2), "black")
    img.putpixel((0, 0), (255, 255, 255))  # top-left marker
    assert V.rotate_upright(img, 0) is img
    ccw = V.rotate_upright(img, 90)  # counter-clockwise: top-left goes to bottom-left
    assert ccw.size == (2, 4) and ccw.getpixel((0, 3)) == (255, 255, 255)
    cw = V.rotate_upright(img, -90)  # clockwise: top-left goes to top-right
    assert cw.size == (2, 4) and cw.getpixel((1, 0)) == (255, 255, 255)
    half = V.rotate_upright(img, 180)
    assert half.getpixel((3, 1)) == (255, 255, 255)
    assert [V.normalize_rotation(d) for d in (0, 90, -90, 180, -180, 270, 359.6)] == [
        0,
        90,
        270,
        180,
        180,
        270,
        0,
    ]


def _display_matrix(ccw_degrees: float) -> bytes:
    """FFmpeg's av_display_rotation_set(-ccw): the matrix a clip rotated ``ccw_degrees`` carries."""
    r = math.radians(ccw_degrees)
    c, s = math.cos(r), math.sin(r)
    fixed = [round(v * 65536) for v in (c, -s, 0, s, c, 0)]
    return struct.pack("=9i", fixed[0], fixed[1], 0, fixed[3], fixed[4], 0, 0, 0, 1 << 30)


@pytest.mark.parametrize("degrees", [0, 90, -90, 180])
def test_rotation_from_display_matrix(degrees: int) -> None:
    got = V.rotation_from_display_matrix(_display_matrix(degrees))
    assert V.normalize_rotation(got) == V.normalize_rotation(degrees)


def test_rotation_fallbacks_for_older_pyav() -> None:
    class Kind:
        name = "DISPLAYMATRIX"

    class SideData(bytes):
        type = Kind()

    class OldFrame:  # PyAV < 14: no .rotation, only side data
        side_data = [SideData(_display_matrix(-90))]

    class Stream:
        metadata: dict[str, str] = {}

    class TaggedFrame:
        rotation = 0

    class TaggedStream:
        metadata = {"rotate": "90"}  # legacy tag: clockwise

    assert video_rotation._frame_rotation(OldFrame(), Stream()) == pytest.approx(-90)  # type: ignore[arg-type]
    assert video_rotation._frame_rotation(TaggedFrame(), TaggedStream()) == -90  # type: ignore[arg-type]
    assert video_rotation._frame_rotation(TaggedFrame(), Stream()) == 0  # type: ignore[arg-type]


@needs_mp4
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_clip_comes_out_upright(tmp_path: Path, rotation: int) -> None:
    stream_cls = av.video.stream.VideoStream
    if not hasattr(stream_cls, "set_display_rotation"):
        pytest.skip("this PyAV cannot write rotation metadata")
    clip = write_clip(tmp_path / "rot.mp4", cfr(5, 10), rotation=rotation)
    info = V.probe_video(clip)
    assert info.rotation == V.normalize_rotation(rotation)
    with av.open(str(clip)) as container:  # the fallback parser agrees with PyAV's own reading
        first = next(container.decode(video=0))
        matrix = next(d for d in first.side_data if d.type.name == "DISPLAYMATRIX")
        assert V.rotation_from_display_matrix(bytes(matrix)) == pytest.approx(first.rotation)
    (frame,) = V.sample_frames(clip, "uniform", n=1)
    assert frame.image.size == (info.width, info.height)
    assert frame.image.size == ((H, W) if rotation in (90, -90) else (W, H))
    marker = {90: "bottom-left", -90: "top-right", 180: "bottom-right"}[rotation]
    px = np.asarray(frame.image).mean(axis=2)
    h, w = px.shape
    corners = {
        "top-left": px[: h // 4, : w // 4],
        "top-right": px[: h // 4, -w // 4 :],
        "bottom-left": px[-h // 4 :, : w // 4],
        "bottom-right": px[-h // 4 :, -w // 4 :],
    }
    assert max(corners, key=lambda k: corners[k].mean()) == marker


# ------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(V.VideoError, match="not found") as err:
        V.sample_frames(missing)
    assert err.value.path == missing and str(err.value) == f"{missing}: file not found"
    with pytest.raises(V.VideoError, match="not found"):
        V.probe_video(missing)


def test_audio_only(tmp_path: Path) -> None:
    clip = write_audio_only(tmp_path / "speech.mp4")
    with pytest.raises(V.VideoError, match="no video stream"):
        V.probe_video(clip)
    with pytest.raises(V.VideoError, match="no video stream"):
        list(V.sample_frames(clip))


def test_text_file_named_mp4(tmp_path: Path) -> None:
    clip = tmp_path / "notes.mp4"
    clip.write_text("definitely not a video\n")
    with pytest.raises(V.VideoError, match="not a recognised video format") as err:
        list(V.sample_frames(clip))
    assert err.value.reason == "not a recognised video format"
    with pytest.raises(V.VideoError, match="not a recognised video format"):
        V.probe_video(clip)


@needs_mp4
def test_truncated_mp4(tmp_path: Path, clips: dict[str, Path]) -> None:
    cut = tmp_path / "cut.mp4"  # the index (moov) is written last, so half a file has none
    cut.write_bytes(clips["cfr"].read_bytes()[: clips["cfr"].stat().st_size // 2])
    with pytest.raises(V.VideoError, match="truncated or corrupt video data"):
        list(V.sample_frames(cut))


@needs_mp4
def test_truncated_faststart_mp4_keeps_what_decodes(tmp_path: Path) -> None:
    whole = write_clip(
        tmp_path / "fast.mp4",
        cfr(20, 10),
        gop=5,
        noise=True,
        container_options={"movflags": "faststart"},
    )
    cut = tmp_path / "fast-cut.mp4"  # index first, then half the frames' data
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    frames = list(V.sample_frames(cut, "keyframes"))
    assert 1 <= len(frames) < 4
    empty = tmp_path / "fast-empty.mp4"
    empty.write_bytes(whole.read_bytes()[: whole.stat().st_size // 20])
    with pytest.raises(V.VideoError, match="no decodable frames|truncated or corrupt video data"):
        list(V.sample_frames(empty))


def test_bad_arguments(clips: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="uniform, interval, keyframes"):
        V.sample_frames(clips["cfr"], "random")
    with pytest.raises(ValueError):
        V.sample_frames(clips["cfr"], n=0)
    with pytest.raises(ValueError):
        V.sample_frames(clips["cfr"], "interval", every_s=0)


def test_video_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(V.VideoError("a/b.mp4", "no video stream")))
    assert (str(err), err.reason, err.path) == (
        "a/b.mp4: no video stream",
        "no video stream",
        Path("a/b.mp4"),
    )


# ------------------------------------------------------------------------------ animated images
def test_animated_gif(tmp_path: Path) -> None:
    gif = write_gif(tmp_path / "anim.gif", [100, 200, 300, 400])  # starts 0, .1, .3, .6; 1 s
    info = V.probe_video(gif)
    assert (info.n_frames, info.codec, info.width, info.height) == (4, "gif", W, H)
    assert info.duration_s == pytest.approx(1.0)
    every = list(V.sample_frames(gif, "keyframes"))
    assert [f.time_s for f in every] == pytest.approx([0, 0.1, 0.3, 0.6])
    _check_frames(every, 1.0)
    assert every[2].image.getpixel((0, 0)) == (80, 140, 90)
    # uniform centres .125, .375, .625, .875 show frames 1, 2, 3, 3
    assert [f.time_s for f in V.sample_frames(gif, "uniform", n=4)] == pytest.approx(
        [0.1, 0.3, 0.6]
    )
    spaced = V.sample_frames(gif, "interval", every_s=0.25)  # 0, .25, .5, .75 -> frames 0..3
    assert [f.time_s for f in spaced] == pytest.approx([0, 0.1, 0.3, 0.6])
    assert len(list(V.sample_frames(gif, "keyframes", max_frames=2))) == 2


def test_still_gif_is_not_a_video(tmp_path: Path) -> None:
    still = tmp_path / "still.gif"
    Image.new("RGB", (W, H), "red").save(still)
    with pytest.raises(V.VideoError, match="no video stream"):
        V.probe_video(still)
    with pytest.raises(V.VideoError, match="no video stream"):
        list(V.sample_frames(still))


# -------------------------------------------------------------------------------- aggregation
SCORES = [0.1, 0.9, 0.4, 0.8, 0.3]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("mean", np.mean(SCORES)),
        ("median", np.median(SCORES)),
        ("max", np.max(SCORES)),
        ("topk", np.mean([0.9, 0.8, 0.4])),
    ],
)
def test_aggregate(method: str, expected: float) -> None:
    assert VS.aggregate(SCORES, method, k=3) == pytest.approx(expected)
    assert isinstance(VS.aggregate(SCORES, method), float)


def test_aggregate_topk_edges() -> None:
    assert VS.aggregate(SCORES, "topk", k=99) == pytest.approx(np.mean(SCORES))
    assert VS.aggregate(SCORES, "topk", k=1) == pytest.approx(0.9)
    assert VS.aggregate(np.array([0.2, 0.6]), "median") == pytest.approx(0.4)


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        VS.aggregate([], "mean")
    with pytest.raises(ValueError, match="mean, median, topk, max"):
        VS.aggregate(SCORES, "mode")
    with pytest.raises(ValueError):
        VS.aggregate(SCORES, "topk", k=0)


# ----------------------------------------------------------------------------------- timeline
def test_timeline_rows() -> None:
    frames = [V.Frame(0, 0.5, Image.new("RGB", (2, 2))), V.Frame(1, 1.5, Image.new("RGB", (2, 2)))]
    rows = VS.timeline_rows(frames, np.array([0.25, 0.75], dtype=np.float32))
    assert rows == [
        {"index": 0, "time_s": 0.5, "score": 0.25},
        {"index": 1, "time_s": 1.5, "score": 0.75},
    ]
    assert all(type(r["score"]) is float for r in rows)
    assert VS.timeline_rows([{"index": 3, "time_s": 2.0}], [0.5]) == [
        {"index": 3, "time_s": 2.0, "score": 0.5}
    ]
    with pytest.raises(ValueError):
        VS.timeline_rows(frames, [0.1])


@pytest.mark.parametrize("band", [None, 0.1])
def test_plot_timeline(tmp_path: Path, band: float | None) -> None:
    out = VS.plot_timeline(
        [0.25, 0.75, 1.25, 1.75],
        [0.2, 0.7, 0.55, 0.9],
        tmp_path / "plots" / "t.png",
        band=band,
        title="clip",
    )
    assert out == tmp_path / "plots" / "t.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 50
        px = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in px}
    assert (31, 119, 180) in colours and (207, 34, 46) in colours  # the scores, the threshold
    assert ((226, 228, 240) in colours) == bool(band)  # the uncertain band, when given
    with pytest.raises(ValueError):
        VS.plot_timeline([0.0], [0.1, 0.2], tmp_path / "bad.png")


@pytest.mark.shared
def test_shared_clip_if_present() -> None:
    clip = (
        Path(__file__).resolve().parents[2]
        / "shared"
        / "data"
        / "video-spotdiff"
        / "fake"
        / "Cat_Fake.mp4"
    )
    if not clip.is_file():
        pytest.skip("shared video clip not present")
    info = V.probe_video(clip)
    assert info.width > 0 and info.duration_s and info.duration_s > 0
    frames = list(V.sample_frames(clip, "keyframes", max_frames=2))
    assert len(frames) == 2 and frames[0].image.size == (info.width, info.height)


# ---------------------------------------------------------------------- untrusted containers
@needs_mp4
@pytest.mark.parametrize(
    "text",
    [
        "ffconcat version 1.0\nfile 'target.mp4'\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\ntarget.mp4\n#EXT-X-ENDLIST\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n",
    ],
    ids=["concat", "hls-local", "hls-url"],
)
def test_playlists_named_mp4_are_not_followed(tmp_path: Path, text: str) -> None:
    write_clip(tmp_path / "target.mp4", cfr(10, 10))
    playlist = tmp_path / "upload.mp4"
    playlist.write_text(text)
    with pytest.raises(V.VideoError, match="not a recognised video format"):
        list(V.sample_frames(playlist))
    with pytest.raises(V.VideoError, match="not a recognised video format"):
        V.probe_video(playlist)


def test_ffmpeg_url_syntax_in_a_path_is_a_local_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "concat:a.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16)
    with pytest.raises(V.VideoError, match="truncated or corrupt video data"):
        V.probe_video("concat:a.mp4")


def test_open_pins_the_demuxer_and_protocols(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_open(name: str, **kwargs: object) -> None:
        calls.append((name, kwargs))
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(av, "open", fake_open)
    heads = {
        "a.mp4": b"\x00\x00\x00\x18ftypisom",
        "b.webm": b"\x1a\x45\xdf\xa3\x01\x00\x00\x00",
        "c.avi": b"RIFF\x00\x00\x00\x00AVI LIST",
        "d.mkv": b"\x00\x00\x00\x08moov",  # misnamed: the bytes decide
    }
    for name, head in heads.items():
        (tmp_path / name).write_bytes(head + b"\x00" * 32)
        with pytest.raises(V.VideoError, match="truncated or corrupt video data"):
            V.probe_video(tmp_path / name)
    assert [kw["format"] for _, kw in calls] == ["mov", "matroska", "avi", "mov"]
    for name, kwargs in calls:
        assert name.startswith("file:")
        assert kwargs["options"]["protocol_whitelist"] == "file"
        assert kwargs["options"]["enable_drefs"] == "0"


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".gif"])
def test_empty_and_odd_files_read_like_images(tmp_path: Path, suffix: str) -> None:
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    for path, reason in (
        (empty, "empty file (0 bytes)"),
        (folder, "is a directory, not a video file"),
    ):
        with pytest.raises(V.VideoError) as err:
            V.probe_video(path)
        assert err.value.reason == reason
        with pytest.raises(V.VideoError) as err:
            list(V.sample_frames(path))
        assert err.value.reason == reason


@needs_mp4
def test_truncated_mp4_says_truncated(tmp_path: Path, clips: dict[str, Path]) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clips["cfr"].read_bytes()[:40])
    with pytest.raises(V.VideoError) as err:
        V.probe_video(cut)
    assert err.value.reason.startswith("truncated or corrupt video data: ")


def test_huge_frames_are_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "wide.gif"
    write_gif(path, [100, 100])
    with pytest.raises(V.VideoError, match="over the limit of 120,000,000"):
        V.check_frame_size(path, 20000, 10000)
    V.check_frame_size(path, W, H)
