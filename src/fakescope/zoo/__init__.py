"""Detectors that ship with fakescope, loaded as ``--detector builtin:NAME``.

Built-in probe detectors hold only a small head; their frozen backbone is an external file found by
name through ``--backbone-path`` or ``$FAKESCOPE_WEIGHTS`` (a folder holding it).
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"

#: name -> (file in this package, what it is)
BUILTINS: dict[str, tuple[str, str]] = {
    "clip-effnet-fusion": (
        "clip_effnet_fusion.safetensors",
        "the best detector we ship: mean of a fine-tuned EfficientNet-Lite0 and the clip-probe, "
        "Platt-calibrated; see docs/generalisation.md",
    ),
    "clip-probe": (
        "clip_probe.safetensors",
        "logistic probe on CLIP ViT-B/16 image embeddings (clip_vit_b16_openai_visual.int8.onnx), "
        "trained on the sd14-coco-imagenet dev split; see docs/generalisation.md",
    ),
}


def is_builtin(ref: str | Path) -> bool:
    """True for ``builtin:NAME`` references."""
    return str(ref).startswith(PREFIX)


def builtin_path(ref: str | Path) -> Path:
    """The file behind ``builtin:NAME``; a clear error lists the names when it is unknown."""
    name = str(ref)[len(PREFIX) :]
    if name not in BUILTINS:
        raise FileNotFoundError(
            f"unknown built-in detector {name!r}; choose from {sorted(BUILTINS)}"
        )
    path = Path(__file__).with_name(BUILTINS[name][0])
    if not path.is_file():
        raise FileNotFoundError(
            f"built-in detector {name!r} is missing from this installation ({path})"
        )
    return path
