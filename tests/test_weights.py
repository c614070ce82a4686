"""Backbone files for the built-ins: found, fetched (from a local stand-in for the hub), refused
when they disagree with the reference embeddings, and a clear, fast message offline."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fakescope.embed import fetch as F
from fakescope.embed import weights as W
from fakescope.embed.backbones import open_backbone
from fakescope.models.probe import backbone_file
from fakescope.utils import file_digest

from .helpers import SHARED

CLIP = SHARED / "weights" / "clip_vit_b16_openai_visual.int8.onnx"
TINY = dict(depth=2, num_heads=3, embed_dim=48, num_classes=8)


def _tiny_weights(path: Path, seed: int) -> Path:
    """A tiny ViT saved as a timm-format file: the stand-in for hub weights."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> W.Recipe:
    """A recipe whose 'hub' is a local file, and its reference embeddings (from one build)."""
    root = tmp_path_factory.mktemp("hub")
    recipe = W.Recipe(
        file="tiny_tower.int8.onnx",
        sha256="0" * 64,
        timm_name="vit_tiny_patch16_224",
        reference=str(root / "tiny.reference.npz"),
        model_kwargs=TINY,
        pretrained_file=str(_tiny_weights(root / "tiny.safetensors", seed=0)),
    )
    built = root / "built.onnx"
    F.build_clip_onnx(recipe, built)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    F.write_reference(built, images, Path(recipe.reference))
    return recipe


def test_found_in_weights_folders_then_the_cache(tmp_path: Path, monkeypatch) -> None:
    shelf, cache = tmp_path / "shelf", W.cache_dir()
    shelf.mkdir()
    cache.mkdir(parents=True)
    (cache / "enc.onnx").write_bytes(b"cache")
    assert F.ensure_file("somewhere/else/enc.onnx", None) == cache / "enc.onnx"
    (shelf / "enc.onnx").write_bytes(b"shelf")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shelf))
    assert F.ensure_file("enc.onnx", None) == shelf / "enc.onnx"  # FAKESCOPE_WEIGHTS first


def test_fetched_built_checked_and_kept(stand_in: W.Recipe, monkeypatch) -> None:
    monkeypatch.setitem(W.RECIPES, stand_in.file, stand_in)
    path = F.ensure_file(stand_in.file, stand_in.sha256)
    assert path == W.cache_dir() / stand_in.file and path.is_file()
    record = json.loads(path.with_name(path.name + ".verified.json").read_text())
    assert record["stands_for_sha256"] == stand_in.sha256 and record["min_cosine"] > 0.999
    # a detector that stored the original's sha256 accepts the verified rebuild
    assert stand_in.sha256 in W.accepted_sha256(path, file_digest(path))
    spec = {"type": "onnx", "path": stand_in.file, "sha256": stand_in.sha256, "pool": "layers"}
    bb = open_backbone(spec, path=backbone_file(spec))
    assert bb.embed(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 2 * 48)
    # the next call finds it: no second build
    assert F.ensure_file(stand_in.file, stand_in.sha256) == path


def test_a_rebuild_that_disagrees_is_refused(stand_in: W.Recipe, tmp_path: Path) -> None:
    other = dataclasses.replace(
        stand_in, pretrained_file=str(_tiny_weights(tmp_path / "other.safetensors", seed=1))
    )
    with pytest.raises(ValueError, match="disagrees with the reference embeddings"):
        F.fetch(other)
    assert not (W.cache_dir() / other.file).exists()
    assert not list(W.cache_dir().glob(".*.tmp"))
    # nor does a file of another sha256 pass for the original without a verification record
    spec = {"type": "onnx", "path": str(tmp_path / "x.onnx"), "sha256": "1" * 64}
    F.build_clip_onnx(stand_in, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="sha256"):
        open_backbone(spec)


def test_offline_message_names_the_file_sha_and_folder(monkeypatch, capsys) -> None:
    from fakescope.cli import main

    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    monkeypatch.delenv("FAKESCOPE_DETECTOR", raising=False)
    recipe = W.RECIPES["clip_vit_b16_openai_visual.int8.onnx"]
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        F.ensure_file(recipe.file, recipe.sha256)
    assert time.perf_counter() - t0 < 3
    msg = str(err.value)
    assert recipe.file in msg and recipe.sha256 in msg and str(W.cache_dir()) in msg
    img = Path(__file__).parent / "data" / "x.png"
    img = img if img.is_file() else _png(W.cache_dir().parent / "x.png")
    assert main(["predict", str(img)]) == 1
    assert recipe.sha256 in capsys.readouterr().err


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)
    return path


def test_offline_switch_and_no_network_count_as_offline(monkeypatch) -> None:
    assert not W.online()  # HF_HUB_OFFLINE=1 in every test
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not W.online(host="fakescope.invalid", timeout=0.5)


@pytest.mark.shared
def test_the_original_file_passes_its_own_reference_check() -> None:
    if not CLIP.is_file():
        pytest.skip(f"shared weights not found at {CLIP}")
    cosines = F.check_reference(CLIP, W.RECIPES[CLIP.name])
    assert len(cosines) == 8 and min(cosines) > 0.999


def test_models_lists_the_builtins_and_whether_their_files_are_here(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from fakescope.cli import main

    monkeypatch.delenv("FAKESCOPE_WEIGHTS", raising=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "builtin:clip-layers (default)" in out and "builtin:clip-baseline" in out
    assert "missing; fetched on first use when online" in out and str(W.cache_dir()) in out
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "clip_vit_b16_openai_visual.int8.onnx").write_bytes(b"x")
    monkeypatch.setenv("FAKESCOPE_WEIGHTS", str(shelf))
    assert main(["models"]) == 0
    assert f"found ({shelf}" in capsys.readouterr().out
