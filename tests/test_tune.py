"""The trainable CLIP tower: rebuilt from an int8 ONNX file, tuned with Effort or LoRA, and the
tuned tower run through onnxruntime with its low-rank deltas written into the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fakescope.embed.backbones import OnnxBackbone
from fakescope.embed.deltas import DeltaError, apply_deltas
from fakescope.embed.tower import ClipTower, TowerError, build_clip_tower
from fakescope.models.adapters import LoRALinear, SVDResidualLinear, wrap_block_linears
from fakescope.train.tune import TuneConfig, TunedTail, balanced_weights, tail_features, tune_tail

from .helpers import SHARED
from .tower_helpers import cosine, export_fp32, export_int8, tiny_vit

CLIP = SHARED / "weights" / "clip_vit_b16_openai_visual.int8.onnx"


def _pixels(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tower")
    vit = tiny_vit()
    return {
        "vit": vit,
        "int8": export_int8(vit, root / "tiny.int8.onnx"),
        "fp32": export_fp32(vit, root / "tiny.fp32.onnx"),
    }


# --------------------------------------------------------------------------------------------
# The rebuilt tower
# --------------------------------------------------------------------------------------------


def test_rebuilt_from_int8_has_the_original_weights_within_a_quantisation_step(tiny) -> None:
    tower = build_clip_tower(tiny["int8"])
    ref = tiny["vit"].state_dict()
    got = tower.vit.state_dict()
    assert set(got) == set(ref)
    for key, want in ref.items():
        have = got[key]
        assert have.shape == want.shape, key
        if key.endswith("weight") and want.ndim >= 2:  # int8: within half a step of 1/127
            step = want.abs().max() / 127
            assert (have - want).abs().max() <= step * 0.51 + 1e-6, key
        elif key != "head.bias":
            torch.testing.assert_close(have, want, rtol=0, atol=1e-6, msg=key)


def test_rebuilt_tower_reproduces_the_original_network(tiny) -> None:
    tower = build_clip_tower(tiny["int8"])
    x = torch.from_numpy(_pixels())
    with torch.no_grad():
        emb, hidden = tower(x)
        want_hidden = tiny["vit"].blocks(
            tiny["vit"].norm_pre(tiny["vit"]._pos_embed(tiny["vit"].patch_embed(x)))
        )
        want_emb = tiny["vit"].forward_head(tiny["vit"].norm(want_hidden))
    assert cosine(emb.numpy(), want_emb.numpy()).min() > 0.999
    assert cosine(hidden[:, 0].numpy(), want_hidden[:, 0].numpy()).min() > 0.999


def test_torch_tower_matches_its_own_onnx_export_exactly(tiny, tmp_path: Path) -> None:
    tower = build_clip_tower(tiny["int8"])
    out = tmp_path / "rebuilt.onnx"
    export_fp32(tower, out)
    x = _pixels()
    onnx_emb = OnnxBackbone(out, pool="embed", batch_size=4).embed(x)
    with torch.no_grad():
        torch_emb = tower(torch.from_numpy(x))[0].numpy()
    assert cosine(onnx_emb, torch_emb).min() > 0.999999
    np.testing.assert_allclose(onnx_emb, torch_emb, rtol=1e-4, atol=1e-5)


def test_block_outputs_and_tokens_line_up_with_the_onnx_taps(tiny) -> None:
    tower = ClipTower(tiny["vit"])  # the network the fp32 file was exported from
    x = _pixels()
    fp32 = tiny["fp32"]
    layers = OnnxBackbone(fp32, pool="layers", batch_size=4).embed(x).reshape(4, 3, -1)
    toks = OnnxBackbone(fp32, pool="tokens", layers=[1], batch_size=4).embed(x).reshape(4, 5, -1)
    with torch.no_grad():
        outs = tower.block_outputs(tower.stem(torch.from_numpy(x)))
        tok = tower.tokens(torch.from_numpy(x), upto=2)
    for k in range(3):
        assert cosine(layers[:, k], outs[k][:, 0].numpy()).min() > 0.999
    np.testing.assert_allclose(toks, tok.numpy(), rtol=1e-3, atol=1e-4)


def test_a_file_that_is_not_a_tower_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    with pytest.raises(TowerError, match="notes.onnx"):
        build_clip_tower(bad)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        build_clip_tower(tmp_path / "missing.onnx")


@pytest.mark.shared
def test_shipped_int8_file_rebuilds_with_the_right_mapping() -> None:
    """Blocks 1-6 of the rebuilt ViT-B/16 agree with the int8 file (a wrong mapping breaks block
    1); later blocks drift with the int8 file's activation error, so they are not checked."""
    if not CLIP.is_file():
        pytest.skip(f"shared CLIP weights not found at {CLIP}")
    from PIL import Image

    from fakescope.data.transforms import eval_transform

    tower = build_clip_tower(CLIP)
    bb = OnnxBackbone(CLIP, pool="layers")
    tf = eval_transform(bb.preprocessing)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))]
    from skimage import data as skdata

    imgs += [Image.fromarray(skdata.astronaut()), Image.fromarray(skdata.coffee())]
    x = np.stack([tf(im).numpy() for im in imgs])
    ref = bb.embed(x).reshape(len(imgs), 12, 768)
    with torch.no_grad():
        outs = tower.block_outputs(tower.stem(torch.from_numpy(x)))
    cls = np.stack([o[:, 0].numpy() for o in outs], axis=1)
    assert cosine(cls[:, :6], ref[:, :6]).min() >= 0.99


