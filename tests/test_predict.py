"""fakescope predict: the API and CLI on images, formats, resume after a kill, bad input, exit codes."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fakescope
from fakescope.cli import main
from fakescope.infer.output import completed_paths, load_rows
from fakescope.models import create_detector, save_checkpoint

from .helpers import TINY_MODEL, a_row, synthetic_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.threshold, det.spec.uncertain_band = 0.5, 0.05
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", det)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(7):
        sub = tmp_path / "imgs" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        synthetic_image(i % 2, rng, 40).save(sub / f"img{i}.png")
    return tmp_path / "imgs"


def bomb_png(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A tiny file whose header claims w x h pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_api_on_paths_pil_and_arrays(ckpt: Path, folder: Path) -> None:
    pil = Image.new("RGB", (50, 40), (120, 30, 200))
    arr = np.zeros((36, 36, 3), dtype=np.uint8)
    rows = fakescope.predict([folder, pil, arr], detector=ckpt)
    assert len(rows) == 9
    assert [r.path for r in rows[-2:]] == ["<image 0>", "<image 1>"]
    for r in rows:
        assert (
            0.0 <= r.score <= 1.0
            and r.verdict in ("fake", "real", "uncertain")
            and r.kind == "image"
        )
        assert r.model == TINY_MODEL and r.time_ms >= 0
    assert (rows[-2].width, rows[-2].height) == (50, 40)


def test_api_matches_batch_scoring(ckpt: Path, folder: Path) -> None:
    import pandas as pd

    from fakescope.eval.scoring import score_frame
    from fakescope.models import load_detector

    paths = sorted(str(p) for p in folder.rglob("*.png"))
    rows = fakescope.predict(paths, detector=ckpt, batch_size=3, workers=2)
    ref, _ = score_frame(load_detector(ckpt), pd.DataFrame({"path": paths}))
    np.testing.assert_allclose(
        [r.score for r in rows], ref["score"].to_numpy(), rtol=1e-5, atol=1e-6
    )


def test_api_takes_the_commands_choices(ckpt: Path, folder: Path) -> None:
    """``fakescope.predict`` opens detectors through the same door as the CLI."""
    from fakescope.infer.backends import DetectorRef

    paths = sorted(str(p) for p in folder.rglob("*.png"))
    torch_rows = fakescope.predict(paths, detector=ckpt, precision="fp32")
    onnx_rows = fakescope.predict(paths, detector=ckpt, backend="onnx", precision="fp32")
    by_ref = fakescope.predict(paths, detector=DetectorRef(str(ckpt), "onnx", "fp32"))
    np.testing.assert_allclose(
        [r.score for r in onnx_rows], [r.score for r in torch_rows], rtol=1e-4, atol=1e-5
    )
    assert [r.score for r in by_ref] == [r.score for r in onnx_rows]
    with pytest.raises(ValueError, match="int8 runs on the onnx backend"):
        fakescope.predict(paths, detector=ckpt, precision="int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        fakescope.predict(paths, detector=ckpt, backend="tensorrt")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_cli_formats(ckpt: Path, folder: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    assert (
        main(
            [
                "-q",
                "predict",
                str(folder),
                "--detector",
                str(ckpt),
                "--format",
                fmt,
                "-o",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    text = out.read_text()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == 7 and {"path", "kind", "score", "verdict", "model", "time_ms"} <= set(
            rows[0]
        )
        assert rows[0]["detector"] == "tiny.safetensors" and rows[0]["model"] == TINY_MODEL
    elif fmt == "csv":
        assert (
            text.splitlines()[0].startswith("path,kind,score,verdict")
            and len(text.splitlines()) == 8
        )
    else:
        assert "P(fake)" in text and text.count(".png") == 7


def test_output_format_follows_the_extension(
    ckpt: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    """``-o out.csv`` writes CSV without ``--format``; ``.jsonl``/``.json`` write JSON Lines; an
    explicit ``--format`` wins, with a warning when it contradicts the extension."""
    import csv

    from fakescope.infer.output import CSV_COLUMNS

    def predict(out: Path, *extra: str) -> str:
        args = ["-q", "predict", str(folder), "--detector", str(ckpt), "-o", str(out)]
        assert main([*args, "--workers", "0", *extra]) == 0
        return out.read_text()

    with open(tmp_path / "o.csv", "w") as fh:  # the file exists already: still CSV, rewritten
        fh.write("old\n")
    rows = list(csv.DictReader(io.StringIO(predict(tmp_path / "o.csv"))))
    assert len(rows) == 7 and tuple(rows[0]) == CSV_COLUMNS
    assert "warning" not in capsys.readouterr().err
    for name in ("o.jsonl", "o.json"):
        predict(tmp_path / name)
        assert len(load_rows(tmp_path / name)) == 7
    text = predict(tmp_path / "mixed.csv", "--format", "jsonl")
    assert json.loads(text.splitlines()[0])["path"].endswith(".png")
    err = capsys.readouterr().err
    assert "mixed.csv" in err and "--format jsonl" in err and "extension says CSV" in err


def test_table_columns_line_up_with_a_declared_verdict(tmp_path: Path) -> None:
    """The longest verdict is "fake (declared)"; the kind, ms and path columns start at the
    same place on every line anyway, the header's included."""
    from fakescope.infer.output import RowWriter

    out = tmp_path / "rows.txt"
    writer = RowWriter("table", out)
    verdicts = ("fake (declared)", "real", "uncertain", "fake", "error")
    for verdict in verdicts:
        score = None if verdict == "error" else 0.25
        writer.write(a_row(path=f"{verdict}.png", score=score, verdict=verdict, time_ms=12.5))
    writer.close()
    header, *lines = out.read_text().splitlines()
    assert len(lines) == len(verdicts)
    for verdict, line in zip(verdicts, lines, strict=True):
        assert line.index(" image ") == header.index(" kind ")
        assert line.index("12.5") + len("12.5") == header.index(" ms") + len(" ms")
        assert line.index(f"{verdict}.png") == header.index("path")


