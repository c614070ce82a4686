"""The ``fakescope`` command line: thin subcommands over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakescope.infer.predictor import VideoOptions

logger = logging.getLogger("fakescope")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ratios(text: str) -> list[float]:
    try:
        vals = [float(t) for t in _csv_list(text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--split wants three numbers like 0.7,0.15,0.15, got {text!r}"
        ) from e
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(
            f"--split wants three numbers (train,val,test), got {text!r}"
        )
    return vals


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a detector on a folder tree or manifest, then report on its test split",
        description="Train a detector. DATA is a folder tree whose folder names give the class "
        "(ai/fake/generated/... vs real/nature/...), a CSV/Parquet manifest, or a splits.csv.",
    )
    _train_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    p.add_argument("--no-report", action="store_true", help="skip the test-split report at the end")
    p.set_defaults(func=cmd_train)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from fakescope.audit.cli import add_normalise_arguments

    add_normalise_arguments(p)
    p.add_argument("data", help="folder tree, manifest (.csv/.parquet) or a saved splits.csv")
    p.add_argument("--model", help="timm model name or registered detector (default resnet50)")
    p.add_argument(
        "--pretrained",
        action="store_true",
        default=None,
        help="start from timm hub weights (online)",
    )
    p.add_argument("--weights", help="local timm-format weights file to start from (offline)")
    p.add_argument("--out", help="run directory (default runs/<model>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW, cosine)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--img-size", type=int, help="input size (default: the model's own)")
    p.add_argument(
        "--resize-mode",
        choices=["resize", "crop"],
        help="resize+centre-crop (default) or crop at native resolution",
    )
    p.add_argument(
        "--augment", type=_csv_list, help="comma list from flip,blur,jpeg (default flip)"
    )
    p.add_argument(
        "--aug-prob", type=float, help="chance of blur and of JPEG per image (default 0.1)"
    )
    p.add_argument("--split", type=_ratios, help="train,val,test ratios (default 0.7,0.15,0.15)")
    p.add_argument("--splits", help="reuse a saved splits.csv instead of making a new split")
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, help="early stop after N epochs without better val loss")
    p.add_argument("--workers", type=int, help="data-loading processes (default 2)")
    p.add_argument("--device", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument(
        "--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision (default auto)"
    )
    p.add_argument("--fake-names", type=_csv_list, help="folder names meaning fake (comma list)")
    p.add_argument("--real-names", type=_csv_list, help="folder names meaning real (comma list)")
    p.add_argument(
        "--input-filter",
        choices=["npr"],
        help="fixed input filter (npr: neighbouring-pixel residual)",
    )
    p.add_argument(
        "--calibrate", choices=["platt", "none"], help="fit Platt scaling on val (default platt)"
    )
    p.add_argument(
        "--target-fpr", type=float, help="threshold for this false-positive rate on val reals"
    )
    p.add_argument(
        "--detector",
        choices=["finetune", "probe"],
        help="finetune a timm network (default) or fit a probe on frozen embeddings",
    )
    p.add_argument(
        "--backbone", help="probe backbone: an .onnx image encoder or timm name[:weights]"
    )
    p.add_argument(
        "--pool",
        choices=["embed", "cls", "patch_mean", "cls_patch", "multi", "layers"],
        help="probe features: final embedding (default), CLS token, patch mean, both; multi: "
        "pooled timm layers; layers: the CLS token after every block of an ONNX ViT",
    )
    p.add_argument(
        "--probe-c", type=float, help="probe L2 inverse strength (default: chosen on val)"
    )
    p.add_argument(
        "--probe-l2",
        action="store_true",
        default=None,
        help="L2-normalise probe embeddings instead of standardising them (UnivFD's set-up)",
    )
    p.add_argument(
        "--cache-dir", help="embedding cache (default $FAKESCOPE_CACHE or ~/.cache/fakescope)"
    )
    p.add_argument("--config", help="YAML file of config keys (flags given here win)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides"
    )
    p.add_argument(
        "--force", action="store_true", help="delete an existing run in --out and start over"
    )


_TRAIN_KEYS = (
    "data",
    "model",
    "pretrained",
    "weights",
    "out",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "img_size",
    "resize_mode",
    "augment",
    "aug_prob",
    "split",
    "splits",
    "seed",
    "patience",
    "workers",
    "device",
    "amp",
    "fake_names",
    "real_names",
    "input_filter",
    "calibrate",
    "target_fpr",
    "detector",
    "backbone",
    "pool",
    "probe_c",
    "probe_l2",
    "cache_dir",
)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Defaults, then ``--config`` YAML, then ``--set`` overrides, then explicit flags."""
    from fakescope.config import TrainConfig, load_yaml, merge_config, parse_overrides

    flags = {k: getattr(args, k) for k in _TRAIN_KEYS}
    yaml_layer = load_yaml(args.config) if args.config else {}
    return merge_config(TrainConfig().to_dict(), yaml_layer, parse_overrides(args.set), flags)


