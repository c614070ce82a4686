"""Typed run configuration, declared once: :class:`TrainConfig`'s fields (with their types,
defaults and descriptions) give the ``fakescope train`` options, the ``--config`` YAML and
``--set`` keys, and the ``config.json`` a run folder keeps. Layers: the defaults, then an optional
YAML file, then ``key=value`` overrides, then explicit flags; the merged mapping is checked at the
door (:meth:`TrainConfig.from_dict`), so a bad value is one clear error naming the key."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The values of the options that have a fixed set (the CLI's ``choices`` come from these).
RESIZE_MODES = ("resize", "crop")
AUGMENTATIONS = ("flip", "blur", "jpeg")
AMP_MODES = ("auto", "bf16", "fp16", "off")
INPUT_FILTERS = ("npr",)
CALIBRATIONS = ("platt", "none")
FAMILIES = ("finetune", "probe")
PROBE_POOLS = ("embed", "cls", "patch_mean", "cls_patch", "multi", "layers")

Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(ValueError):
    """A training config key that is unknown or a value of the wrong type (one line)."""


class TrainConfig(BaseModel):
    """Everything that defines a training run; saved as ``config.json`` in the run directory.

    Each field's description is also its ``fakescope train --FLAG`` help. Values are checked when
    the config is made: numbers given as text (``--set lr=1e-3``) are read as numbers, but text
    that is no number (``--set epochs=three``) is refused.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    data: str = Field("", description="folder tree, manifest (.csv/.parquet) or a saved splits.csv")
    model: str = Field("resnet50", description="timm model name or registered detector")
    pretrained: bool = Field(False, description="start from timm hub weights (online)")
    weights: str | None = Field(
        None, description="local timm-format weights file to start from (offline)"
    )
    out: str | None = Field(None, description="run directory (default runs/<model>)")
    epochs: int = Field(5, ge=1, description="training epochs")
    batch_size: int = Field(32, ge=1, description="images per step, all processes")
    lr: float = Field(3e-4, gt=0, description="peak learning rate (AdamW, cosine)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    img_size: int | None = Field(None, ge=1, description="input size (default: the model's own)")
    resize_mode: Literal[RESIZE_MODES] = Field(  # type: ignore[valid-type]
        "resize", description="resize+centre-crop, or crop at native resolution"
    )
    augment: list[Literal[AUGMENTATIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["flip"], description="training augmentations from flip,blur,jpeg"
    )
    aug_prob: Ratio = Field(0.1, description="chance of blur and of JPEG per image")
    split: list[Ratio] = Field(
        default_factory=lambda: [0.7, 0.15, 0.15],
        min_length=3,
        max_length=3,
        description="train,val,test ratios",
    )
    splits: str | None = Field(
        None, description="reuse a saved splits.csv instead of making a new split"
    )
    seed: int = Field(0, description="seed for the split, the initialisation and the data order")
    patience: int | None = Field(
        None, ge=0, description="early stop after N epochs without better val loss"
    )
    workers: int = Field(2, ge=0, description="data-loading processes")
    device: str = Field("auto", description="auto, cpu, cuda or mps")
    amp: Literal[AMP_MODES] = Field(  # type: ignore[valid-type]
        "auto", description="mixed precision (auto: bf16 where supported)"
    )
    max_pixels: int = Field(
        120_000_000, ge=1, description="skip images above this many pixels (decompression bombs)"
    )
    fake_names: list[str] | None = Field(None, description="folder names meaning fake")
    real_names: list[str] | None = Field(None, description="folder names meaning real")
    input_filter: Literal[INPUT_FILTERS] | None = Field(  # type: ignore[valid-type]
        None, description="fixed input filter (npr: neighbouring-pixel residual)"
    )
    calibrate: Literal[CALIBRATIONS] = Field(  # type: ignore[valid-type]
        "platt", description="fit Platt scaling on val, or none"
    )
    target_fpr: float | None = Field(
        None, gt=0, lt=1, description="threshold for this false-positive rate on val reals"
    )
    family: Literal[FAMILIES] = Field(  # type: ignore[valid-type]
        "finetune",
        description="what to train: finetune a timm network, or fit a probe on frozen embeddings",
    )
    backbone: str | None = Field(
        None, description="probe backbone: an .onnx image encoder or timm name[:weights]"
    )
    pool: Literal[PROBE_POOLS] = Field(  # type: ignore[valid-type]
        "embed",
        description="probe features: final embedding, CLS token, patch mean, both; multi: "
        "pooled timm layers; layers: the CLS token after every block of an ONNX ViT",
    )
    probe_c: float | None = Field(
        None, gt=0, description="probe L2 inverse strength (default: chosen on val)"
    )
    probe_l2: bool = Field(
        False,
        description="L2-normalise probe embeddings instead of standardising them (UnivFD's set-up)",
    )
    cache_dir: str | None = Field(
        None,
        description="embedding cache (default $FAKESCOPE_CACHE/embeddings, "
        "~/.cache/fakescope/embeddings)",
    )

    def run_dir(self) -> Path:
        """The run directory: ``out`` if set, else ``runs/<model>``."""
        return Path(self.out) if self.out else Path("runs") / self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the keys in declaration order)."""
        return self.model_dump()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, checked like :meth:`from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The config keys, in declaration order."""
        return tuple(cls.model_fields)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (a YAML file, ``--set`` overrides, a saved ``config.json``).

        Raises:
            ConfigError: an unknown key (the message lists the known ones), or a value of the
                wrong type (the message names the key, the value and the expected type).
        """
        if "detector" in d and "family" not in d:  # the key's name before 0.2 (runs still resume)
            d = {("family" if k == "detector" else k): v for k, v in d.items()}
        unknown = sorted(set(d) - set(cls.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown}; known keys: {sorted(cls.model_fields)}"
            )
        try:
            return cls(**d)
        except ValidationError as e:
            raise ConfigError(validation_message(e, cls)) from None


def validation_message(
    error: ValidationError, model: type[BaseModel] = TrainConfig, what: str = "config key"
) -> str:
    """One line for a :class:`ValidationError`: each bad key (``what``), its value and the type
    it wants; a check across keys gives its reason alone."""
    parts = []
    for err in error.errors(include_url=False):
        loc = err["loc"]
        reason = err["msg"].removeprefix("Value error, ")
        reason = reason[:1].lower() + reason[1:]
        if not loc:  # a check across fields
            parts.append(reason)
            continue
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        want = type_name(_annotation_at(model, loc))
        field = model.model_fields.get(str(loc[0]))
        extra = field.json_schema_extra if field is not None else None
        secret = isinstance(extra, dict) and extra.get("secret")
        value = "(hidden)" if secret else _short(err.get("input"))
        parts.append(f"{what} {key} = {value}: expected {want} ({reason})")
    return "; ".join(parts)


def _annotation_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The declared type at ``loc`` (``("augment", 1)``, ``("connections", "max_per_client")``)."""
    annotation: Any = model
    for part in loc:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return Any
            annotation = field.annotation
        elif get_origin(annotation) in (list, tuple) and isinstance(part, int):
            annotation = get_args(annotation)[0]
        else:
            break
    return annotation


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(annotation: Any) -> str:
    """A readable name for a field's type: ``int``, ``float or null``, ``list of str``, ``one of
    'platt', 'none'``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return type_name(get_args(annotation)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in get_args(annotation) if a is not type(None)]
        null = " or null" if type(None) in get_args(annotation) else ""
        return " or ".join(names) + null
    if origin in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return "list of " + (type_name(args[0]) if args else "values")
    return getattr(annotation, "__name__", str(annotation))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (an empty file gives ``{}``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of key: value")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["epochs=3", "augment=[blur,jpeg]"]`` into a dict, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def merge_config(base: dict[str, Any], *layers: dict[str, Any]) -> TrainConfig:
    """Defaults, then each layer in turn (later wins), validated into a :class:`TrainConfig`."""
    merged = dict(base)
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    return TrainConfig.from_dict(merged)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the merged config as JSON."""
    from fakescope.utils import atomic_write_text

    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2))
