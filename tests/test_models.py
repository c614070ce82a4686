"""Detector registry, the one-logit interface, preprocessing and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from fakescope.models import (
    CheckpointError,
    Detector,
    WeightsError,
    create_detector,
    list_models,
    load_detector,
    register_detector,
    save_checkpoint,
)
from fakescope.models.header import read_meta
from fakescope.models.registry import RECOMMENDED

from .helpers import TINY_MODEL


@pytest.mark.parametrize("name", [*RECOMMENDED, TINY_MODEL, "test_vit"])
def test_models_give_one_logit_and_gradients(name: str) -> None:
    det = create_detector(name)
    size = det.spec.preprocessing.size
    x = torch.randn(2, 3, size, size, requires_grad=True)
    logits = det(x)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    probs = det.predict_proba(x.detach())
    assert probs.shape == (2,) and ((probs >= 0) & (probs <= 1)).all()
    head = [p for n, p in det.net.named_parameters() if p.ndim == 2][-1]
    assert head.shape[0] == 1  # a single-logit head


def test_preprocessing_comes_from_timm() -> None:
    det = create_detector("tf_efficientnet_lite0")
    pre = det.spec.preprocessing
    assert pre.size == 224 and pre.mean == (0.5, 0.5, 0.5) and pre.interpolation == "bicubic"
    assert create_detector("mobilenetv2_100").spec.preprocessing.mean == (0.485, 0.456, 0.406)


def test_vit_takes_img_size() -> None:
    det = create_detector("test_vit", img_size=64)
    assert det.spec.preprocessing.size == 64
    assert det(torch.randn(1, 3, 64, 64)).shape == (1,)


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ValueError, match="Did you mean"):
        create_detector("resnet5O")


def test_registering_twice_is_an_error() -> None:
    register_detector("my_tiny_test_detector")(lambda **kw: create_detector(TINY_MODEL))
    with pytest.raises(ValueError, match="already registered"):
        register_detector("my_tiny_test_detector")(lambda **kw: None)
    assert "my_tiny_test_detector" in list_models()
    assert isinstance(create_detector("my_tiny_test_detector"), Detector)


def test_missing_weights_file_is_clear(tmp_path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        create_detector("resnet18", weights=tmp_path / "nope.safetensors")


def test_wrong_weights_file_is_clear(tmp_path) -> None:
    det = create_detector(TINY_MODEL)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in det.net.state_dict().items()}, tmp_path / "w.safetensors"
    )
    with pytest.raises(WeightsError, match="does not fit"):
        create_detector("resnet18", weights=tmp_path / "w.safetensors")


def test_offline_pretrained_is_a_clear_error(monkeypatch) -> None:
    import timm

    def fail(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(timm, "create_model", fail)
    with pytest.raises(WeightsError, match="--weights FILE"):
        create_detector("resnet18", pretrained=True)


def test_local_weights_load(shared_weights) -> None:
    from safetensors.torch import load_file

    path = shared_weights / "tf_efficientnet_lite0.in1k.safetensors"
    det = create_detector("tf_efficientnet_lite0", weights=path)
    ref = load_file(path)
    key = "conv_stem.weight"
    assert torch.equal(det.net.state_dict()[key], ref[key])


def test_checkpoint_round_trip(tmp_path) -> None:
    det = create_detector(TINY_MODEL, img_size=48).eval()
    det.spec.threshold = 0.42
    det.spec.calibration = {"method": "platt", "a": 1.5, "b": -0.2}
    path = save_checkpoint(
        tmp_path / "m.safetensors", det, config={"model": TINY_MODEL}, history=[{"epoch": 1}]
    )
    back = load_detector(path)
    x = torch.randn(3, 3, 48, 48)
    torch.testing.assert_close(back(x), det(x))
    torch.testing.assert_close(back.predict_proba(x), det.predict_proba(x))
    assert back.spec == det.spec
    assert back.meta["config"] == {"model": TINY_MODEL} and back.meta["fakescope_version"]
    assert json.loads((tmp_path / "m.json").read_text())["spec"]["threshold"] == 0.42
    assert read_meta(path)["history"] == [{"epoch": 1}]


def test_loading_garbage_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_detector(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_detector(tmp_path / "missing.safetensors")


def test_checkpoint_holds_no_pickle(tmp_path) -> None:
    det = create_detector(TINY_MODEL)
    path = save_checkpoint(tmp_path / "m.safetensors", det)
    # safetensors: 8-byte header length, then a JSON header; no pickle opcodes anywhere in the header.
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert "__metadata__" in header and "fakescope" in header["__metadata__"]


def test_verdict_band() -> None:
    det = create_detector(TINY_MODEL)
    det.spec.threshold, det.spec.uncertain_band = 0.5, 0.1
    assert (
        det.verdict(0.9) == "fake"
        and det.verdict(0.1) == "real"
        and det.verdict(0.55) == "uncertain"
    )


def test_npr_filter_removes_content_and_keeps_upsampling_traces() -> None:
    from fakescope.models.torch_detector import NPR

    smooth = torch.ones(1, 3, 8, 8) * 0.7  # flat content: residual is zero
    assert torch.count_nonzero(NPR()(smooth)) == 0
    up = torch.nn.functional.interpolate(torch.randn(1, 3, 4, 4), scale_factor=2.0, mode="nearest")
    assert torch.count_nonzero(NPR()(up)) == 0  # nearest-upsampled: no residual at all
    noise = torch.randn(1, 3, 9, 9)
    assert NPR()(noise).shape == (1, 3, 8, 8) and NPR()(noise).abs().sum() > 0


def test_npr_detector_round_trip(tmp_path) -> None:
    det = create_detector(TINY_MODEL, img_size=32)
    det.spec.input_filter = "npr"
    from fakescope.models.torch_detector import make_input_filter

    det.input_filter = make_input_filter("npr")
    back = load_detector(save_checkpoint(tmp_path / "n.safetensors", det.eval()))
    assert back.spec.input_filter == "npr"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(back(x), det(x))


def test_one_verdict_rule_for_score_guard_and_declared_origin() -> None:
    from types import SimpleNamespace

    from fakescope.models.detector import DECLARED, Detector, DetectorSpec
    from fakescope.models.novelty import REASON

    net = SimpleNamespace(novelty=SimpleNamespace(threshold=0.3))
    det = Detector(net, DetectorSpec(kind="probe", arch="x", threshold=0.5, uncertain_band=0.1))
    assert det.decide(None) == ("error", None)
    assert det.decide(None, declared=True) == ("error", None)  # nothing scored, nothing declared
    assert det.decide(0.9, 0.1) == ("fake", None)
    assert det.decide(0.1, 0.1) == ("real", None)
    assert det.decide(0.55, 0.1) == ("uncertain", None)  # inside the band
    assert det.decide(0.9, 0.8) == ("uncertain", REASON)  # unlike the training data
    assert det.decide(0.1, 0.8, declared=True)[0] == DECLARED  # the metadata wins
    assert det.decide(float("nan")) == ("uncertain", None)