def cmd_train(args: argparse.Namespace) -> int:
    from fakescope.audit.cli import normalised_config
    from fakescope.train.run import run

    cfg = normalised_config(args, train_config_from_args(args))
    run(cfg, resume=args.resume, force=args.force, report=not args.no_report)
    return EXIT_OK


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on one or more labelled datasets and write reports",
        description="Evaluate a checkpoint. With several datasets it prints one row per dataset "
        "(AUC, AP, accuracy, real and fake accuracy, with 95% intervals) and writes a report each.",
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by fakescope train")
    p.add_argument("data", nargs="+", help="folder trees, manifests or splits.csv files")
    p.add_argument(
        "--split",
        default="all",
        help="train, val, test or all (default all); data without a split column is used whole",
    )
    p.add_argument(
        "--out", help="report directory (default: eval-<data name> beside the checkpoint)"
    )
    p.add_argument("--backbone-path", help="for probes: where the frozen backbone file is now")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    from fakescope.audit.cli import add_normalise_arguments

    add_normalise_arguments(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fakescope.audit.cli import normalised_data
    from fakescope.eval.generalise import evaluate_many, format_table
    from fakescope.models.checkpoint import load_detector

    det = load_detector(args.checkpoint, backbone_path=args.backbone_path)
    default = f"eval-{Path(args.data[0]).stem}" if len(args.data) == 1 else "eval"
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / default
    data = [normalised_data(args, d, args.workers) for d in args.data]
    rows = evaluate_many(
        det,
        data,
        out,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        n_boot=args.n_boot,
    )
    print("\n" + format_table(rows))
    print(f"reports: {out}  (summary.csv)")
    return EXIT_OK


def _add_loso(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loso",
        help="leave-one-source-out: train on all sources but one, test on that one, for each",
        description="Leave-one-source-out. Takes the same options as train. A held-out source of "
        "one class is paired with the other class from the training sources' test rows.",
    )
    _train_arguments(p)
    p.add_argument("--sources", type=_csv_list, help="hold out only these sources (comma list)")
    p.set_defaults(func=cmd_loso)


def cmd_loso(args: argparse.Namespace) -> int:
    import dataclasses

    from fakescope.audit.cli import normalised_data
    from fakescope.eval.generalise import format_table, leave_one_source_out

    cfg = train_config_from_args(args)
    cfg = dataclasses.replace(cfg, data=normalised_data(args, cfg.data, cfg.workers))
    family = cfg.model if cfg.detector == "finetune" else "probe"
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


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="make the built-in demo data (no downloads), train, evaluate, report"
    )
    p.add_argument("--out", default="demo-run", help="where data and the run go (default demo-run)")
    p.add_argument(
        "--model", default="resnet18", help="model to train (default resnet18, from scratch)"
    )
    p.add_argument("--weights", help="optional local weights file to start from")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-per-class", type=int, default=240)
    p.add_argument("--size", type=int, default=96, help="image size of the demo crops")
    p.add_argument("--workers", type=int, default=2)
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
        help="output format (default: table on a terminal, else jsonl)",
    )
    p.add_argument("--output", "-o", help="write rows to this file instead of stdout")
    p.add_argument(
        "--resume", action="store_true", help="skip inputs already in --output and append"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    p.add_argument("--device", default="auto")
    add_video_arguments(p)
    p.add_argument("--timeline", metavar="DIR", help="write a score-over-time plot per video here")
    p.add_argument("--explain", metavar="DIR", help="write a heatmap overlay per image here")
    p.set_defaults(func=cmd_predict)


def add_detector_arguments(p: argparse.ArgumentParser) -> None:
    """Which detector and how it runs, shared by ``predict``, ``serve`` and ``scan``."""
    from fakescope.infer.backends import BACKENDS, PRECISIONS

    p.add_argument(
        "--detector",
        help="checkpoint (.safetensors, .onnx) or builtin:NAME; default $FAKESCOPE_DETECTOR, "
        "else builtin:clip-layers",
    )
    p.add_argument(
        "--backbone-path", help="for probe detectors: where the frozen backbone file is now"
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch, or onnxruntime (exported on first use and cached, beside the checkpoint "
        "or under ~/.cache/fakescope/onnx)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast where the CPU supports it (torch), fp32 (onnx); int8 needs "
        "--backend onnx and calibration images (see fakescope export)",
    )


def detector_ref(args: argparse.Namespace) -> str:
    """``--detector``, else ``$FAKESCOPE_DETECTOR``, else the default built-in detector."""
    import os

    from fakescope.zoo import DEFAULT_DETECTOR

    return args.detector or os.environ.get("FAKESCOPE_DETECTOR") or DEFAULT_DETECTOR


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """How videos are sampled and their frame scores combined (``predict`` and ``scan``)."""
    p.add_argument(
        "--sample",
        choices=["uniform", "interval", "keyframes"],
        default="uniform",
        help="video frame sampling (default uniform)",
    )
    p.add_argument("--frames", type=int, default=16, help="frames per video for uniform sampling")
    p.add_argument(
        "--every", type=float, default=1.0, help="seconds between frames for interval sampling"
    )
    p.add_argument("--max-frames", type=int, default=64, help="cap on frames per video")
    p.add_argument(
        "--aggregate",
        choices=["mean", "median", "topk", "max"],
        default="mean",
        help="how frame scores make a video score (default mean)",
    )
    p.add_argument("--topk", type=int, default=3, help="k for --aggregate topk")


def video_options(args: argparse.Namespace, timeline_dir: str | None = None) -> VideoOptions:
    """The :class:`VideoOptions` that :func:`add_video_arguments` options describe."""
    from fakescope.infer.predictor import VideoOptions

    return VideoOptions(
        sample=args.sample,
        frames=args.frames,
        every_s=args.every,
        max_frames=args.max_frames,
        aggregate=args.aggregate,
        topk=args.topk,
        timeline_dir=timeline_dir,
    )


def cmd_predict(args: argparse.Namespace) -> int:

    from fakescope.infer.backends import load_for_inference
    from fakescope.infer.inputs import expand_inputs
    from fakescope.infer.output import RowWriter, completed_paths
    from fakescope.infer.predictor import Predictor
    from fakescope.utils import is_interactive

    ckpt = detector_ref(args)
    fmt = args.format or ("table" if sys.stdout.isatty() and not args.output else "jsonl")
    if args.resume and not args.output:
        raise ValueError("--resume needs --output FILE (the file to continue)")
    done = completed_paths(args.output, fmt) if args.resume else set()
    video = video_options(args, timeline_dir=args.timeline)
    det, amp = load_for_inference(ckpt, args.backend, args.precision, args.backbone_path)
    pred = Predictor(
        det,
        amp=amp,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        video=video,
        explain_dir=args.explain,
    )
    paths = (p for p in expand_inputs(args.inputs) if p not in done)
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


def _add_protocol(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "protocol",
        help="score detectors on the selection protocol: sets that image content cannot win",
        description="Score detectors on the selection protocol: frames of AI and real videos of "
        "the same scenes, photographic fakes against photos only, and two shortcut controls "
        "(real photos against painterly or squashed copies of themselves). Prints AUC per set "
        "with 95% intervals that resample clips, prompts or photo pairs, the mean over the test "
        "sets, and a penalty when a control's AUC strays more than 0.1 from 0.5. Build the sets "
        "once with --video and/or --pool.",
    )
    p.add_argument("sets", help="the protocol folder (its manifest.csv); written when building")
    p.add_argument(
        "--detector",
        action="append",
        help="a checkpoint or builtin:NAME; repeat to compare (default: the default built-in)",
    )
    p.add_argument("--video", help="build: a folder with fake/ and real/ clips of the same scenes")
    p.add_argument("--pool", help="build: the multi-generator pool (shared/tools/build_pool.py)")
    p.add_argument("--backbone-path", help="for probe detectors: where the backbone file is now")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_protocol)


def cmd_protocol(args: argparse.Namespace) -> int:
    from fakescope.eval import protocol as proto
    from fakescope.models.checkpoint import load_detector
    from fakescope.zoo import DEFAULT_DETECTOR

    if args.video or args.pool:
        from fakescope.data.protocol_sets import build_protocol_sets

        df = build_protocol_sets(args.sets, args.video, args.pool)
        print(f"built {len(df)} images in {args.sets}", file=sys.stderr)
    manifest = proto.read_protocol_manifest(args.sets)
    table, notes = {}, []
    for ref in args.detector or [DEFAULT_DETECTOR]:
        det = load_detector(ref, backbone_path=args.backbone_path)
        scores = proto.detector_scores(det, manifest, workers=args.workers)
        table[ref] = proto.score_manifest(manifest, scores, n_boot=args.n_boot)
        notes += proto.seen_set_notes(ref, det.meta)
    print(proto.format_table(table))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        from fakescope.utils import atomic_write_text

        doc = {
            ref: {"sets": [r.to_dict() for r in rows], **proto.summarise(rows)}
            for ref, rows in table.items()
        }
        atomic_write_text(args.json, json.dumps(doc, indent=2))
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (fp32 or int8) for fast CPU inference"
    )
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=["onnx"], default="onnx")
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
        paths = [p for p in expand_inputs([source]) if Path(p).suffix.lower() not in VIDEO_EXTENSIONS]
    return sample_paths(paths, n)


