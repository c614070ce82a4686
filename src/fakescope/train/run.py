"""Wire a training run: data → split → model → epochs → best checkpoint → test report.

Run directory layout::

    config.json       the merged config          splits.csv     the split used (reusable)
    skipped.csv       files left out and why     metrics.jsonl  one line per epoch
    last.safetensors  resume point (+ optimiser) best.safetensors  best val loss (+ .json)
    report/           predictions.csv, metrics.json, plots, report.html for the test split
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fakescope import dist
from fakescope.config import TrainConfig, save_config
from fakescope.data.manifest import DataError, summarize
from fakescope.data.skipped import add_failures, write_skipped
from fakescope.data.splits import load_dataset, load_splits, save_splits, validate_splits
from fakescope.data.transforms import AugmentConfig, eval_transform, train_transform
from fakescope.eval.result import Metrics
from fakescope.eval.scoring import score_loader
from fakescope.models.checkpoint import read_tensors, save_checkpoint, save_tensors
from fakescope.models.detector import Detector
from fakescope.models.registry import create_detector
from fakescope.models.torch_detector import make_input_filter
from fakescope.train.loop import gather_scores, train_one_epoch
from fakescope.utils import autocast_dtype, is_interactive, resolve_device, seed_everything

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What changes epoch to epoch and must survive a kill."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0


def prepare_data(cfg: TrainConfig, run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load, split and verify the data; write ``splits.csv`` and ``skipped.csv``; check it can train."""
    from fakescope.data.images import verify_files

    df = load_dataset(cfg)
    if len(df) == 0:
        raise DataError(f"{cfg.data}: no images found")
    good, skipped = verify_files(
        df, max_pixels=cfg.max_pixels, workers=cfg.workers, progress=is_interactive()
    )
    write_skipped(run_dir / "skipped.csv", skipped)
    if len(skipped):
        logger.warning(
            "skipped %d unreadable file(s); see %s", len(skipped), run_dir / "skipped.csv"
        )
    validate_splits(good)
    save_splits(good, run_dir / "splits.csv")
    return good.reset_index(drop=True), skipped


def build_detector(cfg: TrainConfig) -> Detector:
    """Create the detector the config asks for, with the configured preprocessing."""
    det = create_detector(
        cfg.model, pretrained=cfg.pretrained, weights=cfg.weights, img_size=cfg.img_size
    )
    det.spec.preprocessing.resize_mode = cfg.resize_mode
    if cfg.input_filter:
        det.spec.input_filter = cfg.input_filter
        det.input_filter = make_input_filter(cfg.input_filter)
    return det


def make_lr_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """Linear warm-up over the first ~5% of steps, then cosine decay to 1% of the peak."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, int(0.05 * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    return lr_at


def _flatten_optimizer(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, val in state.items():
            if torch.is_tensor(val):
                tensors[f"__optim.{pid}.{key}"] = val
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("__optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = val
    for name, val in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_last(
    run_dir: Path, det: Detector, opt: torch.optim.Optimizer, state: TrainState, cfg: TrainConfig
) -> None:
    """Write the resume point atomically: weights, optimiser state, history, config."""
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors = {**det.net.state_dict(), **opt_tensors}
    meta = {
        "format": "fakescope-train-state",
        "spec": det.spec.to_dict(),
        "state": state.__dict__,
        "optimizer": opt_meta,
        "config": cfg.to_dict(),
    }
    save_tensors(run_dir / "last.safetensors", tensors, meta)


def restore_last(run_dir: Path, det: Detector, opt: torch.optim.Optimizer) -> TrainState:
    """Load the resume point written by :func:`save_last` into ``det`` and ``opt``."""
    return apply_last(read_tensors(run_dir / "last.safetensors"), det, opt)


def apply_last(
    blob: tuple[dict[str, Any], dict[str, Any]], det: Detector, opt: torch.optim.Optimizer
) -> TrainState:
    """Load ``(tensors, meta)`` as read from ``last.safetensors`` into the unwrapped ``det``.

    The file holds the plain (never DDP-wrapped) network and the optimiser state, so a run saved
    with any number of processes resumes with any other.
    """
    arrays, meta = blob
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    net = {k: v for k, v in tensors.items() if not k.startswith("__")}
    det.net.load_state_dict(net)
    _restore_optimizer(opt, tensors, meta["optimizer"])
    return TrainState(**meta["state"])


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """The per-epoch line, shaped like the seed report's ``Epochs N train loss … val loss … acc …``."""
    return (
        f"Epochs {rec['epoch']}/{epochs} train loss {rec['train_loss']:.4f} acc {rec['train_acc']:.4f} "
        f"val loss {rec['val_loss']:.4f} acc {rec['val_acc']:.4f} time {rec['time_s']:.1f}s"
    )


