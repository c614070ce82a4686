"""Per-dataset evaluation tables and the leave-one-source-out protocol."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fakescope.cli import main
from fakescope.data.manifest import build_manifest
from fakescope.eval.generalise import format_table, summary_row
from fakescope.eval.result import Metrics

from .helpers import build_tiny_encoder


@pytest.fixture
def multi_source(seed_layout: Path, tmp_path: Path) -> Path:
    """The seed layout relabelled into sources: two 'generators' and two photo collections."""
    df = build_manifest(seed_layout)
    colour = df["group"].str.split("-").str[0]
    df["source"] = [("gen-" if y else "cam-") + c for y, c in zip(df["label"], colour, strict=True)]
    path = tmp_path / "multi.csv"
    df.to_csv(path, index=False)
    return path


def test_evaluate_many_prints_one_row_per_dataset(
    seed_layout: Path, multi_source: Path, tmp_path: Path, capsys
) -> None:
    enc = build_tiny_encoder(tmp_path / "tiny.onnx")
    run = tmp_path / "probe"
    assert (
        main(
            [
                "-q",
                "train",
                str(seed_layout),
                "--family",
                "probe",
                "--backbone",
                str(enc),
                "--out",
                str(run),
                "--workers",
                "0",
                "--no-report",
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "ev"
    assert (
        main(
            [
                "-q",
                "evaluate",
                str(run / "best.safetensors"),
                str(seed_layout),
                str(multi_source),
                str(run / "splits.csv"),
                "--split",
                "all",
                "--out",
                str(out),
                "--workers",
                "0",
                "--n-boot",
                "100",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "AUC [95% CI]" in text and "real acc" in text
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["dataset"]) == ["apples", "multi", "splits"]
    assert (summary["n"] == 48).all()
    for name in summary["dataset"]:
        assert (out / name / "report.html").is_file()


def test_summary_row_intervals() -> None:
    m = Metrics(
        **{
            "n": 40,
            "n_real": 20,
            "n_fake": 20,
            "roc_auc": 0.9,
            "roc_auc_ci": [0.8, 0.97],
            "average_precision": 0.88,
            "average_precision_ci": [0.7, 0.95],
            "accuracy": 0.85,
            "accuracy_ci": [0.72, 0.95],
            "real_acc": 0.9,
            "fake_acc": 0.8,
        }
    )
    row = summary_row("x", m)
    assert row["auc_ci"] == [0.8, 0.97]  # a list, as summary.csv has always shown it
    assert row["real_acc_ci"][0] < 0.9 < row["real_acc_ci"][1]
    assert "0.900 [0.800, 0.970]" in format_table([row])


def test_leave_one_source_out(multi_source: Path, tmp_path: Path, capsys) -> None:
    enc = build_tiny_encoder(tmp_path / "tiny.onnx")
    out = tmp_path / "loso"
    assert (
        main(
            [
                "-q",
                "loso",
                str(multi_source),
                "--family",
                "probe",
                "--backbone",
                str(enc),
                "--out",
                str(out),
                "--workers",
                "0",
                "--sources",
                "gen-red,cam-green",
            ]
        )
        == 0
    )
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["dataset"]) == ["gen-red", "cam-green"]
    # The held-out generator was never trained on: its training split has no gen-red rows.
    train = pd.read_csv(out / "holdout-gen-red" / "train-splits.csv")
    assert "gen-red" not in set(train["source"])
    # One-class sources are paired with the other class, so the AUC is defined.
    assert summary["auc"].notna().all()
    assert "paired with" in capsys.readouterr().out


def test_loso_needs_two_sources(seed_layout: Path, tmp_path: Path, capsys) -> None:
    enc = build_tiny_encoder(tmp_path / "tiny.onnx")
    assert (
        main(
            [
                "-q",
                "loso",
                str(seed_layout),
                "--family",
                "probe",
                "--backbone",
                str(enc),
                "--out",
                str(tmp_path / "l"),
                "--workers",
                "0",
            ]
        )
        == 1
    )
    assert "at least two sources" in capsys.readouterr().err
