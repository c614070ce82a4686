"""``fakescope predict``: score images, folders and videos."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fakescope.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_detector_arguments,
    add_run_arguments,
    add_video_arguments,
    detector_ref,
    video_options,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    _add_predict(sub)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="score images, folders and videos: P(fake) and a verdict per input",
        description="Score files, folders (recursive), globs, or '-' (paths on stdin). Exit code 0 when "
        "every input was scored, 3 when some failed (their rows say why).",
    )
    p.add_argument(
        "inputs", nargs="+", help="files, folders, globs, or - for a list of paths on stdin"
    )
    add_detector_arguments(p)
    p.add_argument(
        "--format",
        choices=["table", "jsonl", "csv"],
        help="output format (default: as --output's extension says, .csv or .jsonl/.json; "
        "else table on a terminal, jsonl otherwise)",
    )
    p.add_argument(
        "--output", "-o", help="write rows to this file instead of stdout (out.csv: CSV rows)"
    )
    p.add_argument(
        "--resume", action="store_true", help="skip inputs already in --output and append"
    )
    add_run_arguments(p, batch_size=16, threads=True)
    add_video_arguments(p)
    p.add_argument("--timeline", metavar="DIR", help="write a score-over-time plot per video here")
    p.add_argument("--explain", metavar="DIR", help="write a heatmap overlay per image here")
    p.add_argument(
        "--no-provenance",
        action="store_true",
        help="do not read files' provenance metadata (C2PA, IPTC, EXIF/XMP, PNG chunks, watermark)",
    )
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from fakescope.infer.inputs import NoInputsError, expand_inputs, missing_files, require_inputs

    missing = missing_files(args.inputs)
    if missing and len(missing) == len(args.inputs):  # nothing to score: say so before loading
        raise NoInputsError(f"file not found: {', '.join(missing)}")
    found = require_inputs(expand_inputs(args.inputs), args.inputs)  # none: an error, not "0"

    from fakescope.infer.backends import open_detector
    from fakescope.infer.output import choose_format

    ref = detector_ref(args)
    fmt, warning = choose_format(args.format, args.output, sys.stdout.isatty())
    if warning:
        print(f"fakescope: warning: {warning}", file=sys.stderr)
    if args.resume and not args.output:
        raise ValueError("--resume needs --output FILE (the file to continue)")
    detector = open_detector(ref)  # first: a missing detector or backbone fails fast

    from fakescope.infer.output import RowWriter, completed_paths
    from fakescope.infer.predictor import Predictor
    from fakescope.utils import is_interactive

    done = completed_paths(args.output, fmt) if args.resume else set()
    video = video_options(args, timeline_dir=args.timeline)
    pred = Predictor.open(
        detector,
        amp=ref.amp,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        video=video,
        explain_dir=args.explain,
        provenance=not args.no_provenance,
    )
    paths = (p for p in found if p not in done)
    writer = RowWriter(fmt, args.output, append=args.resume)
    bar = _progress(is_interactive() and (args.output is not None or fmt != "table"))
    try:
        for row in pred.predict_paths(paths):
            writer.write(row)
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    skipped = f"; {len(done)} already done" if done else ""
    print(writer.summary() + skipped, file=sys.stderr)
    return EXIT_PARTIAL if writer.errors else EXIT_OK


def _progress(enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(desc="predict", unit="file", disable=not enabled, file=sys.stderr)
