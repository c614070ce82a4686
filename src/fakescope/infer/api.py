"""``fakescope.predict``: the Python API the CLI's ``predict`` command is a thin layer over."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fakescope.infer.predictor import Prediction, Predictor, VideoOptions
from fakescope.models.detector import Detector

Input = str | Path | Image.Image | np.ndarray


def _as_detector(detector: Detector | str | Path, backbone_path: str | None = None) -> Detector:
    if isinstance(detector, Detector):
        return detector
    from fakescope.models.checkpoint import load_detector

    return load_detector(detector, backbone_path=backbone_path)


def predict(
    inputs: Input | Sequence[Input],
    detector: Detector | str | Path,
    batch_size: int = 16,
    workers: int = 0,
    video: VideoOptions | None = None,
    explain_dir: str | None = None,
    device: str = "auto",
) -> list[Prediction]:
    """Score images and videos: file paths (images or videos), PIL images or uint8 arrays.

    Args:
        inputs: one input or a sequence of them; folders are expanded recursively.
        detector: a loaded detector or a checkpoint path.
        batch_size: images per model call.
        workers: decoding threads for file inputs.
        video: sampling and aggregation for videos.
        explain_dir: write a heatmap per image file here.
        device: ``auto``, ``cpu``, ``cuda``...

    Returns:
        One :class:`Prediction` per input, in input order (errors are rows, not exceptions).
    """
    from fakescope.infer.inputs import expand_inputs

    items = [inputs] if isinstance(inputs, (str, Path, Image.Image, np.ndarray)) else list(inputs)
    pred = Predictor(
        _as_detector(detector),
        batch_size=batch_size,
        workers=workers,
        device=device,
        video=video,
        explain_dir=explain_dir,
    )
    out: list[Prediction] = []
    for group in _runs(items):
        if isinstance(group[0], (str, Path)):
            out += pred.predict_paths(expand_inputs([str(p) for p in group]))
        else:
            out += pred.predict_images(group)
    return out


def _runs(items: Iterable[Any]) -> list[list[Any]]:
    """Consecutive runs of file inputs and of in-memory images, keeping input order."""
    runs: list[list[Any]] = []
    for item in items:
        is_file = isinstance(item, (str, Path))
        if runs and isinstance(runs[-1][0], (str, Path)) == is_file:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs
