"""Typed run configuration: dataclass defaults, then an optional YAML file, then ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run directory.

    Attributes:
        data: a folder tree, a CSV/Parquet manifest, or a saved ``splits.csv``.
        model: a registered detector or any timm model name.
        pretrained: start from timm's hub weights (online).
        weights: a local timm-format weights file to start from (offline).
        out: the run directory.
        epochs: maximum number of epochs.
        batch_size: images per step.
        lr: peak learning rate (AdamW, cosine decay with a short warm-up).
        weight_decay: AdamW weight decay.
        img_size: input size; None keeps the model's own.
        resize_mode: ``resize`` (resize and centre-crop) or ``crop`` (crop at native resolution).
        augment: training augmentations from ``flip``, ``blur``, ``jpeg``.
        aug_prob: chance of blur and of JPEG per image.
        split: train/val/test ratios.
        splits: a saved splits file to reuse instead of making a new split.
        seed: seeds the split, the initialisation and the data order.
        patience: stop after this many epochs without a better val loss (None: never).
        workers: data-loading processes.
        device: ``auto``, ``cpu``, ``cuda``, ``mps``.
        amp: ``auto`` (bf16 where supported), ``bf16``, ``fp16``, ``off``.
        max_pixels: images above this many pixels are skipped as possible decompression bombs.
        fake_names: folder names that mean "fake" (None: defaults).
        real_names: folder names that mean "real" (None: defaults).
        input_filter: fixed filter before the network (``npr``), or None.
        calibrate: ``platt`` (fit on the validation split after training) or ``none``.
        target_fpr: pick the threshold for this false-positive rate on validation reals
            (None: 0.5 on the calibrated probability).
        family: ``finetune`` (train a timm network end to end) or ``probe`` (a logistic head on a
            frozen backbone's embeddings).
        backbone: for probes, an ``.onnx`` image encoder or a timm ``name[:weights-file]``.
        pool: for probes, which embedding: ``embed``, ``cls``, ``patch_mean``, ``cls_patch``
            (timm also ``multi``; ONNX ViTs also ``layers``, the CLS token after every block).
        probe_c: inverse L2 strength of the probe's logistic regression (None: chosen on val).
        probe_l2: L2-normalise embeddings before the probe's head instead of standardising them
            (UnivFD's set-up; the plain baseline).
        cache_dir: embedding cache directory (None: ``$FAKESCOPE_CACHE/embeddings``).
    """

    data: str = ""
    model: str = "resnet50"
    pretrained: bool = False
    weights: str | None = None
    out: str | None = None
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    img_size: int | None = None
    resize_mode: str = "resize"
    augment: list[str] = field(default_factory=lambda: ["flip"])
    aug_prob: float = 0.1
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    splits: str | None = None
    seed: int = 0
    patience: int | None = None
    workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    max_pixels: int = 120_000_000
    fake_names: list[str] | None = None
    real_names: list[str] | None = None
    input_filter: str | None = None
    calibrate: str = "platt"
    target_fpr: float | None = None
    family: str = "finetune"
    backbone: str | None = None
    pool: str = "embed"
    probe_c: float | None = None
    probe_l2: bool = False
    cache_dir: str | None = None

    def run_dir(self) -> Path:
        """The run directory: ``out`` if set, else ``runs/<model>``."""
        return Path(self.out) if self.out else Path("runs") / self.model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a clear message."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "detector" in d and "family" not in d:  # the key's name before 0.2 (runs still resume)
            d = {("family" if k == "detector" else k): v for k, v in d.items()}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(names)}")
        return cls(**d)


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
