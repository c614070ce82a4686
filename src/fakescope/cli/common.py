"""What several commands share: exit codes, and the options for the detector, videos,
``--normalise``, training and data splits, each defined once.

Nothing here imports torch, so building the parser (``fakescope --help``) stays fast.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from fakescope.config import TrainConfig
from fakescope.data.video import SAMPLING_MODES
from fakescope.infer.backends import BACKENDS, PRECISIONS, DetectorRef, as_ref
from fakescope.infer.video import AGGREGATIONS, VideoOptions

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (``fakescope ... | head``)


def csv_list(text: str) -> list[str]:
    """``"a, b"`` to ``["a", "b"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


def ratios(text: str) -> list[float]:
    """Three split ratios ``train,val,test``."""
    try:
        vals = [float(t) for t in csv_list(text)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--split wants three numbers like 0.7,0.15,0.15, got {text!r}"
        ) from e
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(
            f"--split wants three numbers (train,val,test), got {text!r}"
        )
    return vals


# ---------------------------------------------------------------------------------- detector


def add_detector_arguments(
    p: argparse.ArgumentParser, repeatable: bool = False, run_options: bool = True
) -> None:
    """The one ``--detector`` option (and how it runs), for every command that names one.

    Args:
        repeatable: several detectors are compared (``--detector A --detector B``).
        run_options: add ``--backbone-path``, ``--backend`` and ``--precision`` (commands that
            only read a detector's file, such as ``info``, need none of them).
    """
    p.add_argument(
        "--detector",
        action="append" if repeatable else "store",
        help="checkpoint (.safetensors, .onnx) or builtin:NAME"
        + ("; repeat to compare" if repeatable else "")
        + "; default $FAKESCOPE_DETECTOR, else builtin:clip-layers",
    )
    if not run_options:
        return
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


def detector_ref(args: argparse.Namespace) -> DetectorRef:
    """What :func:`add_detector_arguments` options name: ``--detector``, else
    ``$FAKESCOPE_DETECTOR``, else the default built-in detector, with its backend, precision and
    backbone path. Open it with :func:`fakescope.infer.backends.open_detector`."""
    return detector_refs(args)[0]


def detector_refs(args: argparse.Namespace) -> list[DetectorRef]:
    """Every detector a (repeatable) ``--detector`` names, with the same default rule and run
    options as :func:`detector_ref`."""
    named = args.detector
    names = (named if isinstance(named, list) else [named]) if named else [default_detector()]
    return [as_ref(n, args.backend, args.precision, args.backbone_path) for n in names]


def default_detector() -> str:
    """``$FAKESCOPE_DETECTOR``, else the default built-in detector."""
    from fakescope.zoo import DEFAULT_DETECTOR

    return os.environ.get("FAKESCOPE_DETECTOR") or DEFAULT_DETECTOR


def looks_like_detector(text: str) -> bool:
    """A checkpoint, an exported model or a built-in name (not a dataset)."""
    from fakescope.zoo import is_builtin

    return is_builtin(text) or text.lower().endswith((".safetensors", ".onnx"))


def detector_first(args: argparse.Namespace, field: str) -> None:
    """Accept the older form ``COMMAND CHECKPOINT DATA...``: a detector given as the first
    positional moves to ``--detector`` (when ``--detector`` is not given)."""
    items = getattr(args, field)
    if args.detector is None and len(items) > 1 and looks_like_detector(items[0]):
        args.detector = items[0]
        setattr(args, field, items[1:])


def out_beside(ref: DetectorRef, name: str) -> Path:
    """``name`` beside the detector's file; in the working folder for a built-in detector."""
    from fakescope.zoo import is_builtin

    if is_builtin(ref.ref):
        return Path(name)
    return Path(ref.ref).parent / name


# ------------------------------------------------------------------------------------- video


def add_run_arguments(
    p: argparse.ArgumentParser, batch_size: int = 32, threads: bool = False
) -> None:
    """``--batch-size``, ``--workers`` and ``--device``, for commands that score data."""
    p.add_argument("--batch-size", type=int, default=batch_size, help="images per model call")
    what = "decoding threads" if threads else "decoding processes"
    p.add_argument("--workers", type=int, default=2, help=what)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    """How videos are sampled and their frame scores combined (predict, serve and scan)."""
    d = VideoOptions()
    p.add_argument(
        "--sample",
        choices=SAMPLING_MODES,
        default=d.sample,
        help="video frame sampling (default uniform)",
    )
    p.add_argument(
        "--frames", type=int, default=d.frames, help="frames per video for uniform sampling"
    )
    p.add_argument(
        "--every",
        type=float,
        default=d.every_s,
        help="seconds between frames for interval sampling",
    )
    p.add_argument(
        "--max-frames",
        "--max-video-frames",
        dest="max_frames",
        type=int,
        default=d.max_frames,
        help=f"cap on frames per video (default {d.max_frames})",
    )
    p.add_argument(
        "--aggregate",
        choices=AGGREGATIONS,
        default=d.aggregate,
        help="how frame scores make a video score (default mean)",
    )
    p.add_argument("--topk", type=int, default=d.topk, help="k for --aggregate topk")


def video_options(args: argparse.Namespace, timeline_dir: str | None = None) -> VideoOptions:
    """The :class:`VideoOptions` that :func:`add_video_arguments` options describe."""
    return VideoOptions(
        sample=args.sample,
        frames=args.frames,
        every_s=args.every,
        max_frames=args.max_frames,
        aggregate=args.aggregate,
        topk=args.topk,
        timeline_dir=timeline_dir,
    )


# --------------------------------------------------------------------------------- normalise


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
    p.add_argument("--normalise-size", type=int, default=512, help="side of the normalised images")
    p.add_argument(
        "--normalise-quality",
        type=int,
        default=90,
        help="JPEG quality of the normalised images",
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


# -------------------------------------------------------------------------------------- data


def select_split(df: Any, split: str, data: str) -> Any:
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


# ---------------------------------------------------------------------------------- training


#: Flags whose value is parsed on the command line in their own way (the rest follow the field's type).
_FLAG_TYPES: dict[str, Any] = {"split": ratios}


def _default_text(key: str) -> str:
    """`` (default X)`` for a help text, unless the default is nothing or the text says it."""
    field = TrainConfig.model_fields[key]
    value = field.get_default(call_default_factory=True)
    text = field.description or ""
    if value is None or value is False or value in ("", []) or "default" in text:
        return ""
    shown = ",".join(str(v) for v in value) if isinstance(value, list) else value
    return f" (default {shown})"


def _add_train_flag(p: argparse.ArgumentParser, key: str) -> None:
    """``--KEY`` for a :class:`~fakescope.config.TrainConfig` field: its type, choices and help
    come from the field. The default stays None, so that only flags given win over the config."""
    field = TrainConfig.model_fields[key]
    kwargs: dict[str, Any] = {"help": (field.description or "") + _default_text(key)}
    kind, choices = _flag_kind(field.annotation)
    if key in _FLAG_TYPES:
        kwargs["type"] = _FLAG_TYPES[key]
    elif kind is bool:
        kwargs.update(action="store_true", default=None)
    elif kind is list:
        kwargs["type"] = csv_list
        kwargs["help"] += " (comma list)" if not choices else ""
    elif choices:
        kwargs["choices"] = choices
    elif kind in (int, float):
        kwargs["type"] = kind
    p.add_argument("--" + key.replace("_", "-"), **kwargs)


def _flag_kind(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """The flag's base type (``bool``, ``int``, ``float``, ``str`` or ``list``) and choices."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is Literal:
        return str, get_args(annotation)
    if origin is list:
        return list, _flag_kind(args[0])[1] if args else ()
    if origin is Annotated or (origin is not None and len(args) == 1):  # X | None
        return _flag_kind(args[0])
    return annotation, ()


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` options: DATA, one ``--FLAG`` per :class:`~fakescope.config.TrainConfig`
    field, ``--config``, ``--set`` and ``--force``."""
    add_normalise_arguments(p)
    p.add_argument("data", help=TrainConfig.model_fields["data"].description)
    for key in _TRAIN_KEYS:
        if key != "data":
            _add_train_flag(p, key)
        if key == "family":
            p.add_argument("--detector", type=_not_a_family, help=argparse.SUPPRESS)
    p.add_argument("--config", help="YAML file of config keys (flags given here win)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override; repeat for several (--set epochs=3 --set lr=1e-3)",
    )
    p.add_argument(
        "--force", action="store_true", help="delete an existing run in --out and start over"
    )


#: The config keys, each also a flag (``batch_size`` is ``--batch-size``).
_TRAIN_KEYS = TrainConfig.keys()


def _not_a_family(value: str) -> str:
    """``--detector`` always names a detector to score with; training chooses ``--family``."""
    raise argparse.ArgumentTypeError(
        f"--detector names a detector to score with (a checkpoint or builtin:NAME); to choose "
        f"what to train, use --family {value if value in ('finetune', 'probe') else 'finetune|probe'}"
    )


def train_config_from_args(args: argparse.Namespace) -> Any:
    """Defaults, then ``--config`` YAML, then ``--set`` overrides, then explicit flags."""
    from fakescope.config import load_yaml, merge_config, parse_overrides

    flags = {k: getattr(args, k) for k in _TRAIN_KEYS}
    yaml_layer = load_yaml(args.config) if args.config else {}
    return merge_config(TrainConfig().to_dict(), yaml_layer, parse_overrides(args.set), flags)
