"""Tests for fakescope.data.splits: seeded, stratified, reproducible splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakescope.data.manifest import DataError
from fakescope.data.splits import (
    SPLITS,
    load_splits,
    make_splits,
    save_splits,
    validate_splits,
)

RATIOS = (0.7, 0.15, 0.15)
# (label, group) -> rows. Fakes are 40% overall but their share differs a lot between groups.
STRATA = {(1, "apple"): 40, (1, "pear"): 12, (1, "fig"): 28, (0, "apple"): 60, (0, "kiwi"): 60}


def _manifest(strata: dict[tuple[int, str], int] = STRATA, root: str = "/data") -> pd.DataFrame:
    rows = [
        (f"{root}/{'fake' if label else 'real'}/{group}-{i:03d}.png", label, group, "src")
        for (label, group), n in strata.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["path", "label", "group", "source"])


def _assignment(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["path"], df["split"], strict=True))


def test_splits_constant() -> None:
    assert SPLITS == ("train", "val", "test")


def test_returns_copy_with_split_column() -> None:
    df = _manifest()
    out = make_splits(df)
    assert "split" not in df.columns
    assert list(out.columns) == [*df.columns, "split"]
    assert out.drop(columns="split").equals(df)
    assert set(out["split"]) == set(SPLITS)


def test_ratios_within_one_per_stratum() -> None:
    out = make_splits(_manifest(), RATIOS, seed=3)
    for (label, group), n in STRATA.items():
        part = out[(out["label"] == label) & (out["group"] == group)]
        counts = part["split"].value_counts()
        # val and test are each drawn by one stratified draw: within one of the exact share.
        assert abs(counts.get("val", 0) - n * RATIOS[1]) <= 1, (label, group, counts)
        assert abs(counts.get("test", 0) - n * RATIOS[2]) <= 1, (label, group, counts)
        # train is what remains, so its error is at most the sum of the other two.
        assert abs(counts.get("train", 0) - n * RATIOS[0]) <= 2, (label, group, counts)


def test_each_split_keeps_the_fake_share() -> None:
    df = _manifest()
    out = make_splits(df, RATIOS, seed=1)
    overall = df["label"].mean()
    for name in SPLITS:
        assert abs(out.loc[out["split"] == name, "label"].mean() - overall) < 0.03, name
    # and the share of each group inside the fakes
    fakes = out[out["label"] == 1]
    shares = fakes.groupby("split")["group"].value_counts(normalize=True).unstack()
    assert (shares.max() - shares.min()).max() < 0.07


def test_reproducible_and_seed_dependent() -> None:
    df = _manifest()
    first = _assignment(make_splits(df, seed=7))
    assert first == _assignment(make_splits(df, seed=7))
    assert first != _assignment(make_splits(df, seed=8))


def test_row_order_independent() -> None:
    df = _manifest()
    shuffled = df.sample(frac=1.0, random_state=123).reset_index(drop=True)
    out = make_splits(shuffled, seed=5)
    assert list(out["path"]) == list(shuffled["path"])  # original order kept
    assert _assignment(out) == _assignment(make_splits(df, seed=5))


def test_zero_val_ratio_gives_empty_val() -> None:
    out = make_splits(_manifest(), (0.8, 0.0, 0.2))
    assert (out["split"] == "val").sum() == 0
    assert (out["split"] == "test").sum() == round(0.2 * len(out))


def test_zero_test_ratio() -> None:
    out = make_splits(_manifest(), (0.9, 0.1, 0.0))
    assert set(out["split"]) == {"train", "val"}


@pytest.mark.parametrize(
    "ratios",
    [(0.7, 0.2, 0.2), (0.8, -0.1, 0.3), (0.0, 0.5, 0.5), (0.5, 0.5), (0.7, float("nan"), 0.3)],
)
def test_bad_ratios(ratios: tuple[float, ...]) -> None:
    with pytest.raises(DataError, match="ratio"):
        make_splits(_manifest(), ratios)  # type: ignore[arg-type]


def test_ratio_rounding_tolerance() -> None:
    make_splits(_manifest(), (0.7, 0.15, 0.15 + 5e-7))


def test_rare_groups_are_pooled() -> None:
    # Every image its own group: no stratum can be split, so they pool per label.
    strata = {(label, f"g{label}-{i}"): 1 for label in (0, 1) for i in range(40)}
    out = make_splits(_manifest(strata))
    counts = out.groupby(["split", "label"]).size()
    assert counts["val", 0] == counts["val", 1] == 6
    assert counts["test", 0] == counts["test", 1] == 6


def test_small_rare_stratum_joins_its_label() -> None:
    strata = {(1, "big"): 50, (1, "odd"): 3, (0, "big"): 50}
    out = make_splits(_manifest(strata))
    assert (out["split"] == "val").sum() == round(0.15 * 103)
    validate_splits(out)


def test_tiny_dataset_falls_back_without_error() -> None:
    strata = {(1, "a"): 2, (0, "b"): 1, (0, "c"): 1}
    out = make_splits(_manifest(strata))
    assert out["split"].isin(SPLITS).all()
    assert (out["split"] == "train").any()


def test_missing_columns_and_empty() -> None:
    with pytest.raises(DataError, match="label"):
        make_splits(pd.DataFrame({"path": ["a"]}))
    with pytest.raises(DataError, match="empty"):
        make_splits(_manifest({}))


def test_save_load_round_trip(tmp_path: Path) -> None:
    out = make_splits(_manifest(root=str(tmp_path)), seed=2)
    target = tmp_path / "runs" / "splits.csv"
    save_splits(out, target)
    assert target.read_text().splitlines()[0] == "path,label,group,source,split"
    back = load_splits(target)
    expected = out.sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert list(target.parent.iterdir()) == [target]  # no temporary file left


def test_load_splits_relative_paths_and_missing_column(tmp_path: Path) -> None:
    csv = tmp_path / "s.csv"
    csv.write_text("path,label,group,source,split\nimg/a.png,1,g,s,train\nimg/b.png,0,g,s,val\n")
    df = load_splits(csv)
    assert list(df["path"]) == [str(tmp_path / "img" / "a.png"), str(tmp_path / "img" / "b.png")]
    assert list(df["split"]) == ["train", "val"]
    (tmp_path / "n.csv").write_text("path,label\na.png,1\n")
    with pytest.raises(DataError, match="no 'split' column"):
        load_splits(tmp_path / "n.csv")


def test_save_splits_needs_split_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        save_splits(_manifest(), tmp_path / "s.csv")


def test_validate_accepts_good_splits() -> None:
    validate_splits(make_splits(_manifest()))


def test_validate_one_class() -> None:
    df = make_splits(_manifest({(1, "a"): 30}))
    with pytest.raises(DataError) as info:
        validate_splits(df)
    assert str(info.value) == "dataset has only fake images (30); training needs both real and fake"
    real = make_splits(_manifest({(0, "a"): 5}))
    with pytest.raises(DataError, match=r"only real images \(5\)"):
        validate_splits(real)


def test_validate_empty_val() -> None:
    df = make_splits(_manifest(), (0.85, 0.0, 0.15))
    with pytest.raises(DataError, match=r"split 'val' is empty \(train: \d+ .*val: 0"):
        validate_splits(df)
    validate_splits(df, required=("train", "test"))


def test_validate_single_class_split() -> None:
    df = make_splits(_manifest())
    df.loc[(df["split"] == "val") & (df["label"] == 0), "split"] = "train"
    with pytest.raises(DataError, match=r"split 'val' has only fake images \(0 real, \d+ fake\)"):
        validate_splits(df)


def test_validate_needs_split_column() -> None:
    with pytest.raises(DataError, match="split"):
        validate_splits(_manifest())


def test_ids_are_numpy_friendly() -> None:
    df = _manifest()
    df["label"] = df["label"].astype(np.int8)
    out = make_splits(df, seed=0)
    assert out["split"].notna().all()