@dataclass
class _Loop:
    """The live objects of one run, passed between the small functions below."""

    cfg: TrainConfig
    run_dir: Path
    det: Detector
    opt: torch.optim.Optimizer
    device: torch.device
    amp: torch.dtype | None
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    model: nn.Module | None = None  # what trains: ``det``, or ``det`` wrapped in DDP
    world_size: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.det


def _one_epoch(lp: _Loop, epoch: int) -> dict[str, Any]:
    cfg, pre = lp.cfg, lp.det.spec.preprocessing
    aug = AugmentConfig(names=tuple(cfg.augment), prob=cfg.aug_prob)
    seed_everything(cfg.seed + epoch)
    train_loader = _loader(
        lp, lp.train_df, train_transform(pre, aug), shuffle=True, seed=cfg.seed + epoch
    )
    steps = len(train_loader)
    lr_at = make_lr_schedule(cfg, steps)
    show = is_interactive() and dist.is_main()
    t0 = time.time()
    tr = train_one_epoch(
        lp.model,
        train_loader,
        lp.opt,
        lp.device,
        lp.amp,
        lr_at=lr_at,
        start_step=(epoch - 1) * steps,
        progress=show,
        desc=f"epoch {epoch}/{cfg.epochs}",
        world_size=lp.world_size,
    )
    train_s = time.time() - t0
    _record_failures(lp, lp.train_df, tr.failures)
    val = score_loader(
        lp.det, _loader(lp, lp.val_df, eval_transform(pre)), lp.device, lp.amp, show, "val"
    )
    val = gather_scores(val)
    _record_failures(lp, lp.val_df, val.failures)
    val_loss, val_acc = val.loss_and_acc()
    return {
        "epoch": epoch,
        "train_loss": tr.loss,
        "train_acc": tr.acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "lr": lp.opt.param_groups[0]["lr"],
        "time_s": time.time() - t0,
        "train_images_per_s": tr.n / max(time.time() - t0, 1e-9),
        "train_s": train_s,
        "world_size": lp.world_size,
    }


def _record_failures(lp: _Loop, df: pd.DataFrame, failures: list[tuple[int, str]]) -> None:
    """Collect load failures from every rank; rank 0 appends them to ``skipped.csv``."""
    if lp.world_size > 1:
        failures = sorted({f for part in dist.all_gather_objects(failures) for f in part})
    if dist.is_main():
        add_failures(lp.run_dir, df, failures)


def _loader(lp: _Loop, df: pd.DataFrame, transform, shuffle: bool = False, seed: int = 0):
    from fakescope.data.datasets import make_loader

    return make_loader(
        df,
        transform,
        lp.cfg.batch_size,
        shuffle=shuffle,
        workers=lp.cfg.workers,
        seed=seed,
        max_pixels=lp.cfg.max_pixels,
        rank=lp.rank,
        world_size=lp.world_size,
    )


