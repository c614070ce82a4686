"""Distributed training: ``fakescope train`` under ``torchrun`` (2 CPU processes, gloo).

The end-to-end tests check that 2 processes with the same global batch produce the checkpoint a
single process does (same data order, same per-item augmentation, gradients averaged over the
global batch), that only rank 0 writes and prints, and that a run resumes on another world size.
The model is a LayerNorm ConvNeXt (no BatchNorm, no dropout), so per-item computations do not
depend on how a batch is split; the images are 32 px, the crop size, and augmentation is off, so
the training transform draws nothing at random (one process draws crops and flips from the global
random stream, several processes per item: those differ).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fakescope.cli import main
from fakescope.models.checkpoint import read_tensors

from .helpers import all_cpus, make_seed_layout

EPOCHS = 3
FAST = [
    "--model",
    "test_convnext",
    "--img-size",
    "32",
    "--resize-mode",
    "crop",
    "--workers",
    "0",
    "--batch-size",
    "8",
    "--lr",
    "1e-3",
    "--amp",
    "off",
    "--augment",
    "",
    "--device",
    "cpu",
]
RUN_FILES = {
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "config.json",
    "splits.csv",
    "skipped.csv",
    "metrics.jsonl",
}


def _train_here(data: Path, out: Path, *extra: str) -> int:
    return main(["-q", "train", str(data), "--out", str(out), *FAST, *extra])


def _torchrun(data: Path, out: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "fakescope",
        "-q",
        "train",
        str(data),
        "--out",
        str(out),
        *FAST,
        *extra,
    ]
    before = out.with_name(out.name + ".before")  # the run folder as it was, to retry from
    shutil.rmtree(before, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, before)
    with all_cpus():
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0 and _GLOO_ABORT in proc.stderr:
        # A rank aborted in C++ (std::terminate): seen about once in ten runs on a loaded 2-core
        # machine, in training or at teardown, cause not found (gloo's worker threads are a known
        # source, pytorch/pytorch#179291). The run folder is put back as it was and the run is
        # made again, once; any other failure, or a second abort, fails the test.
        shutil.rmtree(out, ignore_errors=True)
        if before.exists():
            shutil.copytree(before, out)
        with all_cpus():
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    shutil.rmtree(before, ignore_errors=True)
    assert proc.returncode == 0, f"torchrun exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


_GLOO_ABORT = "terminate called without an active exception"


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_tensors(a_path: Path, b_path: Path) -> None:
    a, _ = read_tensors(a_path)
    b, _ = read_tensors(b_path)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_seed_layout(tmp_path_factory.mktemp("ddp") / "apples", n_per_group=6, size=32)


@pytest.fixture(scope="module")
def single(data: Path) -> Path:
    """The reference: one process, global batch 8, uninterrupted."""
    out = data.parent / "one"
    assert _train_here(data, out, "--epochs", str(EPOCHS), "--no-report") == 0
    return out


def test_two_processes_match_one(data: Path, single: Path) -> None:
    out = data.parent / "two"
    proc = _torchrun(data, out, "--epochs", str(EPOCHS))
    # Only rank 0 prints, writes and reports: one line per epoch, one calibration, one report.
    assert proc.stdout.count("Epochs 1/") == 1 and proc.stdout.count("calibration (platt)") == 1
    assert "x 2 processes" in proc.stdout
    assert {p.name for p in out.iterdir()} == RUN_FILES | {"report"}
    assert (out / "report" / "report.html").is_file()
    assert not list(out.rglob("*.tmp"))
    hist = _history(out)
    assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))
    assert all(h["world_size"] == 2 for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # Same checkpoint (weights and optimiser state) and the same reduced metrics as one process.
    _assert_same_tensors(single / "last.safetensors", out / "last.safetensors")
    _assert_same_tensors(single / "best.safetensors", out / "best.safetensors")
    for h1, h2 in zip(_history(single), hist, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert h2[key] == pytest.approx(h1[key], rel=1e-5, abs=1e-6), key
    assert len(pd.read_csv(out / "splits.csv")) == len(pd.read_csv(single / "splits.csv"))


def test_resume_on_another_world_size(
    data: Path, single: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fakescope.train.run as run_mod

    real = run_mod._one_epoch

    def killed_in_epoch_3(lp, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(lp, epoch)

    out = data.parent / "resumed"
    monkeypatch.setattr(run_mod, "_one_epoch", killed_in_epoch_3)
    assert _train_here(data, out, "--epochs", str(EPOCHS), "--no-report") == 130
    monkeypatch.setattr(run_mod, "_one_epoch", real)
    proc = _torchrun(data, out, "--epochs", str(EPOCHS), "--resume", "--no-report")
    assert proc.stdout.count("resuming ") == 1 and "after epoch 2" in proc.stdout
    hist = _history(out)
    assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))
    assert [h["world_size"] for h in hist] == [1, 1] + [2] * (EPOCHS - 2)
    _assert_same_tensors(single / "last.safetensors", out / "last.safetensors")


def test_shards_make_up_the_one_process_batches() -> None:
    from fakescope.data.datasets import make_loader

    df = pd.DataFrame(
        {"path": [f"/missing/{i}.png" for i in range(23)], "label": [0, 1] * 11 + [0]}
    )

    def batches(rank: int = 0, world: int = 1) -> list[list[int]]:
        loader = make_loader(
            df, lambda im: im, 6, shuffle=True, seed=3, rank=rank, world_size=world
        )
        return [[i for i, _ in b["failures"]] for b in loader]

    one = batches()
    for world in (2, 3):
        parts = [batches(r, world) for r in range(world)]
        assert [sum(p, []) for p in zip(*parts, strict=True)] == one
        sizes = [[len(b) for b in p] for p in parts]
        assert all(abs(a - b) <= 1 for step in zip(*sizes, strict=True) for a in step for b in step)


def test_item_augmentation_does_not_depend_on_the_shard(tmp_path: Path) -> None:
    from fakescope.data.datasets import make_loader
    from fakescope.data.transforms import AugmentConfig, train_transform
    from fakescope.models.detector import Preprocessing

    data = make_seed_layout(tmp_path / "d", n_per_group=2)
    df = pd.DataFrame({"path": sorted(str(p) for p in data.rglob("*.png"))})
    df["label"] = 0
    tf = train_transform(
        Preprocessing(size=24, resize_mode="crop"), AugmentConfig(("flip", "blur", "jpeg"), 0.5)
    )

    def by_index(rank: int, world: int, workers: int, seed: int = 7) -> dict[int, torch.Tensor]:
        loader = make_loader(
            df, tf, 4, shuffle=True, seed=seed, rank=rank, world_size=world, workers=workers
        )
        return {int(i): x for b in loader for i, x in zip(b["idx"], b["x"], strict=True)}

    two = {**by_index(0, 2, 0), **by_index(1, 2, 1)}
    three = {k: v for r in range(3) for k, v in by_index(r, 3, r % 2).items()}
    assert two.keys() == three.keys() == set(range(len(df)))
    for i in two:
        torch.testing.assert_close(two[i], three[i], rtol=0, atol=0)
    other_epoch = {**by_index(0, 2, 0, seed=8), **by_index(1, 2, 0, seed=8)}
    assert any(not torch.equal(two[i], other_epoch[i]) for i in two)  # still random per epoch


def test_global_batch_must_divide_over_processes() -> None:
    from fakescope.config import TrainConfig
    from fakescope.train.run import _check_world

    _check_world(TrainConfig(batch_size=8), 2)
    with pytest.raises(ValueError, match="multiple of 3"):
        _check_world(TrainConfig(batch_size=8), 3)


def test_dist_helpers_are_no_ops_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from fakescope import dist

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.init_from_env("cpu") and not dist.is_initialized()
    assert (dist.world_size(), dist.rank(), dist.is_main()) == (1, 0, True)
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert dist.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object(5) == 5
    assert dist.backend_for("cpu") == "gloo"
    assert dist.local_device(torch.device("cpu")) == torch.device("cpu")
    dist.barrier()
    dist.cleanup()
