"""Helpers shared by the tests (plain functions and constants; fixtures live in conftest.py).

Tests import from here, never from one another."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINY_MODEL = "test_efficientnet"


def synthetic_image(label: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A real-ish smooth image, or the same plus a periodic 2-pixel grid (an upsampling trace) for fakes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack(
        [yy * rng.uniform(60, 200), xx * rng.uniform(60, 200), (xx + yy) * rng.uniform(30, 120)],
        axis=-1,
    )
    base += rng.normal(0, 6, base.shape)
    if label == 1:
        grid = ((np.indices((size, size)).sum(axis=0) % 2) * 40.0)[..., None]
        base += grid
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_seed_layout(root: Path, n_per_group: int = 6, size: int = 40, seed: int = 0) -> Path:
    """The seed's Kaggle layout: AI/ and Real/ with files like green-apple-ohs-1.jpg."""
    rng = np.random.default_rng(seed)
    for cls, label in (("AI", 1), ("Real", 0)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for colour in ("green", "red"):
            for shot in ("ohs", "ss"):
                for i in range(1, n_per_group + 1):
                    img = synthetic_image(label, rng, size)
                    img.save(root / cls / f"{colour}-apple-{shot}-{i}.png")
    return root


# ------------------------------------------------------------------------- a tiny ONNX encoder
#: The tiny encoder's weights: its embedding is the image's mean colour times W.
W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10 - 0.5


def build_tiny_encoder(path: Path, with_hidden: bool = True) -> Path:
    """A valid ONNX 'image encoder': GAP @ W as the embedding, pixels as [B, H*W, 3] tokens."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["B", 3, "H", "W"])
    emb = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["B", 4])
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["image_embeds"]),
    ]
    inits = [numpy_helper.from_array(W, "w")]
    outputs = [emb]
    if with_hidden:
        nodes += [
            helper.make_node("Reshape", ["pixel_values", "shape"], ["chw"]),
            helper.make_node("Transpose", ["chw"], ["hidden_states"], perm=[0, 2, 1]),
        ]
        inits.append(numpy_helper.from_array(np.array([0, 3, -1], dtype=np.int64), "shape"))
        outputs.append(
            helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["B", "T", 3])
        )
    graph = helper.make_graph(nodes, "tiny_encoder", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_probe_checkpoint(folder: Path) -> Path:
    """``folder/probe.safetensors``: a 4-wide probe on :func:`build_tiny_encoder` (ONNX, so it
    scores without torch, as the default built-in does), with a fixed head."""
    from fakescope.data.transforms import Preprocessing
    from fakescope.embed.backbones import OnnxBackbone
    from fakescope.models.checkpoint import save_checkpoint
    from fakescope.models.probe import create_probe_detector

    encoder = build_tiny_encoder(folder / "enc" / "tiny.onnx")
    pre = Preprocessing(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    det = create_probe_detector(OnnxBackbone(encoder, preprocessing=pre), dim=4)
    det.net.set_head(np.zeros(4), np.ones(4), np.array([1.0, -0.5, 0.25, 2.0]), 0.1)
    return save_checkpoint(folder / "probe.safetensors", det)


# ------------------------------------------------------------------------------- video clips
CLIP_W, CLIP_H = 64, 48


def encoder(*names: str) -> str | None:
    """The first of ``names`` this PyAV can encode with (None: none of them, or no PyAV)."""
    try:
        import av
    except ImportError:
        return None
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    return None


def has_encoder(name: str) -> bool:
    return encoder(name) is not None


MP4_CODEC = encoder("libx264", "mpeg4")
WEBM_CODEC = encoder("libvpx-vp9", "libvpx")


def frame_level(i: int) -> int:
    """Grey level of frame ``i``: frames are told apart by brightness."""
    return 16 + (8 * i) % 224


def write_clip(
    path: Path,
    times: Sequence[float],
    codec: str | None = MP4_CODEC,
    rate: int = 10,
    gop: int | None = None,
    rotation: int | None = None,
    noise: bool = False,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write flat grey frames (level by frame number) shown at ``times`` seconds."""
    import av

    assert codec is not None
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = CLIP_W, CLIP_H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.codec_context.max_b_frames = 0  # keeps MP4 durations exact for uneven pts
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "scenecut": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times):
            if noise:
                pixels = rng.integers(0, 256, (CLIP_H, CLIP_W, 3), dtype=np.uint8)
            else:
                pixels = np.full((CLIP_H, CLIP_W, 3), frame_level(i), np.uint8)
                pixels[: CLIP_H // 2, : CLIP_W // 2] = (
                    255  # a white top-left quarter, to check rotation
                )
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# ------------------------------------------------------------------- more shared builders


