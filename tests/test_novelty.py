"""The out-of-depth guard, the L2 probe set-up and batch invariance of per-batch-quantised encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fakescope
from fakescope.config import TrainConfig
from fakescope.embed.backbones import OnnxBackbone, quantises_per_batch
from fakescope.models.checkpoint import load_detector, save_checkpoint
from fakescope.models.novelty import REASON, KnnNovelty, fit_novelty
from fakescope.models.probe import attach_novelty, create_probe_detector
from fakescope.train.probe import fit_logistic_head, fit_probe, l2_normalise

from .helpers import build_encoder, build_tiny_vit, far_away, textures

PRE = dict(size=32, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


# --------------------------------------------------------------------------------------------
# Fixtures: a tiny "encoder" (fp32 and dynamically int8-quantised) and far-away images
# --------------------------------------------------------------------------------------------


def write(images: list[Image.Image], folder: Path, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(str(folder / f"{prefix}{i}.png"))
        img.save(paths[-1])
    return paths


# --------------------------------------------------------------------------------------------
# The guard itself
# --------------------------------------------------------------------------------------------


def test_fit_novelty_threshold_is_a_leave_one_out_quantile() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 8)) + 5.0
    guard = fit_novelty(train, k=3, quantile=0.9)
    nearest = fit_novelty(train, k=1, quantile=0.9)
    own = nearest.distances(train.astype(np.float32))
    assert np.allclose(own, 0.0, atol=1e-3)  # each point is its own nearest bank row (float16)
    assert nearest.threshold > 1e-3  # ... but the threshold leaves it out
    # about 10% of fresh in-distribution points are past a 0.9 quantile threshold
    fresh = guard.distances((rng.normal(size=(500, 8)) + 5.0).astype(np.float32))
    assert 0.02 < float((fresh > guard.threshold).mean()) < 0.25
    far = guard.distances(-np.ones((2, 8), np.float32))
    assert (far > guard.threshold).all() and float(far.max()) <= 2.0
    assert guard.config() == {"n": 300, "dim": 8, "k": 3, "threshold": guard.threshold}


def test_fit_novelty_caps_the_bank_and_needs_enough_rows() -> None:
    rng = np.random.default_rng(0)
    guard = fit_novelty(rng.normal(size=(50, 4)), k=2, max_bank=20)
    assert guard.bank.shape == (20, 4) and guard.bank.dtype == np.float16
    with pytest.raises(ValueError, match="at least 6"):
        fit_novelty(rng.normal(size=(5, 4)), k=5)
    assert isinstance(guard, KnnNovelty)


def test_l2_head_matches_sklearn_on_unit_vectors() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)) * 10
    y = (x[:, 0] > 0).astype(int)
    fit = fit_logistic_head(x[:60], y[:60], x[60:], y[60:], c=1.0, l2=True)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(l2_normalise(x[:60]), y[:60])
    assert np.allclose(fit["coef"], ref.coef_[0], atol=1e-4)
    assert np.all(fit["mean"] == 0) and np.all(fit["scale"] == 1)


# --------------------------------------------------------------------------------------------
# Batch invariance
# --------------------------------------------------------------------------------------------


def test_per_batch_quantised_encoder_scores_alone_and_in_batch_the_same(tmp_path: Path) -> None:
    from fakescope.models.detector import Preprocessing

    path = build_encoder(tmp_path / "enc.int8.onnx", quantise=True)
    assert quantises_per_batch(path) and not quantises_per_batch(path.with_suffix(".fp32.onnx"))
    pre = Preprocessing(**PRE)
    backbone = OnnxBackbone(path, preprocessing=pre, batch_size=8)
    assert backbone.batch_size == 1  # forced: the model scales activations per run
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
    x[1:] *= 40  # batch mates with a much wider range would change a shared scale
    alone = backbone.embed(x[:1])
    np.testing.assert_array_equal(backbone.embed(x)[:1], alone)
    # the dependence is real: one session run over the whole batch gives other numbers
    (together,) = backbone._session.run(["image_embeds"], {"pixel_values": x})
    assert not np.allclose(together[:1], alone)

    det = create_probe_detector(backbone, 16, l2=True)
    det.net.set_head(np.zeros(16), np.ones(16), rng.normal(size=16), 0.1)
    imgs = textures(6)
    one = fakescope.predict(imgs[0], detector=det)[0].score
    many = fakescope.predict(imgs, detector=det, batch_size=6)
    assert many[0].score == one


# --------------------------------------------------------------------------------------------
# The guard in a trained probe: round trip, far-away inputs, rows
# --------------------------------------------------------------------------------------------


@pytest.fixture
def guarded_probe(tmp_path: Path) -> Path:
    """A probe trained with `fit_probe` on textures (fake = warmer colours)."""
    from fakescope.data.splits import make_splits

    enc = build_encoder(tmp_path / "enc.int8.onnx", quantise=True)
    reals, fakes = textures(40, seed=0), textures(40, seed=1)
    fakes = [
        Image.fromarray(np.clip(np.asarray(f) * [1.2, 1, 0.8], 0, 255).astype(np.uint8))
        for f in fakes
    ]
    paths = write(reals, tmp_path / "data" / "real", "r") + write(
        fakes, tmp_path / "data" / "fake", "f"
    )
    df = pd.DataFrame({"path": paths, "label": [0] * 40 + [1] * 40, "group": "g"})
    df = make_splits(df, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(family="probe", backbone=str(enc), probe_l2=True, probe_c=10.0, workers=0)
    fit_probe(cfg, run, df)
    return run / "best.safetensors"


def test_guard_round_trips_and_flags_far_inputs(guarded_probe: Path) -> None:
    det = load_detector(guarded_probe)
    assert det.spec.model_kwargs["l2"] is True and det.net.l2
    assert det.novelty_threshold is not None and det.net.novelty.bank.shape[1] == 16
    inside = fakescope.predict(textures(20, seed=7), detector=det)
    assert sum(r.reason is not None for r in inside) <= 2
    assert all(r.novelty is not None for r in inside)
    # the toy encoder sees only colour statistics, so only the far inputs it can tell apart are
    # used here; the shipped CLIP detector is checked on all four kinds in test_zoo.py
    far_images = {k: v for k, v in far_away().items() if k in ("stars", "flat-red")}
    far = fakescope.predict(list(far_images.values()), detector=det)
    for name, row in zip(far_images, far, strict=True):
        assert row.verdict == "uncertain", name
        assert row.reason == REASON and row.novelty > det.novelty_threshold, name


def test_saved_guard_is_the_same_after_reload(guarded_probe: Path, tmp_path: Path) -> None:
    det = load_detector(guarded_probe)
    again_path = save_checkpoint(tmp_path / "again.safetensors", det)
    again = load_detector(again_path)
    np.testing.assert_array_equal(again.net.novelty.bank, det.net.novelty.bank)
    assert again.novelty_threshold == det.novelty_threshold


def test_detectors_without_guard_have_no_novelty(tmp_path: Path) -> None:
    from fakescope.models.detector import Preprocessing

    enc = build_encoder(tmp_path / "enc.onnx", quantise=False)
    det = create_probe_detector(OnnxBackbone(enc, preprocessing=Preprocessing(**PRE)), 16)
    row = fakescope.predict(textures(1)[0], detector=det)[0]
    assert row.novelty is None and row.reason is None and det.novelty_threshold is None
    attach_novelty(det, np.random.default_rng(0).normal(size=(30, 16)), k=2)
    assert det.spec.model_kwargs["novelty"]["k"] == 2


def test_guard_can_look_at_a_slice_and_layers_probes_use_their_early_blocks() -> None:
    from fakescope.models.detector import DetectorSpec
    from fakescope.models.novelty import build_novelty
    from fakescope.models.probe import guard_dims

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    guard = fit_novelty(x, k=2, dims=(0, 4))
    assert guard.bank.shape == (60, 4) and guard.config()["dims"] == [0, 4]
    far = x[:2].copy()
    far[:, 4:] += 100  # far only in the columns the guard ignores
    assert (guard.distances(far.astype(np.float32)) < guard.threshold).all()
    again = build_novelty(guard.config())
    assert again.dims == (0, 4) and again.k == 2
    layers = {"backbone": {"pool": "layers", "layers": list(range(12))}, "dim": 12 * 768}
    assert guard_dims(DetectorSpec("probe", "p", model_kwargs=layers)) == (0, 6 * 768)
    embed = {"backbone": {"pool": "embed"}, "dim": 512}
    assert guard_dims(DetectorSpec("probe", "p", model_kwargs=embed)) is None


def test_layers_probe_trains_saves_and_reloads_with_the_same_scores(tmp_path: Path) -> None:
    from fakescope.data.splits import make_splits

    vit = build_tiny_vit(tmp_path / "vit.onnx", blocks=4)
    reals, fakes = textures(30, seed=0), textures(30, seed=1)
    fakes = [Image.fromarray((np.asarray(f) * 0.6).astype(np.uint8)) for f in fakes]
    paths = write(reals, tmp_path / "d" / "real", "r") + write(fakes, tmp_path / "d" / "fake", "f")
    df = make_splits(pd.DataFrame({"path": paths, "label": [0] * 30 + [1] * 30, "group": "g"}))
    (tmp_path / "run").mkdir()
    cfg = TrainConfig(
        family="probe", backbone=str(vit), pool="layers", probe_l2=True, probe_c=1.0, workers=0
    )
    fit_probe(cfg, tmp_path / "run", df)
    det = load_detector(tmp_path / "run" / "best.safetensors")
    bb = det.spec.model_kwargs["backbone"]
    assert bb["pool"] == "layers" and bb["layers"] == [0, 1, 2, 3]
    assert det.spec.model_kwargs["novelty"]["dims"] == [0, 2 * 3]  # the first half of 4 blocks
    imgs = textures(4, seed=5)
    first = [r.score for r in fakescope.predict(imgs, detector=det)]
    again = load_detector(save_checkpoint(tmp_path / "copy.safetensors", det))
    assert [r.score for r in fakescope.predict(imgs, detector=again)] == first
