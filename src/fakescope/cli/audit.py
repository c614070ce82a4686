"""``fakescope audit``: look for shortcuts and near-duplicate leakage in a labelled dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from fakescope.cli.common import EXIT_OK, add_normalise_arguments, normalised_data


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``audit``."""
    _add_audit(sub)


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
