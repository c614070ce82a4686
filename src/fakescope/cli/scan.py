"""``fakescope scan``: score a large input on a Ray cluster into a resumable Parquet dataset."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fakescope.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_detector_arguments,
    add_video_arguments,
    detector_ref,
    video_options,
)

logger = logging.getLogger(__name__)


LOCAL = ""  # ``--ray`` given without an address: a local cluster


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``scan``."""
    add_scan_parser(sub)


def add_scan_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``scan`` subcommand to ``sub`` (the main parser's subparsers)."""
    p = sub.add_parser(
        "scan",
        help="score many images on a Ray cluster into a resumable Parquet dataset",
        description="Score INPUT (folders, globs, files, or CSV/Parquet manifests with a 'path' "
        "column) with Ray Data and write predict's rows to OUTPUT as Parquet part files, one row "
        "per input, errors included. Re-running skips parts already written. Exit code 0 when "
        "every input was scored, 3 when some failed (their rows say why).",
    )
    p.add_argument("items", nargs="+", metavar="INPUT... OUTPUT", help="inputs, then the output")
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="Ray cluster (HEAD:6379, auto, ray://HEAD:10001); alone or absent: a local cluster. "
        "Write --ray=ADDRESS to keep it apart from INPUT.",
    )

    add_detector_arguments(p)
    p.add_argument("--actors", type=int, default=2, help="actors in the pool (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="paths per actor call (default 16)")
    p.add_argument("--part-size", type=int, default=1024, help="paths per part file (default 1024)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor (default 0)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    p.add_argument("--device", default="auto", help="the actors' device (default auto)")
    p.add_argument("--force", action="store_true", help="replace what OUTPUT holds and start over")
    add_video_arguments(p)
    p.set_defaults(func=cmd_scan)
    return p


def split_items(ray: str | None, items: list[str]) -> tuple[str | None, list[str], str]:
    """Sort out ``--ray [ADDRESS] INPUT... OUTPUT``: (address or None, inputs, output).

    ``--ray`` takes an optional value, so in ``--ray photos/ out/`` argparse reads ``photos/`` as
    the address. A value that names something on disk, has glob characters, or leaves fewer than
    two positionals is taken back as the first input.
    """
    if ray and (os.path.exists(ray) or any(c in ray for c in "*?[") or len(items) < 2):
        items = [ray, *items]
        ray = LOCAL
    if len(items) < 2:
        raise ValueError("scan needs at least one INPUT and an OUTPUT folder")
    return (ray or None), items[:-1], items[-1]


def cmd_scan(args: argparse.Namespace) -> int:
    """Run ``fakescope scan``; 0 when every input was scored, 3 when some rows are errors."""
    from fakescope.scan import scan

    ref = detector_ref(args)
    address, inputs, output = split_items(args.ray, list(args.items))
    video = video_options(args)
    result = scan(
        inputs,
        output,
        ref,
        address=address,
        actors=args.actors,
        batch_size=args.batch_size,
        part_size=args.part_size,
        device=args.device,
        video=video,
        cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor,
        num_cpus=args.num_cpus,
        force=args.force,
    )
    print(result.summary(), file=sys.stderr)
    return EXIT_PARTIAL if result.errors else EXIT_OK
