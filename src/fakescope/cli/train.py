"""``fakescope train``, ``demo`` and ``fuse``: commands that make detectors."""

from __future__ import annotations

import argparse
from pathlib import Path

from fakescope.cli.common import (
    EXIT_OK,
    add_training_arguments,
    normalised_config,
    train_config_from_args,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``demo`` and ``fuse``."""
    _add_train(sub)
    _add_demo(sub)
    _add_fuse(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector on a folder tree or manifest, then report on its test split",
        description="Train a detector. DATA is a folder tree whose folder names give the class "
        "(ai/fake/generated/... vs real/nature/...), a CSV/Parquet manifest, or a splits.csv.",
    )
    add_training_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    p.add_argument("--no-report", action="store_true", help="skip the test-split report at the end")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from fakescope.train.run import run

    cfg = normalised_config(args, train_config_from_args(args))
    run(cfg, resume=args.resume, force=args.force, report=not args.no_report)
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="make the built-in demo data (no downloads), train, evaluate, report"
    )
    p.add_argument("--out", default="demo-run", help="where data and the run go (default demo-run)")
    p.add_argument(
        "--model", default="resnet18", help="model to train (default resnet18, from scratch)"
    )
    p.add_argument("--weights", help="optional local weights file to start from")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--n-per-class", type=int, default=240, help="demo images per class")
    p.add_argument("--size", type=int, default=96, help="image size of the demo crops")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from fakescope.config import TrainConfig
    from fakescope.data.demo import make_demo_dataset
    from fakescope.train.run import run

    out = Path(args.out)
    data = make_demo_dataset(out / "data", n_per_class=args.n_per_class, size=args.size)
    print(
        f"demo data: {data} (crops of scikit-image's sample photos; fakes re-synthesised by a small "
        "autoencoder; see its README.txt)",
        flush=True,
    )
    cfg = TrainConfig(
        data=str(data),
        model=args.model,
        weights=args.weights,
        out=str(out / "run"),
        epochs=args.epochs,
        batch_size=32,
        lr=1e-3 if not args.weights else 3e-4,
        img_size=args.size,
        resize_mode="crop",
        workers=args.workers,
    )
    run(cfg, force=True)
    return EXIT_OK


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse", help="combine checkpoints into one detector, fitted on validation rows only"
    )
    p.add_argument("checkpoints", nargs="+", help="two or more .safetensors checkpoints")
    p.add_argument("--data", required=True, help="a splits.csv (or manifest) with a 'val' split")
    p.add_argument(
        "--method",
        choices=["stacking", "mean"],
        default="stacking",
        help="stacking: logistic regression on members' logits; mean: averaged logits",
    )
    p.add_argument("--out", required=True, help="the fused checkpoint to write (.safetensors)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.set_defaults(func=cmd_fuse)


def cmd_fuse(args: argparse.Namespace) -> int:
    from fakescope.data.manifest import build_manifest
    from fakescope.infer.backends import open_detector
    from fakescope.models.checkpoint import save_checkpoint
    from fakescope.train.fusion import fuse

    if len(args.checkpoints) < 2:
        raise ValueError("fuse needs at least two checkpoints")
    members = [open_detector(c) for c in args.checkpoints]
    fused = fuse(members, build_manifest(args.data), method=args.method, workers=args.workers)
    save_checkpoint(
        args.out,
        fused,
        members=[str(c) for c in args.checkpoints],
        data=str(args.data),
        **fused.meta,
    )
    w = ", ".join(f"{x:.3f}" for x in fused.meta["fusion_fit"]["weights"])
    print(
        f"fused {len(members)} detectors ({args.method}) on {fused.meta['fusion_fit']['rows']} val rows: "
        f"weights [{w}] bias {fused.meta['fusion_fit']['bias']:.3f} -> {args.out}"
    )
    return EXIT_OK
