"""``fakescope train``, ``demo``, ``fuse``, ``corpus``, ``recipe`` and ``adapt``: commands that make
detectors (and the corpus the built-ins are made from)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fakescope.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    add_detector_arguments,
    add_training_arguments,
    detector_ref,
    normalised_config,
    train_config_from_args,
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``demo``, ``fuse``, ``corpus``, ``recipe`` and ``adapt``."""
    _add_train(sub)
    _add_adapt(sub)
    _add_demo(sub)
    _add_fuse(sub)
    _add_corpus(sub)
    _add_recipe(sub)


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
    from fakescope.demo import make_demo_dataset
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


def _add_corpus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "corpus",
        help="build the development corpus (dev set, pool, video frames), normalised",
        description="Normalise the shared dev set, the multi-generator pool and frames of the "
        "video clips (short side 512, centre square, JPEG 90) into OUT, with one manifest.csv "
        "that records each image's generator or photo source, era, and whether the "
        "generalisation protocol holds it out. Give at least one source.",
    )
    p.add_argument("out", help="the corpus folder to write")
    p.add_argument("--dev", help="the sd14-coco-imagenet folder (with manifest.csv)")
    p.add_argument("--pool", help="the pool built by shared/tools/build_pool.py")
    p.add_argument("--video", help="a folder with fake/ and real/ clips of the same scenes")
    p.add_argument("--workers", type=int, default=2, help="normalising processes")
    p.set_defaults(func=cmd_corpus)


def cmd_corpus(args: argparse.Namespace) -> int:
    from fakescope.data.corpus import build_corpus

    df = build_corpus(args.out, args.dev, args.pool, args.video, workers=args.workers)
    counts = df.groupby(["era", "label"]).size()
    print(f"corpus: {len(df)} images in {args.out}")
    for (era, label), n in counts.items():
        print(f"  {era:<6} {label:<5} {n}")
    return EXIT_OK


def _add_recipe(sub: argparse._SubParsersAction) -> None:
    from fakescope.zoo import BUILTINS, TOWER_FILES  # no torch at parse time

    p = sub.add_parser(
        "recipe",
        help="build a built-in detector (or another file the package ships), as it ships",
        description="Fit a built-in detector's recipe (family, data, calibration, guard) on a "
        "corpus made by `fakescope corpus`, exactly as the shipped one was made, and write it; "
        "or make the CLIP tower's files: its int8 activation ranges (calibrated on the corpus) "
        "or its reference embeddings (from the original tower file, --backbone-path). "
        f"Recipes: {', '.join([*sorted(BUILTINS), *TOWER_FILES])}.",
    )
    p.add_argument(
        "name",
        choices=[*sorted(BUILTINS), *TOWER_FILES],
        help="the recipe (a built-in's name, or a tower file's)",
    )
    p.add_argument(
        "--corpus", help="the corpus folder (its manifest.csv); all but clip-tower-reference"
    )
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument(
        "--protocol",
        help="a built-in's measured protocol row (the JSON bench/heldout.py saves for its "
        "family), stored in the detector's metadata as its figures",
    )
    p.add_argument(
        "--backbone-path",
        help="the int8 CLIP tower file (default: found by name in FAKESCOPE_WEIGHTS or the cache)",
    )
    p.add_argument("--cache-dir", help="embedding cache (default: $FAKESCOPE_CACHE/embeddings)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.set_defaults(func=cmd_recipe)


def cmd_recipe(args: argparse.Namespace) -> int:
    from fakescope.data.corpus import read_corpus
    from fakescope.embed.cache import default_cache_dir
    from fakescope.embed.fetch import ensure_file
    from fakescope.embed.weights import RECIPES as WEIGHT_RECIPES
    from fakescope.train.families import CorpusFeatures
    from fakescope.train.recipes import RECIPES, build, calibrate_tower, tower_reference

    if not args.corpus and args.name != "clip-tower-reference":
        raise ValueError(f"recipe {args.name} needs --corpus (made by `fakescope corpus`)")
    protocol = _protocol_row(args.protocol) if args.protocol else None  # before any work
    tower = args.backbone_path or str(ensure_file(next(iter(WEIGHT_RECIPES)), None))
    if args.name == "clip-tower-reference":
        print(f"wrote {tower_reference(tower, args.out)}")
        return EXIT_OK
    corpus = read_corpus(args.corpus)
    if args.name == "clip-tower-ranges":
        print(f"wrote {calibrate_tower(corpus, tower, args.out)}")
        return EXIT_OK
    extra = {"protocol": protocol} if protocol is not None else None
    feats = CorpusFeatures(corpus, tower, args.cache_dir or default_cache_dir(), args.workers)
    path = build(RECIPES[args.name], feats, args.out, extra)
    print(f"wrote {path}")
    return EXIT_OK


def _protocol_row(path: str) -> dict:
    """The bench row ``--protocol`` names: a JSON object, or a clear error naming the file."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--protocol {path}: cannot read it ({e.strerror or e})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--protocol {path}: not a JSON file ({e})") from e
    if not isinstance(row, dict):
        raise ValueError(f"--protocol {path}: expected a JSON object (a bench/heldout.py row)")
    return row


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    from fakescope.train.adapt import DEFAULT_MARGIN, MIN_PER_CLASS

    p = sub.add_parser(
        "adapt",
        help="teach a detector a new generator from a few labelled examples",
        description="Adapt a probe detector (the built-ins, or one made with `train --family "
        "probe`) to EXAMPLES: fakes of a new generator and real images from the same setting, "
        "as class folders (as `train` reads) or a manifest. It measures itself (cross-validated "
        "AUC on the examples, and AUC on the detector's own reference rows), writes OUT only "
        "when the examples gain and what it knew loses at most --margin, and records the parent, "
        "the examples' digest and the measurements in OUT. Exit status 3: nothing written.",
    )
    p.add_argument("examples", help="folder of class folders, or a manifest (.csv, .parquet)")
    p.add_argument("--out", required=True, help="the adapted detector to write (.safetensors)")
    add_detector_arguments(p)
    p.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="the largest AUC loss on the detector's reference rows to accept",
    )
    p.add_argument("--force", action="store_true", help="write even past --margin")
    p.add_argument(
        "--min-per-class",
        type=int,
        default=MIN_PER_CLASS,
        help="fewest usable examples of each class",
    )
    p.add_argument("--json", action="store_true", help="print the full record as JSON")
    p.add_argument("--workers", type=int, default=0, help="decoding processes")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    import json

    from fakescope.train.adapt import adapt
    from fakescope.utils import is_interactive

    result = adapt(
        args.examples,
        args.out,
        detector=detector_ref(args),
        margin=args.margin,
        force=args.force,
        min_per_class=args.min_per_class,
        workers=args.workers,
        progress=is_interactive(),
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return EXIT_OK if result.written else EXIT_PARTIAL