# --------------------------------------------------------------------------------------------
# Adapters and deltas
# --------------------------------------------------------------------------------------------


def _linear(out_f: int = 24, in_f: int = 16, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f)


@pytest.mark.parametrize("chunks", [1, 3])
def test_effort_starts_as_the_original_layer_and_its_delta_is_exact(chunks: int) -> None:
    lin = _linear()
    svd = SVDResidualLinear(lin, residual_rank=1, chunks=chunks)
    x = torch.randn(5, 16)
    torch.testing.assert_close(svd(x), lin(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in svd.parameters() if p.requires_grad) == chunks * (
        24 // chunks + 1 + 16
    )
    with torch.no_grad():
        for s in svd.S_res:
            s.mul_(3.0)
        svd.U_res[0].add_(0.1)
    a, b = svd.delta()
    torch.testing.assert_close(b @ a, svd.weight - lin.weight, rtol=1e-4, atol=1e-5)
    assert float(svd.keep_norm_loss()) > 0 and float(svd.orthogonal_loss()) > 0


def test_effort_losses_are_zero_at_the_start() -> None:
    svd = SVDResidualLinear(_linear(), residual_rank=1, chunks=3)
    assert float(svd.orthogonal_loss()) < 1e-4
    assert float(svd.keep_norm_loss()) < 1e-3


def test_lora_starts_as_the_original_layer_and_its_delta_is_exact() -> None:
    lin = _linear()
    lora = LoRALinear(lin, rank=4, alpha=8)
    x = torch.randn(5, 16)
    torch.testing.assert_close(lora(x), lin(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    a, b = lora.delta()
    torch.testing.assert_close(b @ a, lora.weight - lin.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lora(x), torch.nn.functional.linear(x, lora.weight, lin.bias))


def _trained_tail(tiny: dict, method: str) -> TunedTail:
    """A tail whose adapters moved away from the start (random, not trained)."""
    tower = build_clip_tower(tiny["int8"])
    tail = TunedTail(
        tower, TuneConfig(method=method, rank=1 if method == "effort" else 4, blocks=2)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tail.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    return tail


@pytest.mark.parametrize("method", ["effort", "lora"])
def test_deltas_in_an_fp32_graph_equal_the_tuned_torch_blocks(tiny, method, tmp_path) -> None:
    tail = _trained_tail(tiny, method)
    tower = build_clip_tower(tiny["int8"])  # what the tail was copied from, exported as fp32
    fp32 = tmp_path / "rebuilt.onnx"
    export_fp32(tower, fp32)
    x = _pixels()
    with torch.no_grad():
        tok = tower.tokens(torch.from_numpy(x), upto=tail.start)
        want = tail.tuned_cls(tok).numpy().reshape(4, 2, -1)
    onnx_layers = OnnxBackbone(fp32, pool="layers", batch_size=4, deltas=tail.deltas())
    got = onnx_layers.embed(x).reshape(4, 3, -1)[:, 1:] * np.sqrt(3)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_deltas_in_the_int8_graph_follow_the_tuned_blocks(tiny) -> None:
    tail = _trained_tail(tiny, "lora")
    x = _pixels()
    frozen = OnnxBackbone(tiny["int8"], pool="layers").embed(x).reshape(4, 3, -1)
    tuned = OnnxBackbone(tiny["int8"], pool="layers", deltas=tail.deltas()).embed(x)
    tuned = tuned.reshape(4, 3, -1)
    tower = build_clip_tower(tiny["int8"])
    with torch.no_grad():
        want = tail.tuned_cls(tower.tokens(torch.from_numpy(x), upto=tail.start)).numpy()
    want = want.reshape(4, 2, -1)
    np.testing.assert_allclose(tuned[:, 0], frozen[:, 0], atol=1e-6)  # block 0 is not tuned
    assert cosine(tuned[:, 2], want[:, 1]).min() > 0.99
    assert cosine(tuned[:, 2], frozen[:, 2]).min() < cosine(tuned[:, 2], want[:, 1]).min()


def test_a_delta_for_a_missing_matrix_is_refused(tiny) -> None:
    import onnx

    model = onnx.load(str(tiny["int8"]))
    a, b = np.zeros((1, 128), np.float32), np.zeros((128, 1), np.float32)
    with pytest.raises(DeltaError, match="blocks.7.attn.proj"):
        apply_deltas(model, {"blocks.7.attn.proj": (a, b)})
    with pytest.raises(DeltaError, match="unknown delta target"):
        apply_deltas(model, {"head": (a, b)})
    with pytest.raises(DeltaError, match="low-rank pair"):
        apply_deltas(model, {"blocks.0.attn.proj": (a, b[:, :0])})


def test_wrap_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown tuning method"):
        wrap_block_linears(torch.nn.ModuleList(), "dora", 1)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_balanced_weights_split_each_class_equally_among_sources() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0])
    sources = np.array(["a", "a", "a", "b", "r", "r"])
    w = balanced_weights(labels, sources)
    assert w.sum() == pytest.approx(1.0)
    assert w[labels == 1].sum() == pytest.approx(0.5)
    assert w[3] == pytest.approx(0.25) and w[0] == pytest.approx(0.25 / 3)


@pytest.mark.parametrize("method", ["effort", "lora"])
def test_tuning_learns_a_separable_task_and_features_keep_the_layers_layout(tiny, method) -> None:
    tower = build_clip_tower(tiny["int8"])
    rng = np.random.default_rng(0)
    n = 48
    labels = np.repeat([0, 1], n // 2)
    patterns = rng.normal(size=(2, 3, 32, 32))  # one pattern per class, plus noise: learnable
    pix = (patterns[labels] + 0.5 * rng.normal(size=(n, 3, 32, 32))).astype(np.float32)
    with torch.no_grad():
        tok = tower.tokens(torch.from_numpy(pix), upto=1).numpy()
    early = OnnxBackbone(tiny["int8"], pool="layers").embed(pix)
    cfg = TuneConfig(
        method=method,
        rank=1 if method == "effort" else 4,
        blocks=2,
        epochs=6,
        per_epoch=128,
        batch_size=16,
        lr=1e-3,
        head_lr=0.1,
    )
    tail, history = tune_tail(tower, lambda i: tok[i], early, labels, np.array(["s"] * n), cfg)
    assert len(history) == 6 and history[-1]["train_acc"] >= 0.9
    feats = tail_features(tail, lambda i: tok[i], early, np.arange(n))
    assert feats.shape == (n, 3 * 128)
    np.testing.assert_allclose(feats[:, :128], early[:, :128])  # block 0 is frozen
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-4)
    assert set(tail.deltas()) == {f"blocks.{k}.attn.{m}" for k in (1, 2) for m in ("qkv", "proj")}
