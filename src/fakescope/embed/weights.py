"""Backbone files by name: where they are looked for, which ones fakescope can rebuild, and
what to say when one is missing.

A built-in probe stores only its head; its frozen encoder is a file found by name, in this order:
``--backbone-path``, the folders in ``$FAKESCOPE_WEIGHTS``, then the user cache
(:func:`cache_dir`, ``~/.cache/fakescope/weights``). When it is in none of them and a
:class:`Recipe` knows the file, :mod:`fakescope.embed.fetch` rebuilds it from the reference
weights on the Hugging Face hub (through timm's hub loading: ONNX export, then the same dynamic
int8 quantisation) and checks it against reference embeddings that ship with the package; a
rebuilt file that disagrees is refused. Offline, the error names the file, its sha256 and the
folder to put it in, within seconds.

The rebuilt file cannot be byte-identical to the original (another exporter), so its sha256
differs from the one stored in the detector; a ``<file>.verified.json`` beside it records that it
passed the reference check for that sha256, and :func:`accepted_sha256` honours it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
#: Each reference image's embedding must be at least this close (cosine) to the original's.
MIN_COSINE = 0.98


@dataclass(frozen=True)
class Recipe:
    """How to rebuild a backbone file from hub weights.

    Attributes:
        file: the file name the detectors reference.
        sha256: the sha256 of the file the built-in detectors were trained with.
        timm_name: the timm model (with its pretrained tag) whose hub weights are the source.
        reference: the ``.npz`` in ``fakescope/zoo`` with reference images and embeddings.
        model_kwargs: extra ``timm.create_model`` arguments.
        pretrained_file: a local weights file standing in for the hub (tests, mirrors).
    """

    file: str
    sha256: str
    timm_name: str
    reference: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained_file: str | None = None


RECIPES: dict[str, Recipe] = {
    "clip_vit_b16_openai_visual.int8.onnx": Recipe(
        file="clip_vit_b16_openai_visual.int8.onnx",
        sha256="2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
        timm_name="vit_base_patch16_clip_224.openai",
        reference="clip_vit_b16_openai_visual.reference.npz",
    )
}


def cache_dir() -> Path:
    """Where fetched weights go: ``$FAKESCOPE_CACHE/weights`` (default
    ``~/.cache/fakescope/weights``)."""
    from fakescope.utils import cache_dir as kind_dir

    return kind_dir("weights")


def search_dirs() -> list[Path]:
    """The folders searched for a weights file by name: ``$FAKESCOPE_WEIGHTS``, then the cache."""
    env = os.environ.get("FAKESCOPE_WEIGHTS", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p] + [cache_dir()]


def find_file(name: str) -> Path | None:
    """The first file called ``name`` in :func:`search_dirs`, or None."""
    for folder in search_dirs():
        candidate = folder / Path(name).name
        if candidate.is_file():
            return candidate
    return None


def missing_message(name: str, sha256: str | None, reason: str | None = None) -> str:
    """What to do when a backbone file is not here: the file, its sha256 and where to put it."""
    fetched = f" and could not be fetched ({reason})" if reason else ""
    return (
        f"the backbone file {Path(name).name} (sha256 {sha256 or 'unknown'}) is not on this "
        f"machine{fetched}. Put it in {cache_dir()} (or in a folder named by "
        "FAKESCOPE_WEIGHTS), or pass --backbone-path PATH"
    )


def online(host: str = HUB_HOST, timeout: float = 2.0) -> bool:
    """Whether the hub answers at all (a quick TCP connect), so offline fails in seconds.

    ``HF_HUB_OFFLINE=1`` (Hugging Face's own switch) means offline without trying.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def accepted_sha256(path: str | os.PathLike[str], file_sha256: str) -> set[str]:
    """The stored sha256 values a file may stand for: its own, plus the original it was checked
    against when it is a verified rebuild (see :func:`fetch`)."""
    ok = {file_sha256}
    record = Path(path).with_name(Path(path).name + ".verified.json")
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return ok
    if data.get("file_sha256") == file_sha256 and data.get("stands_for_sha256"):
        ok.add(str(data["stands_for_sha256"]))
    return ok
