"""End-to-end: the CLI flow train → evaluate → report, resume after a kill, bad input, config layers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from fakescope.cli import main
from fakescope.models.checkpoint import read_tensors

from .helpers import TINY_MODEL, make_seed_layout

FAST = [
    "--model",
    TINY_MODEL,
    "--img-size",
    "32",
    "--resize-mode",
    "crop",
    "--workers",
    "0",
    "--batch-size",
    "16",
    "--lr",
    "3e-3",
    "--amp",
    "off",
]


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["-q", "train", str(data), "--out", str(out), *FAST, *extra])


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_evaluate_report_in_process(seed_layout: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert _train(seed_layout, run, "--epochs", "3") == 0
    out = capsys.readouterr().out
    assert "Epochs 1/3 train loss " in out and " val loss " in out and " acc " in out
    for name in (
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "splits.csv",
        "skipped.csv",
        "config.json",
        "report/report.html",
        "report/metrics.json",
        "report/predictions.csv",
    ):
        assert (run / name).is_file(), name
    html = (run / "report" / "report.html").read_text()
    # curves, confusion, ROC (linear and log-FPR), PR, reliability, score histograms, grid
    assert html.count("data:image/png;base64,") == 7
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    splits = pd.read_csv(run / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    assert set(splits["group"]) == {
        "green-apple-ohs",
        "green-apple-ss",
        "red-apple-ohs",
        "red-apple-ss",
    }
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["n"] == int((splits["split"] == "test").sum())
    assert "classification_report" in metrics and metrics["accuracy_ci"] is not None

    ev = tmp_path / "eval"
    code = main(
        [
            "-q",
            "evaluate",
            str(run / "best.safetensors"),
            str(run / "splits.csv"),
            "--split",
            "test",
            "--out",
            str(ev),
            "--workers",
            "0",
            "--n-boot",
            "100",
        ]
    )
    assert code == 0
    again = json.loads((ev / "metrics.json").read_text())
    assert again["n"] == metrics["n"]
    assert again["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-6)


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    data = make_seed_layout(tmp_path / "d", n_per_group=4)
    assert _train(data, tmp_path / "a", "--epochs", "2", "--no-report") == 0

    import fakescope.train.run as run_mod

    real = run_mod._one_epoch

    def killed_in_epoch_2(lp, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(lp, epoch)

    monkeypatch.setattr(run_mod, "_one_epoch", killed_in_epoch_2)
    assert _train(data, tmp_path / "b", "--epochs", "2", "--no-report") == 130
    assert len(_history(tmp_path / "b")) == 1
    monkeypatch.setattr(run_mod, "_one_epoch", real)
    assert (
        _train(data, tmp_path / "b", "--epochs", "2", "--no-report") == 1
    )  # exists: needs --resume
    assert _train(data, tmp_path / "b", "--epochs", "2", "--no-report", "--resume") == 0
    assert [h["epoch"] for h in _history(tmp_path / "b")] == [1, 2]
    a, _ = read_tensors(tmp_path / "a" / "last.safetensors")
    b, _ = read_tensors(tmp_path / "b" / "last.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_bad_files_are_skipped_and_reported(seed_layout: Path, tmp_path: Path) -> None:
    (seed_layout / "AI" / "zero-1.jpg").write_bytes(b"")
    (seed_layout / "Real" / "notes-1.jpg").write_text("this is text, not a JPEG")
    good = (seed_layout / "Real" / "red-apple-ss-1.png").read_bytes()
    (seed_layout / "AI" / "cut-1.png").write_bytes(good[: len(good) // 2])
    run = tmp_path / "run"
    assert _train(seed_layout, run, "--epochs", "1") == 0
    skipped = pd.read_csv(run / "skipped.csv")
    names = {Path(p).name: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert set(names) == {"zero-1.jpg", "notes-1.jpg", "cut-1.png"}
    assert "empty" in names["zero-1.jpg"] and "not a recognised image" in names["notes-1.jpg"]
    assert "zero-1.jpg" in (run / "report" / "report.html").read_text()


def test_one_class_stops_before_training(tmp_path: Path, capsys) -> None:
    data = make_seed_layout(tmp_path / "d", n_per_group=2)
    for f in (data / "Real").iterdir():
        f.unlink()
    assert _train(data, tmp_path / "run", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "only fake" in err and "both real and fake" in err
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_no_class_folders_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "d" / "photos").mkdir(parents=True)
    make_seed_layout(tmp_path / "x", n_per_group=1)
    for f in (tmp_path / "x" / "AI").iterdir():
        f.rename(tmp_path / "d" / "photos" / f.name)
    assert _train(tmp_path / "d", tmp_path / "run", "--epochs", "1") == 1
    assert "photos" in capsys.readouterr().err


def test_config_layers(tmp_path: Path) -> None:
    from fakescope.cli import build_parser
    from fakescope.cli.common import train_config_from_args

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 7\nlr: 0.01\naugment: [blur, jpeg]\n")
    args = build_parser().parse_args(
        [
            "train",
            "data",
            "--config",
            str(cfg_file),
            "--lr",
            "0.5",
            "--set",
            "batch_size=8",
            "--set",
            "seed=3",
        ]
    )
    cfg = train_config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed) == (7, 0.5, 8, 3)
    assert cfg.augment == ["blur", "jpeg"] and cfg.model == "resnet50"
    # --set takes one KEY=VALUE each time, so it never swallows DATA after it
    late = build_parser().parse_args(["train", "--set", "epochs=2", "data"])
    assert late.data == "data" and train_config_from_args(late).epochs == 2
    bad = build_parser().parse_args(["train", "data", "--set", "epoch=3"])
    with pytest.raises(ValueError, match="unknown config key"):
        train_config_from_args(bad)


def test_config_values_are_checked_at_the_door(tmp_path: Path, capsys) -> None:
    from fakescope.cli import build_parser, main
    from fakescope.cli.common import train_config_from_args
    from fakescope.config import ConfigError, TrainConfig

    # --set values are YAML; numbers given as text still read as numbers (1e-3 is text in YAML)
    args = build_parser().parse_args(["train", "d", "--set", "epochs=3", "--set", "lr=1e-3"])
    cfg = train_config_from_args(args)
    assert (cfg.epochs, cfg.lr) == (3, 1e-3) and isinstance(cfg.lr, float)
    # a bad value is one line naming the key, the value and the type, and no run starts
    assert main(["train", str(tmp_path), "--set", "epochs=three", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fakescope: error: config key epochs = 'three': expected int")
    assert "\n" not in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=r"augment\[1\] = 'gif': expected one of 'flip'"):
        TrainConfig.from_dict({"augment": ["blur", "gif"]})
    with pytest.raises(ConfigError, match="config key split"):
        TrainConfig.from_dict({"split": [0.5, 0.5]})
    with pytest.raises(
        ConfigError, match=r"unknown config key\(s\) \['epoch'\]; known keys: .*'epochs'"
    ):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig().replace(epochs="three")


def test_saved_config_serialises_as_before(tmp_path: Path) -> None:
    import json

    from fakescope.cli import build_parser
    from fakescope.cli.common import _TRAIN_KEYS
    from fakescope.config import TrainConfig, save_config

    d = TrainConfig().to_dict()
    assert list(d)[:6] == ["data", "model", "pretrained", "weights", "out", "epochs"]
    assert d["split"] == [0.7, 0.15, 0.15] and d["augment"] == ["flip"] and d["lr"] == 3e-4
    save_config(TrainConfig(epochs=2), tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == {**d, "epochs": 2} and TrainConfig.from_dict(saved) == TrainConfig(epochs=2)
    # a run folder from before 0.2 named the family "detector"
    old = {k: v for k, v in saved.items() if k != "family"} | {"detector": "probe"}
    assert TrainConfig.from_dict(old).family == "probe"
    # every key is a flag, declared once
    assert tuple(d) == _TRAIN_KEYS
    args = build_parser().parse_args(["train", "d"])
    assert all(hasattr(args, k) and getattr(args, k) is None for k in _TRAIN_KEYS if k != "data")


def test_augmented_training_runs(seed_layout: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        _train(
            seed_layout,
            run,
            "--epochs",
            "1",
            "--augment",
            "flip,blur,jpeg",
            "--aug-prob",
            "1",
            "--no-report",
        )
        == 0
    )
    assert (run / "best.safetensors").is_file()