def test_bad_inputs_are_rows_and_the_batch_goes_on(
    ckpt: Path, folder: Path, tmp_path: Path
) -> None:
    bad = folder / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="JPEG")
    (bad / "cut.jpg").write_bytes(buf.getvalue()[:300])
    bomb_png(bad / "bomb.png")
    Image.new("RGB", (1, 1)).save(bad / "dot.png")
    Image.new("L", (100000, 10)).save(bad / "strip.png")
    (bad / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    out = tmp_path / "o.jsonl"
    code = main(
        [
            "-q",
            "predict",
            str(folder),
            str(tmp_path / "missing.png"),
            "--detector",
            str(ckpt),
            "-o",
            str(out),
            "--workers",
            "2",
        ]
    )
    assert code == 3  # some failed: a distinct exit code
    rows = {Path(r["path"]).name: r for r in load_rows(out)}
    assert len(rows) == 7 + 8
    expect = {
        "zero.jpg": "empty",
        "text.jpg": "not a recognised",
        "cut.jpg": "truncated",
        "bomb.png": "decompression bomb",
        "dot.png": "too small",
        "strip.png": "aspect ratio",
        "photo.heic": "heic",
        "missing.png": "not found",
    }
    for name, words in expect.items():
        assert rows[name]["verdict"] == "error" and words in rows[name]["error"].lower(), (
            name,
            rows[name],
        )
    assert sum(r["verdict"] != "error" for r in rows.values()) == 7


def test_resume_after_kill_has_no_duplicates_and_no_loss(
    ckpt: Path, folder: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full.jsonl"
    assert (
        main(
            [
                "-q",
                "predict",
                str(folder),
                "--detector",
                str(ckpt),
                "-o",
                str(full),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    part = tmp_path / "part.jsonl"
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed mid-write
    assert completed_paths(part, "jsonl") == {json.loads(x)["path"] for x in lines[:3]}
    assert (
        main(
            [
                "-q",
                "predict",
                str(folder),
                "--detector",
                str(ckpt),
                "-o",
                str(part),
                "--resume",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    got = load_rows(part)
    assert sorted(r["path"] for r in got) == sorted(json.loads(x)["path"] for x in lines)
    ref = {json.loads(x)["path"]: json.loads(x)["score"] for x in lines}
    for r in got:
        assert r["score"] == pytest.approx(ref[r["path"]], abs=1e-6)


def test_resume_csv(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    args = [
        "-q",
        "predict",
        str(folder),
        "--detector",
        str(ckpt),
        "-o",
        str(out),
        "--format",
        "csv",
        "--workers",
        "0",
    ]
    assert main(args) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]))
    assert main([*args, "--resume"]) == 0
    text = out.read_text().splitlines()
    assert text.count(lines[0].rstrip("\r\n")) == 1 and len(text) == 8


def test_stdin_and_globs(ckpt: Path, folder: Path, tmp_path: Path, monkeypatch) -> None:
    paths = sorted(str(p) for p in folder.rglob("*.png"))[:3]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(paths) + "\n"))
    out = tmp_path / "s.jsonl"
    assert (
        main(["-q", "predict", "-", "--detector", str(ckpt), "-o", str(out), "--workers", "0"]) == 0
    )
    assert [r["path"] for r in load_rows(out)] == paths
    out2 = tmp_path / "g.jsonl"
    assert (
        main(
            [
                "-q",
                "predict",
                str(folder / "a" / "*.png"),
                "--detector",
                str(ckpt),
                "-o",
                str(out2),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert len(load_rows(out2)) == 3


def test_no_images_or_videos_is_an_error_that_names_the_inputs(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    """An empty folder, a glob matching nothing, a folder of text files: exit 1 and say so,
    rather than "0 input(s): none" and exit 0."""
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "notes.txt").write_text("not an image")
    pattern = str(tmp_path / "nothing-*.png")
    out = tmp_path / "rows.jsonl"
    for given, why in (
        (str(empty), "is an empty folder"),
        (pattern, "matches no file"),
        (str(texts), "holds no image or video files, only other files (1 .txt)"),
    ):
        code = main(["-q", "predict", given, "--detector", str(ckpt), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 1, err
        assert f"no images or videos found: {given} {why}" in err
        assert "0 input(s)" not in err and not out.exists()


def test_only_missing_files_fail_before_the_detector_opens(
    ckpt: Path, folder: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A typo'd path is reported at once (the model is never loaded); a missing file among real
    ones is still an error row, and the batch goes on."""
    import fakescope.infer.backends as backends

    gone = str(tmp_path / "typo.jpg")
    opened = []
    real_open = backends.open_detector
    monkeypatch.setattr(
        backends, "open_detector", lambda *a, **k: opened.append(1) or real_open(*a, **k)
    )
    code = main(["-q", "predict", gone, str(tmp_path / "also-gone.png"), "--detector", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 1 and f"file not found: {gone}, " in err and not opened
    image = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    code = main(["-q", "predict", gone, str(image), "--detector", str(ckpt), "--format", "jsonl"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert opened and [r["error"] for r in rows] == ["file not found", None]


def test_rows_into_a_closed_pipe_end_quietly(folder: Path, tmp_path: Path) -> None:
    """``fakescope predict ... | head``: no BrokenPipeError traceback (an ONNX probe, as the
    default built-in is, so the command starts without torch)."""
    from .helpers import run_into_a_closed_pipe, tiny_probe_checkpoint

    probe = tiny_probe_checkpoint(tmp_path / "probe")
    code, err = run_into_a_closed_pipe(
        "predict", str(folder), "--detector", str(probe), "--format", "jsonl", "--workers", "0"
    )
    assert code == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_no_detector_uses_the_default_builtin(folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("FAKESCOPE_DETECTOR", raising=False)
    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    # without its CLIP tower, the default built-in says where the file must go
    assert main(["predict", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "clip_vit_b16_openai_visual.int8.onnx" in err and "FAKESCOPE_WEIGHTS" in err


def test_resume_needs_output(ckpt: Path, folder: Path, capsys) -> None:
    assert main(["predict", str(folder), "--detector", str(ckpt), "--resume"]) == 1
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sample,aggregate",
    [("uniform", "mean"), ("interval", "median"), ("keyframes", "topk"), ("uniform", "max")],
)
def test_video_rows_with_timeline(ckpt: Path, tmp_path: Path, sample: str, aggregate: str) -> None:
    from .helpers import MP4_CODEC, cfr, write_audio_only, write_clip

    if MP4_CODEC is None:
        pytest.skip("no H.264 or MPEG-4 encoder in PyAV")
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "a.mp4", cfr(20, 10), gop=5)
    write_audio_only(clips / "sound.mp4")
    out = tmp_path / "v.jsonl"
    code = main(
        [
            "-q",
            "predict",
            str(clips),
            "--detector",
            str(ckpt),
            "-o",
            str(out),
            "--sample",
            sample,
            "--frames",
            "4",
            "--every",
            "0.5",
            "--aggregate",
            aggregate,
            "--timeline",
            str(tmp_path / "tl"),
        ]
    )
    assert code == 3  # the audio-only file fails
    rows = {Path(r["path"]).name: r for r in load_rows(out)}
    video = rows["a.mp4"]
    assert (
        video["kind"] == "video"
        and video["aggregate"] == aggregate
        and video["n_frames"] == len(video["frames"])
    )
    scores = [f["score"] for f in video["frames"]]
    expected = {
        "mean": np.mean(scores),
        "median": np.median(scores),
        "max": max(scores),
        "topk": np.mean(sorted(scores)[-3:]),
    }[aggregate]
    assert video["score"] == pytest.approx(expected)
    assert Path(video["timeline"]).is_file()
    assert (
        rows["sound.mp4"]["verdict"] == "error" and "no video stream" in rows["sound.mp4"]["error"]
    )


def test_onnx_backends_match_torch(ckpt: Path, folder: Path, tmp_path: Path, capsys) -> None:
    import shutil

    local = Path(shutil.copy(ckpt, tmp_path / "m.safetensors"))
    runs = {}
    for backend, precision in (("torch", "fp32"), ("onnx", "fp32")):
        out = tmp_path / f"{backend}-{precision}.jsonl"
        args = ["-q", "predict", str(folder), "--detector", str(local), "-o", str(out)]
        args += ["--backend", backend, "--precision", precision, "--workers", "0"]
        assert main(args) == 0
        runs[(backend, precision)] = np.array([r["score"] for r in load_rows(out)])
    np.testing.assert_allclose(runs[("onnx", "fp32")], runs[("torch", "fp32")], atol=1e-4)
    assert (tmp_path / "m.fp32.onnx").is_file()
    # int8 needs calibration images; this checkpoint's run is not on disk, so it says how
    args = ["predict", str(folder), "--detector", str(local), "--backend", "onnx"]
    assert main([*args, "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert "calibration images" in err and "fakescope export" in err
    assert not (tmp_path / "m.int8.onnx").exists()


def test_int8_on_torch_is_a_clear_error(ckpt: Path, folder: Path, capsys) -> None:
    assert main(["predict", str(folder), "--detector", str(ckpt), "--precision", "int8"]) == 1
    assert "--backend onnx" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl"])
def test_rows_say_why_an_input_is_out_of_depth(tmp_path: Path, fmt: str) -> None:
    from fakescope.infer.output import RowWriter

    row = a_row(path="sky.jpg", score=0.99, novelty=0.05, reason="unlike the training data")
    out = tmp_path / f"rows.{fmt}"
    writer = RowWriter(fmt, str(out))
    writer.write(row)
    writer.close()
    text = out.read_text()
    assert "unlike the training data" in text and ("0.05" in text or fmt == "table")


def test_api_exports_prediction_and_returns_heatmaps_as_arrays(ckpt: Path, folder: Path) -> None:
    path = sorted(folder.rglob("*.png"))[0]
    expl = fakescope.explain(path, detector=ckpt, method="occlusion")
    assert expl.heatmap.dtype == np.float32 and expl.heatmap.ndim == 2
    assert expl.heatmap.min() >= 0.0 and expl.heatmap.max() <= 1.0
    (row,) = fakescope.predict(str(path), detector=ckpt)
    assert isinstance(row, fakescope.Prediction)
    assert expl.score == pytest.approx(row.score, abs=0.05)  # heatmaps run in fp32
    same = fakescope.explain(
        np.asarray(Image.open(path).convert("RGB")), detector=ckpt, method="occlusion"
    )
    np.testing.assert_allclose(same.heatmap, expl.heatmap, atol=1e-6)


def test_the_row_is_declared_once() -> None:
    """CSV columns, Parquet columns and the server's response model all come from Prediction."""
    import pyarrow as pa

    from fakescope.infer.row import CSV_COLUMNS, Prediction
    from fakescope.scan.ray_scan import SCHEMA
    from fakescope.serve.schemas import DetectResult

    fields = list(Prediction.model_fields)
    assert list(CSV_COLUMNS) == [f for f in fields if f != "frames"]
    assert SCHEMA.names == fields
    types = {f.name: f.type for f in SCHEMA}
    assert types["score"] == pa.float64() and types["width"] == pa.int64()
    assert types["provenance"] == types["frames"] == types["path"] == pa.string()
    assert list(DetectResult.model_fields)[: len(fields)] == fields
    row = a_row(frames=[{"index": 0, "time_s": 0.0, "score": 0.5}])
    assert list(row.to_dict()) == fields and row.to_dict()["frames"][0]["score"] == 0.5
    with pytest.raises(ValueError, match="colour"):
        Prediction(**row.to_dict(), colour="red")  # a field that is not declared is refused
