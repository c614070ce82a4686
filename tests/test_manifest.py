"""Tests for fakescope.data.manifest: folder layouts and manifest files to one table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fakescope.data.manifest import (
    FAKE_NAMES,
    REAL_NAMES,
    DataError,
    build_manifest,
    group_from_stem,
    read_manifest_file,
    summarize,
)

COLUMNS = ["path", "label", "group", "source"]


def _img(path: Path, colour: tuple[int, int, int] = (10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def _rel(df: pd.DataFrame, root: Path) -> list[str]:
    return [Path(p).relative_to(root.resolve()).as_posix() for p in df["path"]]


def _check_shape(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS
    assert list(df["path"]) == sorted(df["path"])
    assert list(df.index) == list(range(len(df)))
    assert all(Path(p).is_absolute() for p in df["path"])
    assert df["label"].dtype == "int64"
    assert set(df["label"]) <= {0, 1}


# ------------------------------------------------------------------------------------------
# Folder layouts
# ------------------------------------------------------------------------------------------


@pytest.fixture
def kaggle_flat(tmp_path: Path) -> Path:
    """The seed's Kaggle fruits layout: AI/ and Real/ with numbered file names."""
    root = tmp_path / "fruits"
    for cls in ("AI", "Real"):
        for colour in ("green", "red"):
            for shot in ("ohs", "ss"):
                for i in (1, 2, 12):
                    _img(root / cls / f"{colour}-apple-{shot}-{i}.jpg")
    (root / "README.txt").write_text("about")
    (root / "AI" / ".DS_Store").write_bytes(b"junk")
    return root


