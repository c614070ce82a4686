"""The selection protocol: grouped intervals, within-scene AUC, controls, set building, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fakescope.data.protocol_sets import (
    build_protocol_sets,
    is_photo_prompt,
    painterly,
    split_pool_reals,
    squashed,
)
from fakescope.eval.intervals import bootstrap_ci, grouped_bootstrap_ci
from fakescope.eval.protocol import (
    CONTROL_TOLERANCE,
    SetResult,
    format_table,
    read_protocol_manifest,
    score_manifest,
    score_set,
    summarise,
)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s))


# --------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------


def test_grouped_bootstrap_with_singleton_groups_matches_the_row_bootstrap() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    s = rng.normal(size=200) + y
    rows = bootstrap_ci(y, s, auc, n_boot=500)
    grouped = grouped_bootstrap_ci(y, s, np.arange(200), auc, n_boot=500)
    assert rows is not None and grouped is not None
    assert abs(rows[0] - grouped[0]) < 0.03 and abs(rows[1] - grouped[1]) < 0.03


def test_grouped_bootstrap_is_wider_when_rows_are_clustered() -> None:
    rng = np.random.default_rng(0)
    # 8 clips of 30 near-identical frames: 240 rows, but only 8 independent units
    clip_level = rng.normal(size=8)
    y = np.repeat([0, 0, 0, 0, 1, 1, 1, 1], 30)
    s = np.repeat(clip_level + 0.5 * np.array([0, 0, 0, 0, 1, 1, 1, 1]), 30)
    s = s + rng.normal(scale=0.01, size=240)
    groups = np.repeat(np.arange(8), 30)
    rows = bootstrap_ci(y, s, auc, n_boot=500)
    grouped = grouped_bootstrap_ci(y, s, groups, auc, n_boot=500)
    assert (grouped[1] - grouped[0]) > 3 * (rows[1] - rows[0])
    assert grouped[0] <= auc(y, s) <= grouped[1]


# --------------------------------------------------------------------------------------------
# Sets and the score
# --------------------------------------------------------------------------------------------


def scene_rows() -> pd.DataFrame:
    """Two scenes, a fake and a real clip each, 10 frames per clip."""
    rows = []
    for scene in ("cat", "sunset"):
        for label in ("fake", "real"):
            rows += [
                {
                    "path": f"{scene}-{label}-{i}.jpg",
                    "label": label,
                    "group": f"{scene}-{label}",
                    "scene": scene,
                    "set": "spotdiff",
                    "role": "test",
                }
                for i in range(10)
            ]
    return pd.DataFrame(rows)


def test_content_matched_set_is_scored_within_each_scene() -> None:
    df = scene_rows()
    # a 'detector' that only knows sunsets from cats: a pooled AUC would reward it
    by_scene = np.where(df["scene"] == "sunset", 0.9, 0.1) + np.linspace(0, 0.01, len(df))
    y = (df["label"] == "fake").to_numpy().astype(int)
    r = score_set("spotdiff", df, by_scene)
    assert r.n_fake == 20 and r.n_real == 20 and r.n_groups == 4
    per = [auc(y[df["scene"] == s], by_scene[df["scene"] == s]) for s in ("cat", "sunset")]
    assert r.auc == pytest.approx(np.mean(per))
    # a detector that gets the class right in every scene scores 1 with a degenerate interval
    perfect = y + 0.0
    r = score_set("spotdiff", df, perfect)
    assert r.auc == 1.0 and r.ci == (1.0, 1.0)


def test_set_with_one_class_has_no_auc_and_nans_are_left_out() -> None:
    df = scene_rows()
    df = df[df["label"] == "fake"].drop(columns="scene")
    r = score_set("x", df, np.ones(len(df)))
    assert r.auc is None and r.ci is None and r.n_real == 0
    df2 = scene_rows().drop(columns="scene")
    s = (df2["label"] == "fake").to_numpy().astype(float)
    s[0] = np.nan
    r2 = score_set("x", df2, s)
    assert r2.auc == 1.0 and r2.n_fake + r2.n_real == len(df2) - 1


def test_summary_subtracts_control_deviation_beyond_the_tolerance() -> None:
    rows = [
        SetResult("a", "test", 10, 10, 5, 0.8, None),
        SetResult("b", "test", 10, 10, 5, 0.6, None),
        SetResult("styled", "control", 10, 10, 10, 0.5 + CONTROL_TOLERANCE + 0.2, None),
        SetResult("squash", "control", 10, 10, 10, 0.45, None),
    ]
    s = summarise(rows)
    assert s["test_mean"] == pytest.approx(0.7)
    assert s["control_penalty"] == pytest.approx(0.1)  # (0.2 + 0) / 2 controls
    assert s["score"] == pytest.approx(0.6)
    text = format_table({"det": rows})
    assert "styled" in text and "0.600" in text


def test_score_manifest_scores_every_set_in_order() -> None:
    df = pd.concat([scene_rows(), scene_rows().assign(set="other", scene="", role="control")])
    y = (df["label"] == "fake").to_numpy().astype(float)
    out = score_manifest(df, y, n_boot=50)
    assert [r.name for r in out] == ["spotdiff", "other"] and [r.role for r in out] == [
        "test",
        "control",
    ]


# --------------------------------------------------------------------------------------------
# Building the sets
# --------------------------------------------------------------------------------------------


def test_photo_prompts_and_pool_halves() -> None:
    assert is_photo_prompt("rainy-tokyo-street-scene-night-31738623")
    assert not is_photo_prompt("noahs-ark-picasso-25002770") and not is_photo_prompt("claudeMonet")
    pool = pd.DataFrame(
        {"path": [f"r{i}" for i in range(10)], "label": "real", "source": ["a"] * 6 + ["b"] * 4}
    )
    train, test = split_pool_reals(pool)
    assert len(train) == len(test) == 5 and set(train.index).isdisjoint(test.index)
    assert (test["source"] == "a").sum() == 3


def test_controls_change_the_photo_but_keep_it_real() -> None:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    for style in range(3):
        out = painterly(photo, style)
        assert out.size == photo.size and out.mode == "RGB"
        assert np.abs(np.asarray(out, float) - np.asarray(photo, float)).mean() > 5
    sq = squashed(photo)
    assert sq.size == photo.size


def write_pool(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        for label, group, source in (
            ("fake", f"girl-lost-forest-{i}", "dalle-mini"),
            ("fake", "claudeMonet", "dalle2-art"),
            ("real", f"n0{i}", "imagenet"),
        ):
            path = root / label / f"{source}-{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(path)
            rows.append(
                {
                    "path": str(path.relative_to(root)),
                    "label": label,
                    "source": source,
                    "group": group,
                }
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def test_build_sets_from_a_pool(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool")
    df = build_protocol_sets(tmp_path / "sets", None, pool)
    counts = df.groupby(["set", "label"]).size().to_dict()
    # 6 photo-prompt fakes (the Monet ones are art) against the 3 held-back reals
    assert counts[("pool-photo", "fake")] == 6 and counts[("pool-photo", "real")] == 3
    assert counts[("styled", "fake")] == counts[("styled", "real")] == 3
    assert set(df.loc[df["set"].isin(["styled", "squash"]), "role"]) == {"control"}
    again = read_protocol_manifest(tmp_path / "sets")
    for p in again["path"]:
        with Image.open(p) as im:
            assert im.size == (512, 512) and im.format == "JPEG"
    assert pd.read_csv(tmp_path / "sets" / "skipped.csv").empty
    with pytest.raises(ValueError, match="no protocol sets"):
        build_protocol_sets(tmp_path / "none", None, None)
    with pytest.raises(FileNotFoundError, match="build_pool.py"):
        build_protocol_sets(tmp_path / "none", None, tmp_path / "no-pool")
    with pytest.raises(FileNotFoundError, match="fakescope protocol"):
        read_protocol_manifest(tmp_path / "missing")


def test_build_spotdiff_frames_from_clips(tmp_path: Path) -> None:
    from . import test_video as video

    if video.MP4_CODEC is None:
        pytest.skip("no MP4 encoder in PyAV")
    for label in ("fake", "real"):
        (tmp_path / "v" / label).mkdir(parents=True)
        video.write_clip(tmp_path / "v" / label / f"Cat_{label.title()}.mp4", video.cfr(12, 6))
    df = build_protocol_sets(tmp_path / "sets", tmp_path / "v", None)
    assert set(df["scene"]) == {"cat"} and len(df) == 24
    assert set(df["group"]) == {"Cat_Fake", "Cat_Real"}


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_protocol_command_scores_a_detector(tmp_path: Path, capsys) -> None:
    from fakescope.cli import main
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.models.checkpoint import save_checkpoint
    from fakescope.models.probe import create_probe_detector

    from .helpers import build_encoder

    pool = write_pool(tmp_path / "pool")
    det = create_probe_detector(OnnxBackbone(build_encoder(tmp_path / "e.onnx", False)), 16)
    det.net.set_head(np.zeros(16), np.ones(16), np.linspace(-1, 1, 16), 0.0)
    ckpt = save_checkpoint(tmp_path / "det.safetensors", det)
    out = tmp_path / "res.json"
    code = main(
        [
            "protocol",
            str(tmp_path / "sets"),
            "--pool",
            str(pool),
            "--detector",
            str(ckpt),
            "--n-boot",
            "50",
            "--workers",
            "0",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "pool-photo" in text and "styled" in text and "score" in text
    doc = json.loads(out.read_text())
    assert {s["name"] for s in doc[str(ckpt)]["sets"]} == {"pool-photo", "styled", "squash"}
    assert "score" in doc[str(ckpt)]


def test_unreadable_files_are_left_out_with_the_reason(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool")
    manifest = pd.read_csv(pool / "manifest.csv")
    broken = manifest[manifest["source"] == "dalle-mini"]["path"].iloc[0]
    (pool / broken).write_bytes(b"not an image")
    (tmp_path / "v" / "fake").mkdir(parents=True)
    (tmp_path / "v" / "fake" / "Cat_Fake.mp4").write_bytes(b"")
    df = build_protocol_sets(tmp_path / "sets", tmp_path / "v", pool)
    skipped = pd.read_csv(tmp_path / "sets" / "skipped.csv")
    assert set(skipped["path"]) == {
        str(pool / broken),
        str(tmp_path / "v" / "fake" / "Cat_Fake.mp4"),
    }
    assert skipped["reason"].str.len().min() > 5
    assert (df["set"] == "pool-photo").sum() == 8  # 5 photo fakes + 3 reals: the rest went on


def test_every_command_names_its_detector_with_the_one_option(monkeypatch) -> None:
    """One --detector definition (repeatable where detectors are compared), one default rule:
    --detector, else $FAKESCOPE_DETECTOR, else the default built-in; backend options too."""
    from fakescope.cli import build_parser
    from fakescope.cli.common import detector_refs

    parser = build_parser()
    monkeypatch.setenv("FAKESCOPE_DETECTOR", "mine.safetensors")
    for argv in (["protocol", "sets"], ["predict", "x.jpg"], ["serve"]):
        args = parser.parse_args(argv)
        assert [r.ref for r in detector_refs(args)] == ["mine.safetensors"], argv
    args = parser.parse_args(
        ["protocol", "sets", "--detector", "a.safetensors", "--detector", "b.safetensors"]
        + ["--backend", "onnx", "--precision", "fp32"]
    )
    refs = detector_refs(args)
    assert [r.ref for r in refs] == ["a.safetensors", "b.safetensors"]
    assert {(r.backend, r.precision) for r in refs} == {("onnx", "fp32")}
    monkeypatch.delenv("FAKESCOPE_DETECTOR")
    args = parser.parse_args(["protocol", "sets"])
    assert [r.ref for r in detector_refs(args)] == ["builtin:clip-layers"]
