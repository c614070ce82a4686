"""``fakescope.predict`` and ``fakescope.explain``: the Python API the CLI's ``predict`` command is
a thin layer over."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fakescope.infer.backends import DetectorRef, as_ref, open_detector
from fakescope.infer.explain import Explanation
from fakescope.infer.predictor import Prediction, Predictor, VideoOptions
from fakescope.models.detector import Detector
from fakescope.zoo import DEFAULT_DETECTOR

Input = str | Path | Image.Image | np.ndarray


def predict(
    inputs: Input | Sequence[Input],
    detector: Detector | DetectorRef | str | Path = DEFAULT_DETECTOR,
    batch_size: int = 16,
    workers: int = 0,
    video: VideoOptions | None = None,
    explain_dir: str | None = None,
    device: str = "auto",
    backend: str = "torch",
    precision: str = "auto",
    backbone_path: str | None = None,
) -> list[Prediction]:
    """Score images and videos: file paths (images or videos), PIL images or uint8 arrays.

    Args:
        inputs: one input or a sequence of them; folders are expanded recursively.
        detector: a loaded detector, a :class:`DetectorRef`, a checkpoint path or
            ``builtin:NAME`` (default: the built-in default detector).
        batch_size: images per model call.
        workers: decoding threads for file inputs.
        video: sampling and aggregation for videos.
        explain_dir: write a heatmap per image file here.
        device: ``auto``, ``cpu``, ``cuda``...
        backend: ``torch`` or ``onnx``, for a detector given by reference.
        precision: ``auto``, ``fp32``, ``bf16`` (torch) or ``int8`` (onnx), likewise.
        backbone_path: for probe detectors, where the frozen backbone file is now.

    Returns:
        One :class:`Prediction` per input, in input order (errors are rows, not exceptions).
    """
    from fakescope.infer.inputs import expand_inputs

    items = [inputs] if isinstance(inputs, (str, Path, Image.Image, np.ndarray)) else list(inputs)
    if not isinstance(detector, Detector):
        detector = as_ref(detector, backend, precision, backbone_path)
    pred = Predictor.open(
        detector,
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


def explain(
    image: str | Path | Image.Image | np.ndarray,
    detector: Detector | DetectorRef | str | Path = DEFAULT_DETECTOR,
    method: str = "auto",
    backend: str = "torch",
    precision: str = "auto",
    backbone_path: str | None = None,
    grid: int | None = None,
) -> Explanation:
    """A heatmap of what made one image look fake, as arrays (nothing written).

    ``method``: ``auto`` (Grad-CAM for fine-tuned networks, occlusion otherwise), ``gradcam`` or
    ``occlusion``; ``grid``: the occlusion lattice (default 4: 4x4 cells, 17 model passes).

    Returns:
        An :class:`~fakescope.infer.explain.Explanation`: ``heatmap`` (float32 ``[H, W]`` in
        ``[0, 1]`` at the model's input size), ``image_heatmap`` (the same laid on the image at its
        own size, NaN where the centre crop left it out), ``method``, ``score`` (P(fake)) and
        ``input_image`` (the image as the model saw it).
    """
    from fakescope.data.images import load_image, to_rgb
    from fakescope.infer.explain import explain_image

    if not isinstance(detector, Detector):
        detector = open_detector(as_ref(detector, backend, precision, backbone_path))
    if isinstance(image, (str, Path)):
        img = load_image(image)
    else:
        img = to_rgb(
            image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        )
    from fakescope.infer.explain import DEFAULT_GRID

    return explain_image(detector, img, method=method, grid=grid or DEFAULT_GRID)


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