def test_kaggle_flat_layout(kaggle_flat: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fakescope.data.manifest"):
        df = build_manifest(kaggle_flat)
    _check_shape(df)
    assert len(df) == 24
    assert df["label"].sum() == 12
    rel = dict(zip(_rel(df, kaggle_flat), df.itertuples(index=False), strict=True))
    assert rel["AI/green-apple-ohs-1.jpg"].label == 1
    assert rel["AI/green-apple-ohs-1.jpg"].group == "green-apple-ohs"
    assert rel["Real/red-apple-ss-12.jpg"].label == 0
    assert rel["Real/red-apple-ss-12.jpg"].group == "red-apple-ss"
    assert set(df["source"]) == {"fruits"}
    assert set(df["group"]) == {
        "green-apple-ohs",
        "green-apple-ss",
        "red-apple-ohs",
        "red-apple-ss",
    }
    assert "ignored 1 files without an image extension" in caplog.text


def test_kaggle_with_colour_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "fruits"
    for cls in ("AI", "Real"):
        for colour in ("Green Apple", "Red Apple"):
            for i in (1, 2):
                _img(root / cls / colour / f"{colour.split()[0].lower()}-apple-{i}.jpg")
    df = build_manifest(root)
    _check_shape(df)
    assert len(df) == 8
    assert set(df["group"]) == {"Green Apple", "Red Apple"}
    assert set(df["source"]) == {"fruits"}
    fake = df[df["label"] == 1]
    assert all("/AI/" in p for p in fake["path"])


def test_genimage_layout(tmp_path: Path) -> None:
    root = tmp_path / "GenImage"
    for gen in ("sdv14", "midjourney"):
        for split in ("train", "val"):
            _img(root / gen / split / "ai" / f"000_{gen}_00001.png")
            _img(root / gen / split / "ai" / f"000_{gen}_00002.png")
            _img(root / gen / split / "nature" / "n01440764_10026.JPEG")
    df = build_manifest(root)
    _check_shape(df)
    assert len(df) == 12
    assert set(df["source"]) == {"sdv14", "midjourney"}
    nature = df[df["label"] == 0]
    assert len(nature) == 4
    assert set(nature["group"]) == {"n01440764"}
    assert set(df.loc[df["label"] == 1, "group"]) == {"000_sdv14", "000_midjourney"}


def test_forensynths_layout(tmp_path: Path) -> None:
    root = tmp_path / "CNNDetection"
    for gen in ("progan", "stylegan"):
        for cls in ("airplane", "cat"):
            for folder in ("0_real", "1_fake"):
                _img(root / "train" / gen / cls / folder / "00001.png")
    df = build_manifest(root)
    _check_shape(df)
    assert len(df) == 8
    row = df[df["path"].str.endswith("progan/airplane/1_fake/00001.png")].iloc[0]
    assert (row["label"], row["source"], row["group"]) == (1, "progan", "airplane")
    assert set(df["group"]) == {"airplane", "cat"}


def test_forensynths_without_generator_level(tmp_path: Path) -> None:
    root = tmp_path / "progan_val"
    for cls in ("horse", "sofa"):
        _img(root / cls / "0_real" / "00001.png")
        _img(root / cls / "1_fake" / "00001.png")
    df = build_manifest(root)
    assert len(df) == 4
    # The class folder's parent is the source; an all-digit stem leaves the source as group.
    assert set(df["source"]) == {"horse", "sofa"}
    assert (df["group"] == df["source"]).all()


def test_last_class_folder_wins_and_case_insensitive(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _img(root / "FAKE" / "REAL" / "x.png")
    _img(root / "Real" / "Synthetic" / "y.png")
    df = build_manifest(root)
    assert dict(zip(_rel(df, root), df["label"], strict=True)) == {
        "FAKE/REAL/x.png": 0,
        "Real/Synthetic/y.png": 1,
    }


def test_unlabelled_images_hidden_files_and_extensions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "mixed"
    _img(root / "fake" / "a.PNG")
    _img(root / "real" / "b.jpeg")
    _img(root / "loose.png")
    _img(root / ".hidden" / "fake" / "c.png")
    _img(root / "fake" / ".d.png")
    _img(root / "__MACOSX" / "fake" / "e.png")
    (root / "real" / "notes.txt").write_text("x")
    with caplog.at_level(logging.INFO, logger="fakescope.data.manifest"):
        df = build_manifest(root)
    assert _rel(df, root) == ["fake/a.PNG", "real/b.jpeg"]
    assert "ignored 1 images that are not under a class folder" in caplog.text
    assert "ignored 1 files without an image extension" in caplog.text


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "loop"
    _img(root / "fake" / "a.png")
    _img(root / "real" / "b.png")
    (root / "fake" / "again").symlink_to(root, target_is_directory=True)
    df = build_manifest(root)
    assert sorted(df["label"]) == [0, 1]


def test_no_class_folders_error(tmp_path: Path) -> None:
    root = tmp_path / "unsorted"
    _img(root / "cats" / "a.png")
    _img(root / "dogs" / "b.png")
    with pytest.raises(DataError) as info:
        build_manifest(root)
    message = str(info.value)
    assert str(root.resolve()) in message
    assert "'cats'" in message and "'dogs'" in message
    for name in (*FAKE_NAMES, *REAL_NAMES):
        assert repr(name) in message


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        build_manifest(tmp_path / "nothing")


def test_custom_names_and_conflicts(tmp_path: Path) -> None:
    root = tmp_path / "custom"
    _img(root / "gan" / "a.png")
    _img(root / "camera" / "b.png")
    df = build_manifest(root, fake_names=["GAN"], real_names=["camera"])
    assert sorted(df["label"]) == [0, 1]
    with pytest.raises(DataError, match="both fake and real"):
        build_manifest(root, fake_names=["gan"], real_names=["Gan"])


@pytest.mark.parametrize(
    ("stem", "group"),
    [
        ("green-apple-ohs-1", "green-apple-ohs"),
        ("IMG_0042", "img"),
        ("n01440764_10026", "n01440764"),
        ("00001", ""),
        ("photo (3)", "photo"),
        ("plain", "plain"),
    ],
)
def test_group_from_stem(stem: str, group: str) -> None:
    assert group_from_stem(stem) == group


# ------------------------------------------------------------------------------------------
# Manifest files
# ------------------------------------------------------------------------------------------


def test_csv_manifest_relative_paths_and_string_labels(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _img(root / "imgs" / "a.png")
    _img(root / "imgs" / "b.png")
    csv = root / "list.csv"
    csv.write_text("path,label,extra\nimgs/b.png,REAL,1\nimgs/a.png, Fake ,2\n")
    df = read_manifest_file(csv)
    _check_shape(df)
    assert _rel(df, root) == ["imgs/a.png", "imgs/b.png"]
    assert list(df["label"]) == [1, 0]
    assert list(df["source"]) == ["set", "set"]
    assert list(df["group"]) == ["set", "set"]
    assert build_manifest(csv).equals(df)


@pytest.mark.parametrize(
    "labels",
    [[True, False, True, False], [1, 0, 1, 0], ["AI", "nature", "1", "0"]],
    ids=["bool", "int", "str"],
)
def test_parquet_manifest(tmp_path: Path, labels: list[object]) -> None:
    root = tmp_path / "pq"
    root.mkdir()
    table = pd.DataFrame(
        {
            "path": ["x/1.png", str(tmp_path / "abs.png"), "x/2.png", "x/3.png"],
            "label": labels,
            "source": ["gen", "cam", "gen", None],
            "group": ["g1", None, "g2", "g3"],
            "split": ["train", "VAL", "test", "train"],
        }
    )
    table.to_parquet(root / "m.parquet")
    df = read_manifest_file(root / "m.parquet")
    assert list(df.columns) == [*COLUMNS, "split"]
    by_path = df.set_index("path")
    assert by_path.loc[str(tmp_path / "abs.png"), "label"] == 0
    assert by_path.loc[str(tmp_path / "abs.png"), "group"] == "cam"
    assert by_path.loc[str((root / "x/1.png").resolve()), "label"] == 1
    assert by_path.loc[str((root / "x/3.png").resolve()), "source"] == "pq"
    assert sorted(df["split"]) == ["test", "train", "train", "val"]


def test_bad_labels_are_listed(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    rows = ["a.png,fake", "b.png,maybe", "c.png,2", "d.png,", *[f"e{i}.png,x{i}" for i in range(5)]]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        read_manifest_file(csv)
    message = str(info.value)
    assert str(csv) in message and "8 label(s) not recognised" in message
    assert "row 2: 'maybe'" in message and "row 3: '2'" in message and "row 4: ''" in message
    assert "row 9" not in message and "..." in message


def test_missing_columns_and_suffix(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("file,class\na.png,1\n")
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['path', 'label'\].*'file', 'class'"
    ):
        read_manifest_file(csv)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported manifest type"):
        read_manifest_file(tmp_path / "m.json")
    with pytest.raises(DataError, match="not found"):
        read_manifest_file(tmp_path / "absent.csv")


def test_bad_split_values(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split\na.png,1,train\nb.png,0,holdout\n")
    with pytest.raises(DataError, match="row 2: 'holdout'"):
        read_manifest_file(csv)


def test_shared_style_manifest_in_folder_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "sd14-coco-imagenet"
    _img(root / "fake" / "diffusion_000000.jpg")
    _img(root / "real" / "coco_000001.jpg")
    _img(root / "real" / "not_listed.jpg")
    (root / "manifest.csv").write_text(
        "path,label,source\n"
        "fake/diffusion_000000.jpg,fake,diffusiondb\n"
        "real/coco_000001.jpg,real,coco\n"
    )
    with caplog.at_level(logging.INFO, logger="fakescope.data.manifest"):
        df = build_manifest(root)
    assert "manifest.csv" in caplog.text
    _check_shape(df)
    assert _rel(df, root) == ["fake/diffusion_000000.jpg", "real/coco_000001.jpg"]
    assert list(df["label"]) == [1, 0]
    assert list(df["source"]) == ["diffusiondb", "coco"]
    assert list(df["group"]) == ["diffusiondb", "coco"]


def test_summarize_is_json_ready(kaggle_flat: Path) -> None:
    df = build_manifest(kaggle_flat)
    summary = summarize(df)
    json.dumps(summary)
    assert (summary["n"], summary["n_real"], summary["n_fake"], summary["n_groups"]) == (
        24,
        12,
        12,
        4,
    )
    assert summary["sources"] == {"fruits": {"n": 24, "real": 12, "fake": 12}}
    assert "splits" not in summary
    df["split"] = ["train"] * 20 + ["test"] * 4
    summary = summarize(df)
    json.dumps(summary)
    assert summary["splits"]["train"]["n"] == 20
    assert summary["splits"]["val"] == {"n": 0, "real": 0, "fake": 0}
