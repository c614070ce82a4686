"""Subcommands ``audit``, ``robustness`` and ``crossval``, and the ``--normalise`` options.

Wire them into :func:`fakescope.cli.build_parser` with ``add_audit_parsers(sub)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_OK = 0
# The names of fakescope.eval.robustness.PERTURBATIONS, here so that building the parser does not
# import torch (a test checks that the two lists agree).
PERTURBATION_NAMES = (
    "jpeg95",
    "jpeg75",
    "jpeg50",
    "jpeg30",
    "down0.5",
    "down0.25",
    "up2",
    "blur1",
    "blur2",
    "centercrop",
    "noise",
    "social",
    "png",
)


def _csv_list(text: str) -> list[str]:
    """``"a, b"`` to ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def add_audit_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit``, ``robustness`` and ``crossval`` subcommands to ``sub``."""
    _add_audit(sub)
    _add_robustness(sub)
    _add_crossval(sub)


# --------------------------------------------------------------------------------------------
# --normalise
# --------------------------------------------------------------------------------------------


def add_normalise_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--normalise``, ``--normalise-size`` and ``--normalise-quality`` (once) to a parser."""
    if "--normalise" in p._option_string_actions:
        return
    p.add_argument(
        "--normalise",
        action="store_true",
        help="re-encode every image through one pipeline first (short side to --normalise-size, "
        "centre square, JPEG --normalise-quality) to remove format and size shortcuts",
    )
    p.add_argument(
        "--normalise-size", type=int, default=512, help="side of the normalised images (512)"
    )
    p.add_argument(
        "--normalise-quality",
        type=int,
        default=90,
        help="JPEG quality of the normalised images (90)",
    )


def normalised_data(args: argparse.Namespace, data: str, workers: int = 0) -> str:
    """``data`` itself, or with ``--normalise`` the path of a normalised manifest CSV."""
    if not getattr(args, "normalise", False):
        return data
    from fakescope.data.normalise import normalise_data_arg

    return normalise_data_arg(data, args.normalise_size, args.normalise_quality, workers=workers)


def normalised_config(args: argparse.Namespace, cfg: Any) -> Any:
    """``cfg`` itself, or with ``--normalise`` a copy that trains on normalised images."""
    if not getattr(args, "normalise", False):
        return cfg
    from fakescope.data.normalise import normalise_train_config

    return normalise_train_config(cfg, args.normalise_size, args.normalise_quality)


# --------------------------------------------------------------------------------------------
# audit
# --------------------------------------------------------------------------------------------


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="look for shortcuts (format, size, JPEG quality, EXIF) and near-duplicate leakage",
        description="Audit a labelled dataset: per class and source, the file format, resolution, "
        "JPEG quality, chroma subsampling, EXIF and camera make, colour mode and file size per "
        "pixel; warns when one of them alone separates the classes, and lists near-duplicate "
        "pairs within and across splits.",
    )
    p.add_argument("data", help="folder tree, manifest (.csv/.parquet) or a splits.csv")
    p.add_argument("--splits", help="a splits.csv giving each file's split (for leakage counts)")
    p.add_argument("--out", help="output folder (default: audit-<data name>)")
    p.add_argument(
        "--hash-threshold",
        type=int,
        default=6,
        help="largest pHash distance (of 64 bits) counted as a near-duplicate (default 6)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes for hashing (default 2)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals")
    add_normalise_arguments(p)
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    """Run ``fakescope audit``."""
    from fakescope.audit.report import run_audit

    data = normalised_data(args, args.data, args.workers)
    out = Path(args.out) if args.out else Path(f"audit-{Path(args.data).stem or 'data'}")
    run_audit(
        data,
        out,
        splits=args.splits,
        hash_threshold=args.hash_threshold,
        workers=args.workers,
        n_boot=args.n_boot,
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------------------------


def _add_robustness(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robustness",
        help="evaluate a checkpoint under JPEG, resizing, blur, crop, noise and sharing",
        description="Score a labelled set clean and under each perturbation "
        f"({', '.join(PERTURBATION_NAMES)}); write robustness.csv, robustness.png, robustness.html and "
        "a Robustness section in report.html when the output folder has one.",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint")
    p.add_argument("data", help="folder tree, manifest or splits.csv (e.g. the run's splits.csv)")
    p.add_argument(
        "--split", default="test", help="with a split column: train, val, test or all (test)"
    )
    p.add_argument(
        "--out", help="output folder (default: the checkpoint's report/ folder, beside it)"
    )
    p.add_argument("--only", type=_csv_list, help="comma list of perturbations (default: all)")
    p.add_argument("--backbone-path", help="for probes: where the frozen backbone file is now")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals")
    add_normalise_arguments(p)
    p.set_defaults(func=cmd_robustness)


def _select_split(df: Any, split: str, data: str) -> Any:
    """Rows of ``split`` (all rows for ``all`` or when there is no split column)."""
    from fakescope.data.manifest import DataError

    if split == "all":
        return df
    if "split" not in df.columns:
        raise DataError(f"{data}: has no split column, so --split {split} cannot apply")
    part = df[df["split"] == split].reset_index(drop=True)
    if part.empty:
        raise DataError(f"{data}: no rows in split {split!r}")
    return part


def cmd_robustness(args: argparse.Namespace) -> int:
    """Run ``fakescope robustness``."""
    from fakescope.data.images import verify_files
    from fakescope.data.manifest import build_manifest
    from fakescope.eval.robustness import run_robustness
    from fakescope.models.checkpoint import load_detector

    det = load_detector(args.checkpoint, backbone_path=args.backbone_path)
    data = normalised_data(args, args.data, args.workers)
    df = _select_split(build_manifest(data), args.split, args.data)
    good, skipped = verify_files(df, workers=args.workers)
    if len(skipped):
        print(f"skipped {len(skipped)} unreadable file(s)", flush=True)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "report"
    run_robustness(
        det,
        good,
        out,
        perturbations=args.only,
        n_boot=args.n_boot,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        meta={"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split},
    )
    print(f"robustness: {out / 'robustness.html'}", flush=True)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# crossval
# --------------------------------------------------------------------------------------------


def _add_crossval(sub: argparse._SubParsersAction) -> None:
    from fakescope.cli import _train_arguments

    p = sub.add_parser(
        "crossval",
        help="k-fold cross-validation for small sets: every image scored once, out of fold",
        description="Train K detectors (same options as train), each without one fold, and report "
        "metrics with intervals on the pooled out-of-fold predictions.",
    )
    _train_arguments(p)
    p.add_argument("--folds", type=int, required=True, help="number of folds K (at least 2)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals")
    add_normalise_arguments(p)
    p.set_defaults(func=cmd_crossval)


def cmd_crossval(args: argparse.Namespace) -> int:
    """Run ``fakescope crossval``."""
    import dataclasses

    from fakescope.cli import train_config_from_args
    from fakescope.eval.crossval import cross_validate

    cfg = train_config_from_args(args)
    family = cfg.model if cfg.detector == "finetune" else "probe"
    out = Path(cfg.out) if cfg.out else Path("runs") / f"crossval-{family}"
    if args.normalise:
        cfg = dataclasses.replace(cfg, data=normalised_data(args, cfg.data, cfg.workers))
    metrics = cross_validate(cfg, args.folds, out, n_boot=args.n_boot)
    print(f"report: {metrics['report']}", flush=True)
    return EXIT_OK