def cmd_export(args: argparse.Namespace) -> int:
    from fakescope.infer.backends import onnx_path_for
    from fakescope.models.checkpoint import load_detector
    from fakescope.models.onnx_export import calibration_images, export_onnx

    det = load_detector(args.checkpoint)
    calib = None
    if args.int8 and args.calibration:
        calib = _calibration_paths(args.calibration, args.calibration_count)
        if not calib:
            raise ValueError(f"{args.calibration}: no images found for int8 calibration")
    elif args.int8 and not args.dynamic:
        calib = calibration_images(det, n=args.calibration_count)
        if not calib:
            raise ValueError(
                f"{args.checkpoint}: static int8 needs calibration images and the training "
                "images of its run are not on disk: pass --calibration DATA (or --dynamic)"
            )
    if args.dynamic and (not args.int8 or args.calibration):
        raise ValueError("--dynamic goes with --int8 and without --calibration")
    out = args.out or onnx_path_for(args.checkpoint, "int8" if args.int8 else "fp32")
    export_onnx(det, out, int8=args.int8, calibration=calib)
    how = ""
    if args.int8:
        how = f" (static int8 on {len(calib)} images)" if calib else " (dynamic int8)"
    print(f"exported {args.checkpoint} -> {out}{how}")
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
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_fuse)


