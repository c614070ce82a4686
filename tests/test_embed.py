"""Frozen backbones (a tiny ONNX encoder built here, tiny timm models) and the embedding cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.embed.backbones import OnnxBackbone, open_backbone, open_backbone_arg
from fakescope.embed.base import Backbone
from fakescope.embed.cache import EmbeddingCache, default_cache_dir, embed_frame
from fakescope.embed.timm_backbone import TimmBackbone
from fakescope.models.detector import Preprocessing
from fakescope.utils import file_digest

from .helpers import W, build_tiny_encoder, build_tiny_vit

CLIP_ONNX = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "weights"
    / "clip_vit_b16_openai_visual.int8.onnx"
)
TINY_PRE = Preprocessing(
    size=32, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0
)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def reference(x: np.ndarray, pool: str) -> np.ndarray:
    """What the tiny encoder should give, computed with numpy."""
    tokens = x.reshape(x.shape[0], 3, -1).transpose(0, 2, 1)
    cls, patch_mean = tokens[:, 0], tokens[:, 1:].mean(axis=1)
    return {
        "embed": x.mean(axis=(2, 3)) @ W,
        "cls": cls,
        "patch_mean": patch_mean,
        "cls_patch": np.concatenate([cls, patch_mean], axis=1),
    }[pool]


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return build_tiny_encoder(tmp_path / "models" / "tiny.onnx")


def batch(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


class Spy(Backbone):
    """Wraps a backbone, counting embed calls; optionally raises from call ``fail_on_call`` on."""

    def __init__(self, inner: Backbone, fail_on_call: int | None = None) -> None:
        self.inner = inner
        self.preprocessing = inner.preprocessing
        self.batch_size = inner.batch_size
        self.pool = inner.pool
        self.calls = 0
        self.images = 0
        self.fail_on_call = fail_on_call

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("simulated kill")
        self.images += len(x)
        return self.inner.embed(x)

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()


def tiny(path: Path, pool: str = "embed", batch_size: int = 2) -> OnnxBackbone:
    return OnnxBackbone(path, pool=pool, preprocessing=TINY_PRE, batch_size=batch_size, threads=1)


# --------------------------------------------------------------------------------------------
# ONNX backbone
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "dim"), [("embed", 4), ("cls", 3), ("patch_mean", 3), ("cls_patch", 6)]
)
def test_onnx_pools_match_numpy(tiny_onnx: Path, pool: str, dim: int) -> None:
    bb = tiny(tiny_onnx, pool)
    x = batch(3)
    out = bb.embed(x)
    assert out.shape == (3, dim) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(x, pool), rtol=1e-5, atol=1e-5)
    if pool != "embed":
        assert bb.hidden_output == "hidden_states"  # picked automatically: the one 3-D output
        assert bb.spec()["outputs"] == ["hidden_states"]


def test_onnx_splits_batches_into_chunks(tiny_onnx: Path) -> None:
    bb = tiny(tiny_onnx, "cls_patch", batch_size=2)
    seen: list[int] = []
    session = bb._session

    class Counting:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
            seen.append(next(iter(feeds.values())).shape[0])
            return session.run(names, feeds)

    bb._session = Counting()
    x = batch(5, seed=1)
    together = bb.embed(x)
    assert seen == [2, 2, 1]
    one_by_one = np.concatenate([bb.embed(x[i : i + 1]) for i in range(5)])
    np.testing.assert_array_equal(together, one_by_one)


def test_onnx_rejects_bad_input_shape(tiny_onnx: Path) -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny(tiny_onnx).embed(np.zeros((2, 32, 32), dtype=np.float32))


def test_onnx_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        OnnxBackbone(tmp_path / "nothere.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ValueError, match="junk.onnx.*not a loadable ONNX model"):
        OnnxBackbone(junk)


def test_onnx_missing_outputs_are_clear(tmp_path: Path) -> None:
    with_hidden = build_tiny_encoder(tmp_path / "a.onnx")
    with pytest.raises(ValueError, match=r"a.onnx has no output 'nope'.*image_embeds"):
        OnnxBackbone(with_hidden, embed_output="nope", preprocessing=TINY_PRE)
    with pytest.raises(ValueError, match="no output 'missing'"):
        OnnxBackbone(with_hidden, pool="cls", hidden_output="missing", preprocessing=TINY_PRE)
    no_hidden = build_tiny_encoder(tmp_path / "b.onnx", with_hidden=False)
    with pytest.raises(ValueError, match="b.onnx has no 3-D hidden-state output"):
        OnnxBackbone(no_hidden, pool="cls", preprocessing=TINY_PRE)
    # The embed pool needs only image_embeds, so the same file works for it.
    assert OnnxBackbone(no_hidden, preprocessing=TINY_PRE).embed(batch(1)).shape == (1, 4)
    with pytest.raises(ValueError, match="unknown pool 'multi'"):
        OnnxBackbone(with_hidden, pool="multi")


@pytest.mark.parametrize("pool", ["embed", "cls_patch"])
def test_spec_round_trip_gives_identical_embeddings(tiny_onnx: Path, pool: str) -> None:
    bb = tiny(tiny_onnx, pool, batch_size=3)
    spec = json.loads(json.dumps(bb.spec()))
    assert spec["sha256"] == file_digest(tiny_onnx)
    again = open_backbone(spec)
    assert isinstance(again, OnnxBackbone)
    assert again.preprocessing == TINY_PRE and again.batch_size == 3
    assert again.cache_id == bb.cache_id
    x = batch(4, seed=2)
    np.testing.assert_array_equal(again.embed(x), bb.embed(x))


def test_cache_id_follows_content_not_location(tiny_onnx: Path, tmp_path: Path) -> None:
    bb = tiny(tiny_onnx)
    spec = bb.spec()
    moved = tmp_path / "elsewhere" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.move(str(tiny_onnx), moved)
    assert tiny(moved).cache_id == bb.cache_id
    assert tiny(moved, batch_size=1).cache_id == bb.cache_id  # speed knobs do not count
    assert tiny(moved, "cls").cache_id != bb.cache_id
    assert tiny(moved, "patch_mean").cache_id != tiny(moved, "cls").cache_id
    other_pre = OnnxBackbone(moved, preprocessing=Preprocessing(size=32, crop_pct=1.0))
    assert other_pre.cache_id != bb.cache_id
    # Reopening from the old spec says which file is needed and how to point at it ...
    with pytest.raises(
        FileNotFoundError, match=rf"tiny.onnx.*{spec['sha256']}.*--backbone-path PATH"
    ):
        open_backbone(spec)
    # ... and works once told where the file now is.
    assert open_backbone(spec, path=moved).cache_id == bb.cache_id
    different = build_tiny_encoder(tmp_path / "different.onnx", with_hidden=False)
    with pytest.raises(ValueError, match="sha256"):
        open_backbone(spec, path=different)


def test_open_backbone_arg(tiny_onnx: Path, tmp_path: Path) -> None:
    bb = open_backbone_arg(str(tiny_onnx), pool="cls")
    assert isinstance(bb, OnnxBackbone) and bb.pool == "cls"
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        open_backbone_arg(f"test_vit:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ValueError, match="unknown timm model"):
        open_backbone_arg("no_such_model_xyz:/w.safetensors")
    with pytest.raises(ValueError, match="unknown backbone type"):
        open_backbone({"type": "keras"})


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def test_cache_store_reopen_and_chunked_lookup(tmp_path: Path) -> None:
    vecs = {f"k{i}": np.full(3, i, dtype=np.float64) for i in range(1200)}
    with EmbeddingCache(tmp_path, "abc123") as cache:
        cache.put_many(vecs)
        assert len(cache) == 1200 and "k5" in cache and "nope" not in cache
    assert (tmp_path / "abc123.sqlite").is_file()
    with EmbeddingCache(tmp_path, "abc123") as cache:
        got = cache.get_many([*vecs, "missing", "k1"])
    assert len(got) == 1200
    assert got["k1199"].dtype == np.float32
    np.testing.assert_array_equal(got["k1199"], [1199, 1199, 1199])
    with pytest.raises(ValueError, match="plain file name"):
        EmbeddingCache(tmp_path, "../escape")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "embeddings"
    monkeypatch.delenv("FAKESCOPE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fakescope" / "embeddings"


def frame(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame(
        {"path": [str(p) for p in paths], "label": [i % 2 for i in range(len(paths))]}
    )


def test_embed_frame_miss_then_hit(tiny_onnx: Path, tmp_path: Path) -> None:
    df = frame(write_images(tmp_path / "imgs", 5))
    spy = Spy(tiny(tiny_onnx, "cls_patch"))
    with EmbeddingCache(tmp_path / "cache", spy.cache_id) as cache:
        first, failures = embed_frame(spy, df, cache)
        assert failures == [] and first.shape == (5, 6) and first.dtype == np.float32
        assert spy.calls == 3 and spy.images == 5 and len(cache) == 5
        spy.calls = spy.images = 0
        second, _ = embed_frame(spy, df, cache)
    assert spy.calls == 0
    np.testing.assert_array_equal(first, second)
    uncached, _ = embed_frame(spy, df)
    np.testing.assert_array_equal(uncached, first)
    # Row order follows the frame, and a moved file is still a hit.
    moved = tmp_path / "moved.png"
    shutil.copy(df["path"][0], moved)
    spy.calls = 0
    with EmbeddingCache(tmp_path / "cache", spy.cache_id) as cache:
        rev, _ = embed_frame(spy, frame([moved, *map(Path, df["path"][::-1])]), cache)
    assert spy.calls == 0
    np.testing.assert_array_equal(rev[0], first[0])
    np.testing.assert_array_equal(rev[1:], first[::-1])


def test_embed_frame_changed_file_is_a_miss(tiny_onnx: Path, tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 4)
    spy = Spy(tiny(tiny_onnx))
    with EmbeddingCache(tmp_path / "cache", spy.cache_id) as cache:
        before, _ = embed_frame(spy, frame(paths), cache)
        Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(paths[2])
        spy.calls = spy.images = 0
        after, _ = embed_frame(spy, frame(paths), cache)
    assert spy.calls == 1 and spy.images == 1
    np.testing.assert_array_equal(after[[0, 1, 3]], before[[0, 1, 3]])
    assert not np.allclose(after[2], before[2])


def test_embed_frame_resumes_after_interruption(tiny_onnx: Path, tmp_path: Path) -> None:
    df = frame(write_images(tmp_path / "imgs", 5))
    inner = tiny(tiny_onnx, "patch_mean", batch_size=2)
    clean, _ = embed_frame(inner, df)
    killed = Spy(inner, fail_on_call=2)
    with (
        EmbeddingCache(tmp_path / "cache", inner.cache_id) as cache,
        pytest.raises(RuntimeError, match="simulated kill"),
    ):
        embed_frame(killed, df, cache)
    with EmbeddingCache(tmp_path / "cache", inner.cache_id) as cache:
        assert len(cache) == 2  # the first batch was committed
        digests = [file_digest(p) for p in df["path"]]
        assert digests[0] in cache and digests[1] in cache and digests[2] not in cache
        resumed = Spy(inner)
        out, failures = embed_frame(resumed, df, cache)
    assert failures == [] and resumed.images == 3 and resumed.calls == 2
    np.testing.assert_array_equal(out, clean)


def test_embed_frame_bad_files_become_nan_rows(tiny_onnx: Path, tmp_path: Path) -> None:
    good = write_images(tmp_path / "imgs", 3)
    empty = tmp_path / "imgs" / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "imgs" / "gone.png"
    paths = [good[0], empty, good[1], missing, good[2]]
    bb = tiny(tiny_onnx)
    clean, _ = embed_frame(bb, frame(good))
    with EmbeddingCache(tmp_path / "cache", bb.cache_id) as cache:
        out, failures = embed_frame(bb, frame(paths), cache, workers=0)
        assert len(cache) == 3  # failures are not cached
    assert [i for i, _ in failures] == [1, 3]
    assert dict(failures)[3] == "file not found"
    assert dict(failures)[1]  # a reason from the image loader
    assert out.shape == (5, 4)
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_array_equal(out[[0, 2, 4]], clean)


def test_embed_frame_all_failures(tiny_onnx: Path, tmp_path: Path) -> None:
    out, failures = embed_frame(tiny(tiny_onnx), frame([tmp_path / "a.png", tmp_path]))
    assert out.shape == (2, 0)
    assert failures == [(0, "file not found"), (1, "is a directory")]


# --------------------------------------------------------------------------------------------
# timm backbones
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "dim"), [("embed", 64), ("cls", 64), ("patch_mean", 64), ("cls_patch", 128)]
)
def test_timm_vit_pools(pool: str, dim: int) -> None:
    bb = TimmBackbone("test_vit", pool=pool)
    size = bb.preprocessing.size
    out = bb.embed(batch(2, size=size))
    assert out.shape == (2, dim) and out.dtype == np.float32 and np.isfinite(out).all()


def test_timm_multi_layers() -> None:
    vit = TimmBackbone("test_vit", pool="multi", layers=2)
    assert vit.embed(batch(2, size=vit.preprocessing.size)).shape == (2, 128)
    eff = TimmBackbone("test_efficientnet", pool="multi", layers=[-2, -1])
    assert eff.embed(batch(1, size=eff.preprocessing.size)).shape == (1, 48 + 64)
    assert TimmBackbone("test_efficientnet", pool="multi").spec()["layers"] == 4


def test_timm_cnn_pools() -> None:
    bb = TimmBackbone("test_efficientnet")
    assert bb.preprocessing.size == 160 and bb.preprocessing.crop_pct == pytest.approx(0.95)
    assert bb.embed(batch(2, size=160)).shape == (2, 256)
    pm = TimmBackbone("test_efficientnet", pool="patch_mean")
    assert pm.embed(batch(1, size=160)).shape[0] == 1
    with pytest.raises(ValueError, match="needs a ViT-like model with a CLS token"):
        TimmBackbone("test_efficientnet", pool="cls")


def test_timm_spec_round_trip() -> None:
    bb = TimmBackbone("test_vit", pool="cls")
    spec = json.loads(json.dumps(bb.spec()))
    assert spec["type"] == "timm" and spec["sha256"] is None
    again = open_backbone(spec)
    assert again.cache_id == bb.cache_id
    assert TimmBackbone("test_vit", pool="patch_mean").cache_id != bb.cache_id
    x = batch(2, size=bb.preprocessing.size)
    np.testing.assert_array_equal(again.embed(x), bb.embed(x))  # seeded random init


# --------------------------------------------------------------------------------------------
# The real CLIP file (optional)
# --------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.skipif(not CLIP_ONNX.is_file(), reason=f"CLIP ONNX weights not found at {CLIP_ONNX}")
def test_clip_onnx_embeds_an_image(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:256, 0:256]
    img = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    path = tmp_path / "gradient.png"
    Image.fromarray(img).save(path)
    df = pd.DataFrame({"path": [str(path)]})
    emb, failures = embed_frame(OnnxBackbone(CLIP_ONNX, threads=2), df)
    assert failures == [] and emb.shape == (1, 512) and np.isfinite(emb).all()
    cls, _ = embed_frame(OnnxBackbone(CLIP_ONNX, pool="cls", threads=2), df)
    assert cls.shape == (1, 768) and np.isfinite(cls).all()


def test_embed_frame_embeds_identical_files_once(tiny_onnx: Path, tmp_path: Path) -> None:
    (path,) = write_images(tmp_path / "imgs", 1)
    spy = Spy(tiny(tiny_onnx))
    out, failures = embed_frame(spy, frame([path, path, path]))
    assert failures == [] and spy.images == 1
    np.testing.assert_array_equal(out[0], out[2])
    with pytest.raises(ValueError, match="no 'path' column"):
        embed_frame(spy, pd.DataFrame({"file": [str(path)]}))


# --------------------------------------------------------------------------------------------
# Block outputs of an ONNX ViT (pool "layers")
# --------------------------------------------------------------------------------------------


def test_layers_pool_gives_each_blocks_cls_token(tmp_path: Path) -> None:
    path = build_tiny_vit(tmp_path / "vit.onnx")
    bb = OnnxBackbone(path, pool="layers", preprocessing=TINY_PRE)
    assert bb.layers == [0, 1, 2] and bb.layer_outputs[-1] == "last_hidden"
    x = batch(2)
    out = bb.embed(x)
    assert out.shape == (2, 9)
    cls = x.reshape(2, 3, -1)[:, :, 0]  # token 0 of the pixels-as-tokens model
    expected = []
    for k in range(3):  # block k's output = input + 1 + ... + (k + 1)
        v = cls + (k + 1) * (k + 2) / 2
        expected.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    np.testing.assert_allclose(out, np.concatenate(expected, 1) / np.sqrt(3), rtol=1e-5)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)


def test_layers_pool_subset_round_trip_and_errors(tmp_path: Path) -> None:
    path = build_tiny_vit(tmp_path / "vit.onnx")
    bb = OnnxBackbone(path, pool="layers", layers=[0, -1], preprocessing=TINY_PRE)
    assert bb.layers == [0, 2] and bb.embed(batch(1)).shape == (1, 6)
    again = open_backbone(json.loads(json.dumps(bb.spec())))
    assert again.layers == [0, 2] and again.cache_id == bb.cache_id
    np.testing.assert_array_equal(again.embed(batch(1)), bb.embed(batch(1)))
    full = OnnxBackbone(path, pool="layers", preprocessing=TINY_PRE)
    assert full.cache_id != bb.cache_id
    with pytest.raises(ValueError, match="outside the model's 3 blocks"):
        OnnxBackbone(path, pool="layers", layers=[5], preprocessing=TINY_PRE)
    with pytest.raises(ValueError, match="needs a ViT exported with block names"):
        OnnxBackbone(build_tiny_encoder(tmp_path / "plain.onnx"), pool="layers")


def test_every_cache_is_a_folder_under_one_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fakescope.data.normalise import default_normalised_dir
    from fakescope.embed.weights import cache_dir as weights_dir
    from fakescope.infer.backends import onnx_path_for
    from fakescope.zoo import detector_file

    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "root"))
    root = tmp_path / "root"
    assert default_cache_dir() == root / "embeddings"
    assert weights_dir() == root / "weights"
    assert default_normalised_dir() == root / "normalised"
    assert onnx_path_for(detector_file("builtin:clip-layers"), "fp32").parent == root / "onnx"
