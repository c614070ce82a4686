"""fakescope scan: Ray Data scoring into Parquet parts, row for row the same as predict, resumable.

One local 2-CPU Ray session is shared by the module (starting Ray takes seconds); every scan runs
a pool of actors on it. Most scans use a probe on an ONNX encoder (actors that start without
torch, as with the default built-in); the dev-set manifest is scored by a torch network.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fakescope
from fakescope.cli.scan import add_scan_parser, split_items
from fakescope.models import create_detector, save_checkpoint
from fakescope.scan.ray_scan import (
    STATE_FILE,
    Part,
    fingerprint,
    list_inputs,
    pending_parts,
    plan_parts,
    read_scan,
    read_scan_rows,
    scan,
)

from .helpers import TINY_MODEL, all_cpus, synthetic_image, tiny_probe_checkpoint


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'fakescope[ray]')")
    try:
        with all_cpus():  # Ray's processes are started here and keep what they were given
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    except Exception as e:  # no shared memory, no sockets, ...
        pytest.skip(f"a local Ray cluster cannot start here: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe on a tiny ONNX encoder, like the default built-in: its actors need no torch."""
    return tiny_probe_checkpoint(tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def torch_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm network: its actors run torch, with the threads the scan gives them."""
    det = create_detector(TINY_MODEL, img_size=32).eval()
    det.spec.threshold, det.spec.uncertain_band = 0.5, 0.0
    det.spec.preprocessing.resize_mode = "crop"
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", det)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan") / "imgs"
    rng = np.random.default_rng(0)
    for i in range(12):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        synthetic_image(i % 2, rng, 40).save(sub / f"img{i:02d}.png")
    (root / "b" / "zero.jpg").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("this is text, not a JPEG")
    return root


@pytest.fixture(scope="module")
def scanned(ray_session, ckpt: Path, folder: Path) -> Path:
    """One scan through the CLI: 14 inputs in parts of 5, the input named relative to the cwd."""
    out = folder.parent / "out"
    parser = argparse.ArgumentParser()
    add_scan_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["scan", "--ray", folder.name, str(out), "--detector", str(ckpt), "--part-size", "5"]
        + ["--batch-size", "4", "--actors", "2"]
    )
    cwd = os.getcwd()
    os.chdir(folder.parent)
    try:
        assert args.func(args) == 3  # two inputs are not images: partial success
    finally:
        os.chdir(cwd)
    return out


def _assert_same_rows(scan_rows: list[dict], predicted: list) -> None:
    assert [r["path"] for r in scan_rows] == [p.path for p in predicted]
    for got, want in zip(scan_rows, predicted, strict=True):
        want = want.to_dict()
        assert set(got) == set(want)
        for key in want:
            if key == "time_ms":
                continue
            if key == "score" and want[key] is not None:
                assert got[key] == pytest.approx(want[key], abs=1e-6), got["path"]
            else:
                assert got[key] == want[key], (got["path"], key)


def test_scan_matches_predict_row_by_row(
    scanned: Path, ckpt: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder.parent)
    assert sorted(p.name for p in scanned.glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    rows = read_scan_rows(scanned)
    predicted = fakescope.predict(folder.name, detector=ckpt, batch_size=4)
    assert len(rows) == len(predicted) == 14 and rows[0]["path"].startswith(f"{folder.name}/")
    _assert_same_rows(rows, predicted)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["verdict"] == "error"}
    assert set(errors) == {"zero.jpg", "notes.jpg"} and "empty" in errors["zero.jpg"]
    assert {r["verdict"] for r in rows} - {"error"} <= {"fake", "real", "uncertain"}
    df = pd.read_parquet(scanned)  # the folder reads as one Parquet dataset
    assert len(df) == 14 and list(df.columns) == list(predicted[0].to_dict())


def test_resume_recomputes_only_the_missing_part(
    scanned: Path, ckpt: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder.parent)
    before = read_scan(scanned)
    stamps = {p.name: p.stat().st_mtime_ns for p in scanned.glob("part-*.parquet")}
    (scanned / "part-00001.parquet").unlink()
    result = scan(folder.name, scanned, ckpt, actors=2, batch_size=4, part_size=5)
    assert (result.parts_skipped, result.parts_written, result.rows_written) == (2, 1, 5)
    assert result.errors == 2 and result.n_inputs == 14
    for name in ("part-00000.parquet", "part-00002.parquet"):
        assert (scanned / name).stat().st_mtime_ns == stamps[name], name
    after = read_scan(scanned)
    pd.testing.assert_frame_equal(after.drop(columns="time_ms"), before.drop(columns="time_ms"))
    again = scan(folder.name, scanned, ckpt, part_size=5)  # nothing left: Ray is not needed
    assert (again.parts_skipped, again.parts_written) == (3, 0)
    moved = scan(folder, scanned, ckpt, part_size=5, actors=1)  # other path strings: redone
    assert moved.parts_written == 3 and read_scan(scanned)["path"].iloc[0].startswith("/")
    assert not list(scanned.glob(".*.tmp"))


@pytest.mark.shared
def test_scan_of_a_manifest_on_the_dev_set(
    ray_session, torch_ckpt: Path, shared_data: Path, tmp_path
):
    """Real JPEGs and PNGs from the shared dev set, given as a manifest with relative paths, scored
    by a torch network."""
    ckpt = torch_ckpt
    full = pd.read_csv(shared_data / "manifest.csv")
    pick = pd.concat([full.head(12), full.tail(12)])
    manifest = tmp_path / "some.csv"
    pick.assign(path=[os.path.relpath(shared_data / p, tmp_path) for p in pick["path"]]).to_csv(
        manifest, index=False
    )
    paths = list_inputs(manifest)
    assert [Path(p).resolve() for p in paths] == [(shared_data / p).resolve() for p in pick["path"]]
    result = scan(manifest, tmp_path / "out", ckpt, actors=1, batch_size=8, part_size=10)
    assert (result.n_parts, result.errors) == (3, 0)
    predicted = fakescope.predict(paths, detector=ckpt, batch_size=8)
    _assert_same_rows(read_scan_rows(tmp_path / "out"), predicted)


def test_inputs_parts_and_settings_guard(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    paths = list_inputs(folder)
    assert paths == list_inputs([str(folder / "a"), str(folder / "b")])
    assert len(list_inputs(str(folder / "*" / "img0*.png"))) == 10
    manifest = folder.parent / "list.csv"
    manifest.write_text("path,label\nimgs/a/img01.png,1\ns3://bucket/x.jpg,0\n")
    assert list_inputs(manifest) == [str(folder / "a" / "img01.png"), "s3://bucket/x.jpg"]
    parts = plan_parts(paths, 5)
    assert [len(p.paths) for p in parts] == [5, 5, 4] and parts[2].name == "part-00002.parquet"
    assert Part(0, ["x"]).digest != Part(0, ["y"]).digest
    out = tmp_path / "o"
    out.mkdir()
    fp = fingerprint(ckpt, {"precision": "auto"})
    todo, state = pending_parts(out, parts, fp)
    assert todo == parts and state["n_inputs"] == 14
    (out / STATE_FILE).write_text('{"fingerprint": {"checkpoint": "other"}, "parts": {}}')
    with pytest.raises(ValueError, match="another detector"):
        pending_parts(out, parts, fp)
    todo, _ = pending_parts(out, parts, fp, force=True)
    assert todo == parts


def test_no_images_or_videos_is_an_error_before_ray_starts(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    from fakescope.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = tmp_path / "none.csv"
    manifest.write_text("path,label\n")
    out = tmp_path / "out"
    assert main(["-q", "scan", str(empty), str(manifest), str(out), "--detector", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert f"no images or videos found: {empty} is an empty folder; {manifest} is a manifest" in err
    assert not out.exists()


def test_ray_address_or_first_input() -> None:
    assert split_items(None, ["in", "out"]) == (None, ["in"], "out")
    assert split_items("", ["in", "out"]) == (None, ["in"], "out")
    assert split_items("head:6379", ["in", "out"]) == ("head:6379", ["in"], "out")
    assert split_items("photos", ["out"]) == (None, ["photos"], "out")  # --ray photos out
    assert split_items("imgs/*.jpg", ["more", "out"]) == (None, ["imgs/*.jpg", "more"], "out")
    with pytest.raises(ValueError, match="OUTPUT"):
        split_items(None, ["only"])


def test_bars_turned_off_off_a_terminal_bring_no_advice_to_turn_them_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    pytest.importorskip("ray.data", reason="ray is not installed")
    import fakescope.utils
    from fakescope.scan.ray_scan import _quiet_ray_data

    progress = logging.getLogger("ray.data._internal.progress")
    monkeypatch.setattr(progress, "level", logging.NOTSET)
    monkeypatch.setattr(fakescope.utils, "is_interactive", lambda: False)
    _quiet_ray_data()
    assert not progress.isEnabledFor(logging.WARNING)
