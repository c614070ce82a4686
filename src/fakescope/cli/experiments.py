"""``fakescope loso`` and ``crossval``: experiments that train several detectors and test each."""

from __future__ import annotations

import argparse
from pathlib import Path

from fakescope.cli.common import (
    EXIT_OK,
    add_normalise_arguments,
    add_training_arguments,
    csv_list,
    normalised_data,
    train_config_from_args,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``loso`` and ``crossval``."""
    _add_loso(sub)
    _add_crossval(sub)


def _add_loso(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loso",
        help="leave-one-source-out: train on all sources but one, test on that one, for each",
        description="Leave-one-source-out. Takes the same options as train. A held-out source of "
        "one class is paired with the other class from the training sources' test rows.",
    )
    add_training_arguments(p)
    p.add_argument("--sources", type=csv_list, help="hold out only these sources (comma list)")
    p.set_defaults(func=cmd_loso)


def cmd_loso(args: argparse.Namespace) -> int:

    from fakescope.eval.generalise import format_table
    from fakescope.experiments.loso import leave_one_source_out

    cfg = train_config_from_args(args)
    cfg = cfg.replace(data=normalised_data(args, cfg.data, cfg.workers))
    family = cfg.model if cfg.family == "finetune" else "probe"
    out = Path(cfg.out) if cfg.out else Path("runs") / f"loso-{family}"
    rows = leave_one_source_out(
        cfg, out, sources=args.sources, workers=cfg.workers, device=cfg.device
    )
    print("\n" + format_table(rows))
    for r in rows:
        if r.get("note"):
            print(f"  {r['dataset']}: {r['note']}")
    print(f"reports: {out}  (summary.csv)")
    return EXIT_OK


def _add_crossval(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser(
        "crossval",
        help="k-fold cross-validation for small sets: every image scored once, out of fold",
        description="Train K detectors (same options as train), each without one fold, and report "
        "metrics with intervals on the pooled out-of-fold predictions.",
    )
    add_training_arguments(p)
    p.add_argument("--folds", type=int, required=True, help="number of folds K (at least 2)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals")
    add_normalise_arguments(p)
    p.set_defaults(func=cmd_crossval)


def cmd_crossval(args: argparse.Namespace) -> int:
    """Run ``fakescope crossval``."""

    from fakescope.experiments.crossval import cross_validate

    cfg = train_config_from_args(args)
    family = cfg.model if cfg.family == "finetune" else "probe"
    out = Path(cfg.out) if cfg.out else Path("runs") / f"crossval-{family}"
    if args.normalise:
        cfg = cfg.replace(data=normalised_data(args, cfg.data, cfg.workers))
    result = cross_validate(cfg, args.folds, out, n_boot=args.n_boot)
    print(f"report: {result.report}", flush=True)
    return EXIT_OK
