"""Detectors by name: a small registry on top of timm's own ``create_model``."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakescope.models.detector import Detector, DetectorSpec

if TYPE_CHECKING:  # torch comes with the train extra; probes on ONNX towers need none of it
    import torch

logger = logging.getLogger(__name__)

Factory = Callable[..., Detector]
_REGISTRY: dict[str, Factory] = {}

#: The models the docs and tests name; any other timm name works too.
RECOMMENDED = ("resnet50", "vit_base_patch16_224", "tf_efficientnet_lite0", "mobilenetv2_100")


class WeightsError(RuntimeError):
    """Pretrained weights were asked for and could not be had."""


def register_detector(name: str) -> Callable[[Factory], Factory]:
    """Register a detector factory under ``name``; registering a name twice is an error."""

    def deco(fn: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"detector {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models(pattern: str | None = None, include_timm: bool = False) -> list[str]:
    """Registered and recommended names, plus every timm name if ``include_timm``."""
    import timm  # on first use: probes on ONNX towers need none of it

    names = sorted(set(_REGISTRY) | set(RECOMMENDED))
    if include_timm:
        names = sorted(set(names) | set(timm.list_models()))
    if pattern:
        import fnmatch

        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def create_detector(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> Detector:
    """Build a detector by name.

    Args:
        name: a registered detector name or any timm model name.
        pretrained: start from timm's hub weights (needs network access).
        weights: a local timm-format state dict (safetensors or .pth) to start from, for offline use.
        img_size: input size; defaults to the model's own.
        **kwargs: passed to the factory (for timm: to ``timm.create_model``).
    """

    if name in _REGISTRY:
        return _REGISTRY[name](pretrained=pretrained, weights=weights, img_size=img_size, **kwargs)
    return create_timm_detector(
        name, pretrained=pretrained, weights=weights, img_size=img_size, **kwargs
    )


def _check_timm_name(name: str) -> None:
    import timm  # on first use: probes on ONNX towers need none of it

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}: not a registered detector nor a timm model.{hint}")


def _timm_kwargs(name: str, img_size: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    from fakescope.models.validate import TIMM_KWARGS

    extra = sorted(set(kwargs) - TIMM_KWARGS)
    if extra:  # a checkpoint may pass only these back to timm, so nothing else is ever stored
        raise ValueError(
            f"model arguments {extra} are not supported for timm detectors "
            f"(allowed: {sorted(TIMM_KWARGS)}; see fakescope.models.validate)"
        )
    out = dict(kwargs)
    # Transformers fix their input size at build time; CNNs take any size and reject the argument.
    if img_size and any(k in name for k in ("vit", "deit", "swin", "beit", "eva", "cait", "xcit")):
        out["img_size"] = img_size
    return out


def build_timm_net(
    name: str,
    model_kwargs: dict[str, Any],
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> torch.nn.Module:
    """:func:`~fakescope.embed.timm_backbone.create_timm` with one logit, turning weight failures
    into :class:`WeightsError`."""
    from fakescope.embed.timm_backbone import create_timm  # timm on first use

    if weights is not None and not Path(weights).is_file():
        raise WeightsError(f"weights file not found: {weights}")
    try:
        return create_timm(name, weights, pretrained, num_classes=1, **model_kwargs)
    except (RuntimeError, KeyError, ValueError) as e:
        if weights is not None:
            raise WeightsError(
                f"weights file {weights} does not fit model {name!r}: {str(e)[:500]}"
            ) from e
        raise
    except Exception as e:  # hub and network failures come in many types
        if pretrained and weights is None:
            raise WeightsError(
                f"could not download pretrained weights for {name!r} ({type(e).__name__}: "
                f"{str(e)[:200]}). If this machine is offline, pass --weights FILE with a "
                "timm-format state dict (safetensors), or drop --pretrained to train from scratch."
            ) from e
        raise


def count_timm_elements(name: str, model_kwargs: Any, num_classes: int = 1) -> int:
    """Parameters plus buffers of a timm network, built on the ``meta`` device (no memory).

    Raises:
        ValueError: an unknown model name.
        Exception: whatever timm raises for arguments the architecture does not take.
    """
    import timm  # on first use: probes on ONNX towers need none of it
    import torch

    _check_timm_name(name)
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_kwargs)
    return sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())


def create_timm_detector(
    name: str,
    pretrained: bool = False,
    weights: str | Path | None = None,
    img_size: int | None = None,
    **kwargs: Any,
) -> Detector:
    """A timm network with a one-logit head, wrapped as a :class:`Detector`."""
    from fakescope.embed.timm_backbone import timm_preprocessing
    from fakescope.models.torch_detector import TorchDetector

    _check_timm_name(name)
    model_kwargs = _timm_kwargs(name, img_size, kwargs)
    net = build_timm_net(name, model_kwargs, pretrained=pretrained, weights=weights)
    spec = DetectorSpec(
        kind="timm",
        arch=name,
        model_kwargs=model_kwargs,
        preprocessing=timm_preprocessing(net, img_size),
    )
    return TorchDetector(net, spec)


def build_from_spec(spec: DetectorSpec, backbone_path: str | None = None) -> Detector:
    """Rebuild an untrained detector of the right shape from its spec (no downloads).

    Args:
        spec: the stored spec.
        backbone_path: for probe detectors, where the frozen backbone file is now, if it moved.
    """
    if spec.kind == "timm":
        _check_timm_name(spec.arch)
        from fakescope.models.torch_detector import TorchDetector

        net = build_timm_net(spec.arch, spec.model_kwargs, pretrained=False)
        return TorchDetector(net, spec)
    if spec.kind == "probe":
        from fakescope.models.probe import build_probe_from_spec

        return build_probe_from_spec(spec, backbone_path)
    if spec.kind == "fusion":
        from fakescope.models.fusion import build_fusion_from_spec

        return build_fusion_from_spec(spec, lambda s: build_from_spec(s, backbone_path))
    raise ValueError(f"unknown detector kind {spec.kind!r}")
