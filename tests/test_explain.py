"""Explanations: Grad-CAM on CNNs, ViTs and NPR-filtered nets, occlusion on any detector, pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fakescope.embed.backbones import OnnxBackbone
from fakescope.infer.explain import (
    Explanation,
    explain_image,
    explain_paths,
    overlay,
    save_explanation,
)
from fakescope.models.detector import Detector, DetectorSpec, Preprocessing
from fakescope.models.fusion import create_fusion
from fakescope.models.probe import create_probe_detector
from fakescope.models.registry import create_detector
from fakescope.models.torch_detector import TorchDetector, make_input_filter

from .helpers import build_tiny_encoder

PLAIN_PRE = Preprocessing(
    size=32, interpolation="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0
)
TINY_PRE = Preprocessing(
    size=32, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0
)


class TopRightNet(nn.Module):
    """A logit that depends only on channel 0 of the top-right quadrant (via one 1x1 conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mask = torch.zeros_like(x[:, :1])
        mask[..., : h // 2, w // 2 :] = 1.0
        feats = self.conv(x * mask)
        return 8.0 * feats.sum(dim=(1, 2, 3)) / mask[0].sum() - 4.0


def top_right_detector() -> Detector:
    return TorchDetector(
        TopRightNet(), DetectorSpec(kind="timm", arch="top_right", preprocessing=PLAIN_PRE)
    )


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def grey_image(size: int = 32, value: int = 200) -> Image.Image:
    return Image.new("RGB", (size, size), (value, value, value))


def check_heatmap(expl: Explanation, size: int, method: str) -> None:
    assert isinstance(expl, Explanation)
    assert expl.method == method
    assert expl.heatmap.shape == (size, size)
    assert expl.heatmap.dtype == np.float32
    assert np.isfinite(expl.heatmap).all()
    assert expl.heatmap.min() >= 0.0 and expl.heatmap.max() <= 1.0
    assert 0.0 <= expl.score <= 1.0
    assert expl.input_image.size == (size, size) and expl.input_image.mode == "RGB"


def quadrants(heat: np.ndarray) -> dict[str, float]:
    h, w = heat.shape
    return {
        "tl": float(heat[: h // 2, : w // 2].mean()),
        "tr": float(heat[: h // 2, w // 2 :].mean()),
        "bl": float(heat[h // 2 :, : w // 2].mean()),
        "br": float(heat[h // 2 :, w // 2 :].mean()),
    }


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn() -> Detector:
    torch.manual_seed(0)
    return create_detector("test_efficientnet", img_size=64)


def test_gradcam_cnn_shape_range_and_state_restored(cnn: Detector) -> None:
    cnn.train()
    frozen = next(iter(cnn.parameters()))
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in cnn.parameters()]
    try:
        expl = explain_image(cnn, noise_image(100, 80))
        check_heatmap(expl, 64, "gradcam")
        assert cnn.training
        assert [p.requires_grad for p in cnn.parameters()] == flags
        assert all(p.grad is None for p in cnn.parameters())
    finally:
        frozen.requires_grad_(True)
        cnn.eval()


def test_gradcam_score_matches_predict_proba(cnn: Detector) -> None:
    from fakescope.data.transforms import eval_transform

    img = noise_image(64, 64, seed=3)
    expl = explain_image(cnn, img, method="gradcam")
    x = eval_transform(cnn.spec.preprocessing)(img).unsqueeze(0)
    assert expl.score == pytest.approx(float(cnn.predict_proba(x)[0]), abs=1e-5)


def test_gradcam_works_inside_no_grad(cnn: Detector) -> None:
    with torch.no_grad():
        expl = explain_image(cnn, noise_image(64, 64), method="gradcam")
    check_heatmap(expl, 64, "gradcam")


def test_gradcam_vit() -> None:
    torch.manual_seed(0)
    det = create_detector("test_vit", img_size=64)
    expl = explain_image(det, noise_image(90, 70))
    check_heatmap(expl, 64, "gradcam")


def test_gradcam_with_npr_filter() -> None:
    torch.manual_seed(0)
    det = create_detector("test_efficientnet", img_size=64)
    det.spec.input_filter = "npr"
    det.input_filter = make_input_filter("npr")
    expl = explain_image(det, noise_image(100, 80))
    check_heatmap(expl, 64, "gradcam")


def test_gradcam_on_custom_net_points_at_the_evidence() -> None:
    # Falls back to the last Conv2d; the conv only sees the top-right quadrant.
    expl = explain_image(top_right_detector(), grey_image(), method="gradcam")
    check_heatmap(expl, 32, "gradcam")
    q = quadrants(expl.heatmap)
    assert q["tr"] > 0.5
    assert max(q["tl"], q["bl"], q["br"]) < 0.1 * q["tr"]


def test_gradcam_refuses_probe_and_unknown_method(tmp_path: Path) -> None:
    det = probe_detector(tmp_path)
    with pytest.raises(ValueError, match="Grad-CAM"):
        explain_image(det, grey_image(), method="gradcam")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain_image(det, grey_image(), method="lime")


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def test_occlusion_heat_is_where_the_logit_looks() -> None:
    det = top_right_detector()
    for grid in (7, 8):
        expl = explain_image(det, grey_image(), method="occlusion", grid=grid)
        check_heatmap(expl, 32, "occlusion")
        q = quadrants(expl.heatmap)
        assert q["tr"] > 0.4
        assert max(q["tl"], q["bl"], q["br"]) < 0.25 * q["tr"]
        assert q["bl"] < 0.02  # the far quadrant is untouched
        row, col = np.unravel_index(np.argmax(expl.heatmap), expl.heatmap.shape)
        assert row < 16 and col >= 16


def test_occlusion_all_zero_when_nothing_matters() -> None:
    det = top_right_detector()
    expl = explain_image(det, Image.new("RGB", (32, 32)), method="occlusion")  # black: already 0
    assert expl.heatmap.shape == (32, 32)
    assert not expl.heatmap.any()


def probe_detector(tmp_path: Path) -> Detector:
    onnx_path = build_tiny_encoder(tmp_path / "enc" / "tiny.onnx")
    backbone = OnnxBackbone(onnx_path, preprocessing=TINY_PRE)
    det = create_probe_detector(backbone, dim=4)
    det.net.set_head(np.zeros(4), np.ones(4), np.array([1.0, -0.5, 0.25, 2.0]), 0.1)
    return det


def test_occlusion_on_onnx_probe(tmp_path: Path) -> None:
    det = probe_detector(tmp_path)
    expl = explain_image(det, noise_image(50, 40))
    check_heatmap(expl, 32, "occlusion")


def test_occlusion_on_fusion() -> None:
    members = [top_right_detector(), top_right_detector()]
    fused = create_fusion(members, np.array([0.5, 0.5]), 0.0, "mean")
    expl = explain_image(fused, grey_image(48))
    check_heatmap(expl, 32, "occlusion")
    alone = members[0].predict_proba(torch.full((1, 3, 32, 32), 200 / 255))
    assert expl.score == pytest.approx(float(alone[0]), abs=1e-3)
    q = quadrants(expl.heatmap)
    assert q["tr"] > 4 * max(q["tl"], q["bl"], q["br"])


# --------------------------------------------------------------------------------------------
# Pictures and folders
# --------------------------------------------------------------------------------------------


def test_overlay_same_size_rgb() -> None:
    img = noise_image(70, 50).convert("L")
    heat = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    out = overlay(img, heat)
    assert out.size == (70, 50) and out.mode == "RGB"
    with pytest.raises(ValueError):
        overlay(img, heat, alpha=1.5)


def test_save_explanation_writes_a_png(tmp_path: Path) -> None:
    expl = explain_image(top_right_detector(), grey_image(), method="occlusion")
    path = save_explanation(expl, tmp_path / "sub" / "x.png")
    assert path == tmp_path / "sub" / "x.png"
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.width >= 2 * 32 and im.height > 32


def test_explain_paths_good_bad_and_same_names(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    noise_image(40, 40, seed=1).save(src / "a" / "img.png")
    noise_image(40, 40, seed=2).save(src / "b" / "img.png")
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.jpg").write_text("not an image at all\n")
    paths = [src / "a" / "img.png", src / "empty.jpg", src / "text.jpg", src / "b" / "img.png"]
    results = explain_paths(top_right_detector(), paths, tmp_path / "out")
    assert [r[0] for r in results] == [str(p) for p in paths]
    written = [png for _, png, _ in results if png is not None]
    errors = {Path(p).name: err for p, png, err in results if png is None}
    assert len(written) == 2 and len(set(written)) == 2
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in written)
    assert all(p.name.startswith("img-") and p.suffix == ".png" for p in written)
    assert "empty" in errors["empty.jpg"]
    assert "not a recognised image format" in errors["text.jpg"]
    assert all(err is None for _, png, err in results if png is not None)


def test_heatmap_on_a_landscape_image_keeps_its_size_and_greys_what_the_crop_left_out(
    tmp_path: Path,
) -> None:
    """A 96x64 image: the model (32 px, short side resize, centre crop) saw its middle 64x64.
    The heatmap comes back at 96x64, NaN left and right of that, and the top-right evidence
    lands in the top right of the middle square."""
    det = top_right_detector()
    img = Image.new("RGB", (96, 64), (200, 200, 200))
    expl = explain_image(det, img, method="occlusion", grid=8)
    heat = expl.image_heatmap
    assert heat is not None and heat.shape == (64, 96) and expl.image.size == (96, 64)
    assert np.isnan(heat[:, :16]).all() and np.isnan(heat[:, 80:]).all()
    middle = heat[:, 16:80]
    assert np.isfinite(middle).all()
    assert middle[:32, 32:].mean() > 4 * middle[32:, :32].mean() + 0.1  # top right of the view
    path = save_explanation(expl, tmp_path / "x.png")
    with Image.open(path) as im:
        panel_w, panel_h = im.width // 2, im.height - 36
        assert abs(panel_w / panel_h - 96 / 64) < 0.02  # the image's aspect, not a square


@pytest.mark.parametrize(
    ("pre", "size", "seen_cols"),
    [
        (PLAIN_PRE, (48, 32), (8, 40)),  # landscape: the centre 32 columns
        (PLAIN_PRE, (32, 80), None),  # portrait: rows are cropped, every column seen
        (Preprocessing(size=32, resize_mode="crop"), (20, 26), (0, 20)),  # smaller: all seen
    ],
)
def test_on_image_maps_the_view_back(pre, size, seen_cols) -> None:
    from fakescope.infer.explain import on_image

    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))  # left 0 -> right 1
    heat = on_image(ramp, size, pre)
    w, h = size
    assert heat.shape == (h, w)
    seen = np.isfinite(heat).any(axis=0)
    lo, hi = seen_cols or (0, w)
    assert seen[lo:hi].all() and not seen[:lo].any() and not seen[hi:].any()
    row = heat[np.isfinite(heat).any(axis=1)][0]
    inside = row[np.isfinite(row)]
    assert (np.diff(inside) >= -1e-6).all()  # the ramp still rises left to right
