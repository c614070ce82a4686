"""Benchmark: inference speed per backend and precision, against this machine's GEMM roofline.

For one checkpoint, on the shared dev set, prints for torch fp32 / torch bf16 / onnx fp32 / onnx int8:
end-to-end images/s from files (decode + preprocess + model, batched, decode threads), model-only
images/s, achieved GFLOP/s against the measured GEMM peak, where the time goes, and the AUC with
its difference from torch fp32. Not a test: ``python bench/speed.py --detector CKPT``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fakescope.data.images import load_image
from fakescope.data.manifest import build_manifest
from fakescope.data.transforms import eval_transform
from fakescope.infer.backends import DetectorRef, open_detector
from fakescope.infer.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"))


def gemm_roofline(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Measured GFLOP/s of a large square matmul: onnxruntime fp32 and torch fp32/bf16."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    sess = ort.InferenceSession(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    del onnx
    flops = 2 * n**3
    out = {"onnxruntime_fp32": _best(lambda: sess.run(None, {"a": a, "b": a}), reps, flops)}
    ta = torch.from_numpy(a)
    out["torch_fp32"] = _best(lambda: ta @ ta, reps, flops)
    tb = ta.bfloat16()
    out["torch_bf16"] = _best(lambda: tb @ tb, reps, flops)
    rng = np.random.default_rng(0)
    a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b8 = rng.integers(-128, 128, (n, n), dtype=np.int8)
    g8 = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "mm8",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
    )
    s8 = ort.InferenceSession(
        helper.make_model(g8, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    out["onnxruntime_int8"] = _best(lambda: s8.run(None, {"a": a8, "b": b8}), reps, flops)
    return out


def _best(fn, reps: int, flops: float) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def model_flops(det, size: int) -> float:
    """Forward FLOPs per image (torch's flop counter on the torch model)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        det(torch.randn(1, 3, size, size))
    return float(fc.get_total_flops())


def breakdown(det, paths: list[str], batch: int, amp: str) -> dict[str, float]:
    """Seconds per image spent decoding, preprocessing and in the model (one process, no overlap)."""
    tf = eval_transform(det.spec.preprocessing)
    t0 = time.perf_counter()
    imgs = [load_image(p) for p in paths]
    t1 = time.perf_counter()
    xs = [tf(im) for im in imgs]
    t2 = time.perf_counter()
    pred = Predictor(det, batch_size=batch, workers=0, amp=amp)
    det.tensor_logits(torch.stack(xs[:batch]), pred.amp)  # warm-up, not timed
    t3 = time.perf_counter()
    for i in range(0, len(xs), batch):
        det.tensor_logits(torch.stack(xs[i : i + batch]), pred.amp)
    t4 = time.perf_counter()
    n = len(paths)
    return {"decode": (t1 - t0) / n, "preprocess": (t2 - t1) / n, "model": (t4 - t3) / n}


def run_config(ckpt: str, backend: str, precision: str, df, args) -> dict[str, float]:
    ref = DetectorRef(ckpt, backend, precision)
    det, amp = open_detector(ref), ref.amp
    pred = Predictor(det, batch_size=args.batch_size, workers=args.workers, amp=amp)
    paths = df["path"].tolist()
    list(pred.predict_image_paths(paths[: args.batch_size]))  # warm-up
    t0 = time.perf_counter()
    rows = list(pred.predict_image_paths(paths))
    e2e = len(rows) / (time.perf_counter() - t0)
    parts = breakdown(det, paths[: args.breakdown], args.batch_size, amp)
    auc = roc_auc_score(df["label"], [r.score for r in rows])
    return {"e2e": e2e, "model_only": 1.0 / parts["model"], "auc": auc, **parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--detector", required=True, help="a fine-tuned checkpoint (.safetensors)")
    p.add_argument("--data", default=str(ROOT / "shared/data/sd14-coco-imagenet"))
    p.add_argument(
        "--limit", type=int, default=900, help="images per configuration (stratified sample)"
    )
    p.add_argument("--breakdown", type=int, default=64, help="images for the time breakdown")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    df = build_manifest(args.data)
    df = df.sample(frac=1.0, random_state=0).groupby("label").head(args.limit // 2)
    df = df.reset_index(drop=True)
    roof = gemm_roofline()
    print(
        "GEMM roofline (2048x2048 fp32 matmul): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roof.items())
    )
    det = open_detector(DetectorRef(args.detector, "torch", "fp32"))
    flops = model_flops(det, det.spec.preprocessing.size)
    print(
        f"model {det.spec.arch}: {flops / 1e9:.2f} GFLOP per image at {det.spec.preprocessing.size}px; "
        f"{len(df)} images, batch {args.batch_size}, {args.workers} decode threads\n"
    )
    head = (
        f"{'backend':<8} {'prec':<5} {'e2e img/s':>9} {'model img/s':>11} {'GFLOP/s':>8} {'% roof':>7} "
        f"{'decode ms':>9} {'prep ms':>8} {'model ms':>9} {'AUC':>7} {'dAUC':>8} {'x e2e':>6}"
    )
    print(head + "\n" + "-" * len(head))
    base = None
    results: dict[tuple[str, str], dict[str, float]] = {}
    for backend, precision in CONFIGS:
        r = run_config(args.detector, backend, precision, df, args)
        base = base or r
        results[(backend, precision)] = r
        gflops = r["model_only"] * flops / 1e9
        peak = {"bf16": roof["torch_bf16"], "int8": roof["onnxruntime_int8"]}.get(
            precision, roof["onnxruntime_fp32"]
        )
        print(
            f"{backend:<8} {precision:<5} {r['e2e']:>9.1f} {r['model_only']:>11.1f} {gflops:>8.0f} "
            f"{100 * gflops / peak:>6.0f}% {1000 * r['decode']:>9.1f} {1000 * r['preprocess']:>8.1f} "
            f"{1000 * r['model']:>9.1f} {r['auc']:>7.4f} {r['auc'] - base['auc']:>+8.4f} "
            f"{r['e2e'] / base['e2e']:>5.1f}x"
        )
    print(
        "\n% roof: achieved model GFLOP/s over the GEMM peak of the same precision "
        "(fp32: onnxruntime; bf16: torch; int8: onnxruntime MatMulInteger, in GOP/s)."
    )
    (fb, fp), fast = max(results.items(), key=lambda kv: kv[1]["e2e"])
    speedup, dauc = fast["e2e"] / base["e2e"], fast["auc"] - base["auc"]
    ok = speedup >= 3.0 and abs(dauc) <= 0.002
    print(
        f"fastest end to end: {fb} {fp} at {fast['e2e']:.1f} img/s = {speedup:.1f}x torch eager "
        f"fp32, AUC difference {dauc:+.4f} -> target (>= 3x, |dAUC| <= 0.002) "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