def cmd_fuse(args: argparse.Namespace) -> int:
    from fakescope.data.manifest import build_manifest
    from fakescope.models.checkpoint import load_detector, save_checkpoint
    from fakescope.models.fusion import fuse

    if len(args.checkpoints) < 2:
        raise ValueError("fuse needs at least two checkpoints")
    members = [load_detector(c) for c in args.checkpoints]
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


def _add_misc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild report.html from a report directory's saved files")
    p.add_argument("dir", help="a directory holding metrics.json and predictions.csv")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("models", help="list model names")
    p.add_argument("pattern", nargs="?", help="glob filter, e.g. 'vit_*'")
    p.add_argument("--all", action="store_true", help="include every timm model name")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("info", help="print a checkpoint's metadata as JSON")
    p.add_argument("checkpoint")
    p.set_defaults(func=cmd_info)


def cmd_report(args: argparse.Namespace) -> int:
    from fakescope.eval.report import rebuild_report

    print(f"report: {rebuild_report(args.dir)}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from fakescope.models.registry import list_models

    print("\n".join(list_models(args.pattern, include_timm=args.all)))
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from fakescope.models.checkpoint import read_meta

    print(json.dumps(read_meta(args.checkpoint), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from fakescope.version import __version__

    parser = argparse.ArgumentParser(
        prog="fakescope", description="Tell AI-generated images from real ones."
    )
    parser.add_argument("--version", action="version", version=f"fakescope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    _add_fuse(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_loso(sub)
    _add_protocol(sub)
    _add_misc(sub)
    from fakescope.serve.cli import add_serve_parser

    add_serve_parser(sub)
    from fakescope.audit.cli import add_audit_parsers

    add_audit_parsers(sub)
    from fakescope.scan.cli import add_scan_parser

    add_scan_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand, turn known errors into one clear line."""
    from fakescope.data.manifest import DataError
    from fakescope.models.checkpoint import CheckpointError
    from fakescope.models.registry import WeightsError
    from fakescope.utils import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        return args.func(args)
    except (
        DataError,
        WeightsError,
        CheckpointError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as e:
        print(f"fakescope: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "fakescope: interrupted; completed epochs are saved, continue with --resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
