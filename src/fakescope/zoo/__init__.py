"""Detectors that ship with fakescope, loaded as ``--detector builtin:NAME``.

Built-in probe detectors hold only a small head (and the out-of-depth guard's bank); their frozen
backbone is an external file found by name through ``--backbone-path`` or ``$FAKESCOPE_WEIGHTS``
(a folder holding it). Each is built by its recipe (``fakescope recipe NAME``, see
:mod:`fakescope.train.recipes`) from the development corpus, and was chosen on the
generalisation protocol (:mod:`fakescope.experiments.heldout`, ``bench/heldout.py``).
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "builtin:"
#: What ``--detector`` means when it is not given (and ``$FAKESCOPE_DETECTOR`` is not set).
DEFAULT_DETECTOR = "builtin:clip-layers"

#: name -> (file in this package, what it is)
BUILTINS: dict[str, tuple[str, str]] = {
    "clip-layers": (
        "clip_layers.safetensors",
        "the default: logistic probe on the CLS token after every block of CLIP ViT-B/16, "
        "trained on Stable Diffusion 1.4 images against COCO and ImageNet photos and on "
        "generators of 2024-2026 (Nano Banana Pro, Gemini 2.5 Flash, GPT-4o, Nano Banana edits) "
        "against today's photos, with an out-of-depth guard; see docs/model-card.md",
    ),
    "clip-baseline": (
        "clip_baseline.safetensors",
        "the plain UnivFD-style baseline: logistic probe on L2-normalised CLIP ViT-B/16 image "
        "embeddings, on the same data as the default; see docs/generalisation.md",
    ),
}


#: The other files the package ships, each made by ``fakescope recipe NAME``: name -> (file in
#: this package, what it is).
TOWER_FILES: dict[str, tuple[str, str]] = {
    "clip-tower-ranges": (
        "clip_vit_b16_openai_visual.int8.ranges.json",
        "the int8 CLIP tower's fixed activation ranges, calibrated on the corpus",
    ),
    "clip-tower-reference": (
        "clip_vit_b16_openai_visual.reference.npz",
        "what the original CLIP tower makes of four small images (a rebuilt tower is checked "
        "against it)",
    ),
}


def is_builtin(ref: str | Path) -> bool:
    """True for ``builtin:NAME`` references."""
    return str(ref).startswith(PREFIX)


def display_name(ref: str | Path) -> str:
    """What people call a detector reference: ``builtin:NAME`` as it is, a file by its name."""
    return str(ref) if is_builtin(ref) else Path(str(ref)).name


def describe(ref: str | Path) -> str | None:
    """What a built-in detector is, in one clause of words (None for anything else)."""
    entry = BUILTINS.get(str(ref)[len(PREFIX) :]) if is_builtin(ref) else None
    return entry[1].split(";")[0] if entry else None


def builtin_named(ref: str | Path) -> str | None:
    """``builtin:NAME`` when ``ref``, taken as a file name, names a built-in detector
    (``clip-layers``, ``clip_layers.safetensors``...); None otherwise."""
    name = Path(str(ref)).name.lower().removesuffix(".safetensors").replace("_", "-")
    return f"{PREFIX}{name}" if name in BUILTINS else None


def detector_file(ref: str | Path) -> Path:
    """The file a detector reference names: the package's file for ``builtin:NAME``, else the
    path itself. The one place ``builtin:`` is resolved; a clear error lists the names when it is
    unknown.

    Raises:
        FileNotFoundError: an unknown built-in name, or a built-in missing from the installation.
    """
    if not is_builtin(ref):
        return Path(ref)
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