def _after_epoch(lp: _Loop, state: TrainState, rec: dict[str, Any], data_summary: dict) -> bool:
    """Record the epoch, save best/last checkpoints; return True to stop early.

    Every rank keeps the same state (the metrics are reduced over ranks, so all ranks make the same
    early-stopping decision); only rank 0 writes and prints.
    """
    main = dist.is_main()
    state.epoch = rec["epoch"]
    state.history.append(rec)
    if main:
        with open(lp.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(epoch_line(rec, lp.cfg.epochs), flush=True)
    if rec["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.bad_epochs = rec["val_loss"], rec["epoch"], 0
        if main:
            save_checkpoint(
                lp.run_dir / "best.safetensors",
                lp.det,
                config=lp.cfg.to_dict(),
                data=data_summary,
                history=state.history,
                best_epoch=state.best_epoch,
            )
    else:
        state.bad_epochs += 1
    if main:
        save_last(lp.run_dir, lp.det, lp.opt, state, lp.cfg)
    if lp.cfg.patience is not None and state.bad_epochs >= lp.cfg.patience:
        if main:
            print(
                f"early stop: val loss has not improved for {state.bad_epochs} epoch(s)",
                flush=True,
            )
        return True
    return False


def _start(cfg: TrainConfig, resume: bool, force: bool) -> tuple[Path, bool]:
    run_dir = cfg.run_dir()
    has_state = (run_dir / "last.safetensors").exists()
    if resume and not has_state:
        logger.info("nothing to resume in %s; starting a new run", run_dir)
    if has_state and not resume:
        if not force:
            raise FileExistsError(
                f"{run_dir} already holds a run. Use --resume to continue it, --force to start over, "
                "or --out to pick another directory."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, resume and has_state


def _prepare_run(
    cfg: TrainConfig, resume: bool, force: bool
) -> tuple[Path, bool, TrainConfig, pd.DataFrame]:
    """Make or reopen the run directory; return it, whether resuming, the config and the splits."""
    run_dir, resuming = _start(cfg, resume, force)
    if resuming:
        cfg = TrainConfig.from_dict(
            {
                **json.loads((run_dir / "config.json").read_text()),
                "epochs": cfg.epochs,
                "patience": cfg.patience,
            }
        )
        df = load_splits(run_dir / "splits.csv")
    else:
        save_config(cfg, run_dir / "config.json")
        df, _ = prepare_data(cfg, run_dir)
    return run_dir, resuming, cfg, df


def _on_main(fn, *args: Any) -> Any:
    """Run ``fn(*args)`` on rank 0 only and hand its result (or its error) to every rank."""
    if dist.world_size() == 1:
        return fn(*args)
    result, error = None, None
    if dist.is_main():
        try:
            result = fn(*args)
        except Exception as e:  # re-raised below, on every rank
            error = e
    kind, message = dist.broadcast_object(
        (type(error), str(error)) if error is not None else (None, None)
    )
    if error is not None:
        raise error
    if kind is not None:
        try:
            raise kind(message)
        except TypeError:  # an error type that wants other arguments
            raise RuntimeError(f"rank 0 failed: {message}") from None
    return dist.broadcast_object(result)


def _check_world(cfg: TrainConfig, world: int) -> None:
    if cfg.batch_size % world:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide evenly over "
            f"{world} processes; pick a multiple of {world}"
        )


def _wrap(det: Detector, device: torch.device, world: int) -> nn.Module:
    """``det`` itself for one process; wrapped in DistributedDataParallel for several."""
    if world == 1:
        return det
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(det, device_ids=ids)


def fit(cfg: TrainConfig, resume: bool = False, force: bool = False) -> Path:
    """Train per ``cfg``; return the run directory (holding ``best.safetensors``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this: they join one process group
    (NCCL on GPUs, gloo on CPU), rank 0 prepares the data and alone writes files, and the model
    trains with DistributedDataParallel on each rank's share of every global batch of
    ``cfg.batch_size`` images. The process group is left again before returning.
    """
    if cfg.family == "probe":
        if not dist.is_main():
            logger.info("probes fit on rank 0 only; rank %d has nothing to do", dist.rank())
            return cfg.run_dir()
        return _fit_probe(cfg, force)
    if cfg.family != "finetune":
        raise ValueError(f"unknown detector family {cfg.family!r}; use finetune or probe")
    device = resolve_device(cfg.device)
    owned = not dist.is_initialized()
    dist.init_from_env(device.type)
    try:
        return _fit_finetune(cfg, resume, force, dist.local_device(device))
    finally:
        if owned:
            dist.cleanup()


def _fit_finetune(cfg: TrainConfig, resume: bool, force: bool, device: torch.device) -> Path:
    world = dist.world_size()
    _check_world(cfg, world)
    run_dir, resuming, cfg, df = _on_main(_prepare_run, cfg, resume, force)
    seed_everything(cfg.seed)
    det = build_detector(cfg).to(device)
    opt = torch.optim.AdamW(det.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = TrainState()
    if resuming:
        state = apply_last(_on_main(read_tensors, run_dir / "last.safetensors"), det, opt)
        if dist.is_main():
            print(f"resuming {run_dir} after epoch {state.epoch}", flush=True)
    lp = _Loop(
        cfg,
        run_dir,
        det,
        opt,
        device,
        autocast_dtype(device, cfg.amp),
        df[df["split"] == "train"].reset_index(drop=True),
        df[df["split"] == "val"].reset_index(drop=True),
        model=_wrap(det, device, world),
        world_size=world,
        rank=dist.rank(),
    )
    if dist.is_main():
        _log_start(lp, df)
    summary = summarize(df)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if _after_epoch(lp, state, _one_epoch(lp, epoch), summary):
            break
    dist.barrier()
    return run_dir


def _fit_probe(cfg: TrainConfig, force: bool) -> Path:
    """Probes have no epochs: embeddings are cached per file, so a re-run is the resume."""
    from fakescope.train.probe import fit_probe, resolve_backbone_arg

    if cfg.backbone:  # a backbone that is nowhere fails before the data is read
        cfg = cfg.replace(backbone=resolve_backbone_arg(cfg.backbone))
    run_dir = cfg.run_dir()
    if (run_dir / "best.safetensors").exists():
        if not force:
            raise FileExistsError(f"{run_dir} already holds a run; use --force or another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    df, _ = prepare_data(cfg, run_dir)
    return fit_probe(cfg, run_dir, df)


def _log_start(lp: _Loop, df: pd.DataFrame) -> None:
    counts = df.groupby(["split", "label"]).size().unstack(fill_value=0)
    parts = [
        f"{s}: {int(counts.loc[s].get(0, 0))} real / {int(counts.loc[s].get(1, 0))} fake"
        for s in ("train", "val", "test")
        if s in counts.index
    ]
    amp = str(lp.amp).replace("torch.", "") if lp.amp else "fp32"
    procs = f" x {lp.world_size} processes" if lp.world_size > 1 else ""
    print(f"model {lp.cfg.model} on {lp.device}{procs} ({amp}); " + "; ".join(parts), flush=True)


def json_config(run_dir: Path, cfg: TrainConfig) -> TrainConfig:
    """The config a run was made with (resumed runs keep their first config)."""
    path = run_dir / "config.json"
    return TrainConfig.from_dict(json.loads(path.read_text())) if path.exists() else cfg


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records from ``metrics.jsonl``; a re-run epoch (after a kill) keeps its last record."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            by_epoch[int(rec["epoch"])] = rec
    return [by_epoch[k] for k in sorted(by_epoch)]


def report_run(
    run_dir: Path,
    workers: int = 0,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: str | None = None,
) -> Metrics:
    """Evaluate a run's best checkpoint on its test split (val if there is no test split)."""
    from fakescope.eval.evaluate import evaluate_frame
    from fakescope.models.checkpoint import load_detector

    det = load_detector(run_dir / "best.safetensors")
    df = load_splits(run_dir / "splits.csv")
    split = "test" if (df["split"] == "test").any() else "val"
    if split == "val":
        logger.warning(
            "no test split: reporting on the validation split, which chose the checkpoint"
        )
    part = df[df["split"] == split].reset_index(drop=True)
    skipped_path = run_dir / "skipped.csv"
    skipped = pd.read_csv(skipped_path) if skipped_path.exists() else None
    print(f"\n{split} set: {len(part)} images ({int((part['label'] == 1).sum())} fake)", flush=True)
    meta = {
        "model": det.spec.arch,
        "checkpoint": str(run_dir / "best.safetensors"),
        "split": split,
        "best_epoch": det.meta.get("best_epoch"),
        "data": det.meta.get("config", {}).get("data"),
        "dataset": det.meta.get("data"),
        "fakescope_version": det.meta.get("fakescope_version"),
    }
    return evaluate_frame(
        det,
        part,
        run_dir / "report",
        history=read_history(run_dir),
        meta=meta,
        skipped=skipped,
        batch_size=batch_size,
        workers=workers,
        device=device,
        cache_dir=cache_dir,
    )


def calibrate_run(run_dir: Path, cfg: TrainConfig) -> None:
    """Fit Platt scaling and the threshold on the validation split; store both in best.safetensors."""
    from fakescope.eval.calibration import apply_calibration, fit_platt, threshold_for_fpr
    from fakescope.eval.scoring import score_frame
    from fakescope.models.checkpoint import load_detector

    if cfg.calibrate == "none" and cfg.target_fpr is None:
        return
    det = load_detector(run_dir / "best.safetensors")
    df = load_splits(run_dir / "splits.csv")
    val = df[df["split"] == "val"].reset_index(drop=True)
    scored, _ = score_frame(
        det, val, cfg.batch_size, cfg.workers, cfg.device, cache_dir=cfg.cache_dir
    )
    logits, labels = scored["logit"].to_numpy(), scored["label"].to_numpy()
    if cfg.calibrate == "platt":
        det.spec.calibration = fit_platt(logits, labels)
    elif cfg.calibrate != "none":
        raise ValueError(f"unknown calibration {cfg.calibrate!r}; use platt or none")
    probs = apply_calibration(logits, det.spec.calibration)
    if cfg.target_fpr is not None:
        det.spec.threshold = threshold_for_fpr(probs[labels == 0], cfg.target_fpr)
    extra = {k: v for k, v in det.meta.items() if k not in ("format", "format_version", "spec")}
    save_checkpoint(run_dir / "best.safetensors", det, **extra)
    cal = det.spec.calibration or {}
    print(
        f"calibration ({cfg.calibrate}) on {len(val)} val images: a={cal.get('a', 1):.3f} "
        f"b={cal.get('b', 0):.3f}; threshold {det.spec.threshold:.4f}",
        flush=True,
    )


def run(cfg: TrainConfig, resume: bool = False, force: bool = False, report: bool = True) -> Path:
    """Train, calibrate on val, then evaluate the best checkpoint on the test split with a report.

    Under ``torchrun`` all ranks train; calibration and the report then run on rank 0 alone.
    """
    run_dir = fit(cfg, resume=resume, force=force)
    if not dist.is_main():
        return run_dir
    calibrate_run(run_dir, json_config(run_dir, cfg))
    if report:
        report_run(
            run_dir,
            workers=cfg.workers,
            device=cfg.device,
            batch_size=cfg.batch_size,
            cache_dir=cfg.cache_dir,
        )
        print(f"report: {run_dir / 'report' / 'report.html'}", flush=True)
    return run_dir
