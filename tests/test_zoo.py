"""Built-in detectors: found by name, clear errors, and the shipped CLIP probe on real weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fakescope
from fakescope.models import load_detector
from fakescope.models.checkpoint import read_meta
from fakescope.zoo import BUILTINS, builtin_path


def test_builtin_files_ship_with_the_package() -> None:
    import json

    for name in BUILTINS:
        meta = read_meta(builtin_path(f"builtin:{name}"))
        assert meta["spec"]["kind"] in ("probe", "fusion")
        assert meta["spec"]["calibration"]["method"] == "platt"
        text = json.dumps(meta)
        assert "/work/" not in text and "/tmp/" not in text  # no personal absolute paths shipped


def test_unknown_builtin_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="clip-probe"):
        load_detector("builtin:nope")


def test_builtin_without_backbone_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="FAKESCOPE_WEIGHTS"):
        load_detector("builtin:clip-probe")


def test_builtin_clip_probe_on_the_shared_weights(shared_weights, monkeypatch) -> None:
    if not (shared_weights / "clip_vit_b16_openai_visual.int8.onnx").is_file():
        pytest.skip("CLIP ONNX not in the shared weights")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shared_weights))
    yy, xx = np.mgrid[0:256, 0:256]
    img = Image.fromarray(np.stack([yy, xx, (xx + yy) // 2], -1).astype(np.uint8))
    rows = fakescope.predict(img, detector="builtin:clip-probe")
    assert rows[0].model.startswith("probe:clip_vit_b16") and 0.0 <= rows[0].score <= 1.0


def test_builtin_fusion_on_the_shared_weights(shared_weights, monkeypatch) -> None:
    if not (shared_weights / "clip_vit_b16_openai_visual.int8.onnx").is_file():
        pytest.skip("CLIP ONNX not in the shared weights")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shared_weights))
    det = load_detector("builtin:clip-effnet-fusion")
    assert det.spec.kind == "fusion" and len(det.net.members) == 2
    img = Image.fromarray(np.full((64, 64, 3), 120, dtype=np.uint8))
    rows = fakescope.predict(img, detector=det)
    assert 0.0 <= rows[0].score <= 1.0
