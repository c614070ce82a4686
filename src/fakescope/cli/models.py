"""``fakescope models``, ``info`` and ``export``: list, inspect and export detectors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fakescope.cli.common import EXIT_OK, add_detector_arguments, default_detector


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``models``, ``info`` and ``export``."""
    p = sub.add_parser(
        "models",
        help="list the built-in detectors (and whether their files are here) and model names",
    )
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'vit_*'")
    p.add_argument("--all", action="store_true", help="include every timm model name")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("info", help="print a detector's metadata as JSON (reads the header only)")
    p.add_argument("checkpoint", nargs="?", metavar="DETECTOR", help="as --detector")
    add_detector_arguments(p, run_options=False)
    p.set_defaults(func=cmd_info)
    _add_export(sub)


def cmd_models(args: argparse.Namespace) -> int:
    from fakescope.models.registry import list_models

    print("built-in detectors (--detector builtin:NAME):")
    for line in builtin_lines():
        print(f"  {line}")
    print("\nmodels to train (timm names; --all lists every one):")
    try:
        names = list_models(args.pattern, include_timm=args.all)
    except ModuleNotFoundError as e:
        from fakescope.utils import missing_extra_message

        message = missing_extra_message(e, "training")
        if message is None:
            raise
        print(f"  ({message})")
        return EXIT_OK
    print("\n".join(f"  {n}" for n in names))
    return EXIT_OK


def builtin_lines() -> list[str]:
    """One line per built-in detector: name, what it is, and whether its backbone file is here."""
    from fakescope.embed.weights import RECIPES, cache_dir
    from fakescope.models.header import read_meta
    from fakescope.zoo import BUILTINS, DEFAULT_DETECTOR, PREFIX

    lines = []
    for name, (_, about) in BUILTINS.items():
        ref = f"{PREFIX}{name}"
        backbone = read_meta(ref)["spec"].get("model_kwargs", {}).get("backbone", {})
        file = Path(str(backbone.get("path", ""))).name
        found = _found(file)
        if found is not None:
            where = f"backbone {file}: found ({found})"
        elif file in RECIPES:
            where = f"backbone {file}: missing; fetched on first use when online, or put it in {cache_dir()}"
        else:
            where = f"backbone {file}: missing; put it in {cache_dir()}"
        default = " (default)" if ref == DEFAULT_DETECTOR else ""
        lines.append(f"{ref}{default}: {about.split(';')[0]}\n      {where}")
    return lines


def _found(file: str) -> Path | None:
    """Where a backbone file is here (looked for as opening a detector looks), else None."""
    from fakescope.embed.fetch import ensure_file

    try:
        return ensure_file(file, None, fetch_missing=False) if file else None
    except FileNotFoundError:
        return None


def _named(args: argparse.Namespace) -> str:
    """The detector named by the positional or by ``--detector`` (not both), else the default."""
    if args.checkpoint and args.detector and args.checkpoint != args.detector:
        raise ValueError("name the detector once: as the argument or with --detector")
    return args.checkpoint or args.detector or default_detector()


def cmd_info(args: argparse.Namespace) -> int:
    from fakescope.models.header import read_meta

    print(json.dumps(read_meta(_named(args)), indent=2))
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a detector to ONNX: a fine-tuned network (fp32 or int8), or a probe with "
        "its image tower and head in one file",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="CHECKPOINT",
        help="a .safetensors checkpoint (fine-tuned or probe) or builtin:NAME",
    )
    add_detector_arguments(p, run_options=False)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the export format")
    p.add_argument("--int8", action="store_true", help="quantise to int8 with onnxruntime")
    p.add_argument(
        "--calibration",
        help="images (folder, glob or manifest CSV; no labels needed) for static int8 "
        "calibration (default: the training split of the run that made the checkpoint)",
    )
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="with --int8: dynamic (weights-only) quantisation, no calibration; it suits "
        "transformer MatMuls but is slower than fp32 on CNNs",
    )
    p.add_argument("--calibration-count", type=int, default=128, help="how many calibration images")
    p.add_argument("--out", help="output .onnx (default: beside the checkpoint)")
    p.set_defaults(func=cmd_export)


def _calibration_paths(source: str, n: int) -> list[str]:
    """Up to ``n`` image paths (seeded sample) from a folder, a glob or a manifest CSV; no labels needed."""
    from fakescope.data.video import VIDEO_EXTENSIONS
    from fakescope.infer.inputs import expand_inputs
    from fakescope.models.onnx_export import sample_paths

    if not Path(source).exists() and not any(c in source for c in "*?["):
        raise ValueError(f"{source}: calibration images not found (no such file or folder)")
    if source.lower().endswith(".csv") and Path(source).is_file():
        from fakescope.data.manifest import build_manifest

        paths = build_manifest(source)["path"].astype(str).tolist()
    else:
        paths = [
            p for p in expand_inputs([source]) if Path(p).suffix.lower() not in VIDEO_EXTENSIONS
        ]
    return sample_paths(paths, n)


def cmd_export(args: argparse.Namespace) -> int:
    from fakescope.infer.backends import DetectorRef, onnx_path_for, open_detector
    from fakescope.models.onnx_export import calibration_images, export_onnx

    if not (args.checkpoint or args.detector):
        raise ValueError("export needs a detector: fakescope export CHECKPOINT (or builtin:NAME)")
    checkpoint = _named(args)
    det = open_detector(DetectorRef(checkpoint))
    calib = None
    if args.int8 and args.calibration:
        calib = _calibration_paths(args.calibration, args.calibration_count)
        if not calib:
            raise ValueError(f"{args.calibration}: no images found for int8 calibration")
    elif args.int8 and not args.dynamic:
        calib = calibration_images(det, n=args.calibration_count)
        if not calib:
            raise ValueError(
                f"{checkpoint}: static int8 needs calibration images and the training "
                "images of its run are not on disk: pass --calibration DATA (or --dynamic)"
            )
    if args.dynamic and (not args.int8 or args.calibration):
        raise ValueError("--dynamic goes with --int8 and without --calibration")
    from fakescope.zoo import detector_file

    source = detector_file(checkpoint)
    out = args.out or onnx_path_for(source, "int8" if args.int8 else "fp32")
    export_onnx(det, out, int8=args.int8, calibration=calib)
    how = ""
    if args.int8:
        how = f" (static int8 on {len(calib)} images)" if calib else " (dynamic int8)"
    print(f"exported {checkpoint} -> {out}{how}")
    return EXIT_OK