def build_encoder(path: Path, quantise: bool) -> Path:
    """Any-size 'encoder': per-channel mean, mean square and local detail, times W (9 -> 16)."""
    w = (np.eye(9, 16) + 0.1 * np.random.default_rng(0).normal(size=(9, 16))).astype(np.float32)
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["B", 3, "H", "W"])
    out = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["B", 16])
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixel_values"], ["m"]),
        helper.make_node("Mul", ["pixel_values", "pixel_values"], ["sq"]),
        helper.make_node("GlobalAveragePool", ["sq"], ["m2"]),
        helper.make_node(
            "AveragePool", ["pixel_values"], ["blur"], kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node("Sub", ["pixel_values", "blur"], ["hp"]),
        helper.make_node("Abs", ["hp"], ["ahp"]),
        helper.make_node("GlobalAveragePool", ["ahp"], ["d"]),
        helper.make_node("Concat", ["m", "m2", "d"], ["stats"], axis=1),
        helper.make_node("Flatten", ["stats"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "w"], ["image_embeds"]),
    ]
    graph = helper.make_graph(nodes, "enc", [x], [out], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(model, str(fp32))
    if not quantise:
        return fp32
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    return path


def textures(n: int, seed: int = 0, size: int = 48) -> list[Image.Image]:
    """'Photos': smooth random colour fields with fine grain."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.uniform(70, 180, size=(4, 4, 3))
        big = np.kron(base, np.ones((size // 4, size // 4, 1)))
        img = np.clip(big + rng.normal(0, 25, size=(size, size, 3)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(img))
    return out


def far_away(size: int = 48) -> dict[str, Image.Image]:
    """Images unlike the textures: flat colours, a star field, a text screenshot, a micrograph."""
    rng = np.random.default_rng(1)
    stars = np.zeros((size, size, 3), np.uint8)
    ys, xs = rng.integers(0, size, 20), rng.integers(0, size, 20)
    stars[ys, xs] = 255
    text = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(text)
    for row in range(0, size, 8):
        draw.text((1, row), "fakescope text", fill="black")
    yy, xx = np.mgrid[0:size, 0:size]
    cells = 255 - 255 * (np.sin(xx / 2.5) * np.sin(yy / 2.5) > 0.5)
    micro = np.stack([cells, cells * 0.8, cells], -1).astype(np.uint8)
    return {
        "flat": Image.new("RGB", (size, size), (255, 255, 255)),
        "flat-red": Image.new("RGB", (size, size), (255, 0, 0)),
        "stars": Image.fromarray(stars),
        "text": text,
        "micrograph": Image.fromarray(micro),
    }


def build_tiny_vit(path: Path, blocks: int = 3) -> Path:
    """A 'ViT' with HF-style block names: tokens = pixels; block k adds (k + 1) to its input."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["B", 3, "H", "W"])
    nodes = [
        helper.make_node("Reshape", ["pixel_values", "shape"], ["chw"]),
        helper.make_node("Transpose", ["chw"], ["h0"], perm=[0, 2, 1]),
    ]
    inits = [numpy_helper.from_array(np.array([0, 3, -1], dtype=np.int64), "shape")]
    for k in range(blocks):
        nodes.append(
            helper.make_node(
                "ReduceMean",
                [f"h{k}"],
                [f"m{k}"],
                axes=[-1],
                name=f"/vision_model/encoder/layers.{k}/layer_norm1/ReduceMean",
            )
        )
        inits.append(numpy_helper.from_array(np.full(3, k + 1.0, np.float32), f"b{k}"))
        nodes.append(helper.make_node("Add", [f"h{k}", f"b{k}"], [f"h{k + 1}"]))
    nodes.append(helper.make_node("Identity", [f"h{blocks}"], ["last_hidden"]))
    nodes.append(
        helper.make_node("ReduceMean", ["last_hidden"], ["image_embeds"], axes=[1], keepdims=0)
    )
    outputs = [
        helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["B", 3]),
        helper.make_tensor_value_info("last_hidden", TensorProto.FLOAT, ["B", "T", 3]),
    ]
    graph = helper.make_graph(nodes, "tiny_vit", [x], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_into_a_closed_pipe(*args: str) -> tuple[int, str]:
    """Run ``fakescope ARGS`` with its stdout a pipe whose reader is gone (``| head`` after
    the first line); return the exit code and stderr."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "fakescope", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the command writes a byte: every write fails with EPIPE
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


def cfr(n: int, fps: float) -> list[float]:
    return [i / fps for i in range(n)]


def write_audio_only(path: Path) -> Path:
    """A short silent AAC (or PCM) file, written as .m4a/.wav and renamed to ``path``."""
    import av

    codec, suffix, fmt = (
        ("aac", ".m4a", "fltp") if has_encoder("aac") else ("pcm_s16le", ".wav", "s16")
    )
    tmp = path.with_suffix(suffix)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=16000)
        stream.layout = "mono"
        dtype = np.float32 if fmt == "fltp" else np.int16
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype), format=fmt, layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.rename(path)
    return path


def a_row(**fields: Any) -> Any:
    """A prediction row with plain values, any of them replaced by ``fields``."""
    from fakescope.infer.row import Prediction

    base = dict(
        path="a.png",
        kind="image",
        score=0.5,
        verdict="uncertain",
        threshold=0.5,
        uncertain_band=0.1,
        model="m",
        time_ms=1.0,
    )
    return Prediction(**{**base, **fields})


# `make test` runs the suite in parallel (pytest-xdist, one worker per CPU). Each worker keeps to a
# CPU of its own, and torch and onnxruntime size their thread pools to it (utils.cpu_count), so
# the workers do not fight over the cores; work that runs several processes lifts it (all_cpus).
_AFFINITY: set[int] | None = None


def pin_worker() -> None:
    """Keep each of several xdist workers (``gw0``, ``gw1``...) to one CPU; nothing otherwise."""
    global _AFFINITY
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or workers < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        _AFFINITY = set(cpus)
        os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})
        os.environ["OMP_NUM_THREADS"] = "1"


@contextlib.contextmanager
def all_cpus() -> Iterator[None]:
    """Every CPU the worker had before :func:`pin_worker`, for processes started inside (a Ray
    cluster, torchrun's ranks)."""
    if _AFFINITY is None:
        yield
        return
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _AFFINITY)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)
