"""The core install (no torch, timm, pandas, scikit-learn, matplotlib or OpenCV) scores and
explains images with a probe detector; commands that need the training stack say which extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import fakescope
from fakescope.utils import EXTRA_OF_MODULE

from .helpers import tiny_probe_checkpoint, write_clip

#: What `pip install fakescope` does not bring: every module of the train and ray extras.
TRAINING_STACK = tuple(EXTRA_OF_MODULE)


# Runs the CLI, or the given code, as if the training stack were not installed: importing any of
# it raises ModuleNotFoundError, as it would in a core install.
RUNNER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
{body}
"""


def run_without_training_stack(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = RUNNER.format(blocked=TRAINING_STACK, body=body)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def cli(*args: str) -> str:
    return f"from fakescope.cli import main\nsys.exit(main({list(args)!r}))"


def test_predict_explain_and_the_api_run_without_the_training_stack(tmp_path: Path) -> None:
    ckpt = tiny_probe_checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    img = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(img)
    out = run_without_training_stack(
        cli("predict", str(img), "--detector", str(ckpt), "--explain", str(tmp_path / "heat")),
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[0])
    assert row["verdict"] in ("fake", "real", "uncertain") and 0.0 <= row["score"] <= 1.0
    assert row["heatmap"] and Path(row["heatmap"]).is_file()
    api = run_without_training_stack(
        "import fakescope\n"
        f"rows = fakescope.predict([{str(img)!r}], detector={str(ckpt)!r})\n"
        f"e = fakescope.explain({str(img)!r}, detector={str(ckpt)!r})\n"
        "print(rows[0].score, e.image_heatmap.shape, e.method)",
        tmp_path,
    )
    assert api.returncode == 0, api.stderr
    score, *_ = api.stdout.split()
    assert float(score) == row["score"]
    assert "(60, 90) occlusion" in api.stdout


def test_a_command_that_needs_torch_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "data" / "real").mkdir(parents=True)
    out = run_without_training_stack(
        cli("train", str(tmp_path / "data"), "--out", str(tmp_path / "run")), tmp_path
    )
    assert out.returncode == 1
    assert "fakescope train needs the 'train' extra" in out.stderr
    assert "pip install 'fakescope[train]'" in out.stderr
    assert "download.pytorch.org/whl/cpu" in out.stderr  # how to get CPU-only torch
    assert "Traceback" not in out.stderr


def test_a_timm_checkpoint_names_the_train_extra(tmp_path: Path) -> None:
    from fakescope.models import create_detector, save_checkpoint

    from .helpers import TINY_MODEL

    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", create_detector(TINY_MODEL, img_size=32))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    out = run_without_training_stack(
        cli("predict", str(tmp_path / "a.png"), "--detector", str(ckpt)), tmp_path
    )
    assert out.returncode == 1
    assert f"{ckpt} (a fine-tuned timm network) needs the 'train' extra" in out.stderr
    assert "pip install 'fakescope[train]'" in out.stderr and "Traceback" not in out.stderr


def test_models_lists_the_built_ins_and_says_what_training_needs(tmp_path: Path) -> None:
    out = run_without_training_stack(cli("models"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "builtin:clip-layers" in out.stdout
    assert "training needs the 'train' extra" in out.stdout


def test_scan_names_the_ray_extra(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    out = run_without_training_stack(
        cli("scan", str(tmp_path / "in"), str(tmp_path / "out")), tmp_path
    )
    assert out.returncode == 1
    assert "fakescope scan needs the 'ray' extra" in out.stderr
    assert "pip install 'fakescope[ray]'" in out.stderr


def test_a_scan_actor_scores_an_onnx_detector_with_the_ray_extra_alone(tmp_path: Path) -> None:
    """``pip install 'fakescope[ray]'`` brings pandas and pyarrow but no torch: the scan's actor
    opens a probe on an ONNX encoder (as the default built-in is) without importing torch."""
    ckpt = tiny_probe_checkpoint(tmp_path)
    imgs = [tmp_path / f"{i}.png" for i in range(3)]
    rng = np.random.default_rng(1)
    for img in imgs:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(img)
    body = (
        "import json, pandas as pd\n"
        "from fakescope.infer.backends import as_ref\n"
        "from fakescope.scan.ray_scan import ScorerActor\n"
        f"paths = {[str(p) for p in imgs]!r}\n"
        f"actor = ScorerActor(as_ref({str(ckpt)!r}), batch_size=2, threads=1)\n"
        "batch = pd.DataFrame({'path': paths, '_open': paths, '_part': [0] * 3, '_i': [0, 1, 2]})\n"
        "print(json.dumps(actor(batch).column('score').to_pylist()))\n"
    )
    ray_extra = tuple(m for m in TRAINING_STACK if m not in ("pandas", "pyarrow", "ray"))
    code = RUNNER.format(blocked=ray_extra, body=body)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    want = [r.score for r in fakescope.predict([str(p) for p in imgs], detector=ckpt)]
    assert json.loads(out.stdout.splitlines()[-1]) == want


def test_a_video_and_its_timeline_need_no_training_stack(tmp_path: Path) -> None:
    ckpt = tiny_probe_checkpoint(tmp_path)
    clip = write_clip(tmp_path / "clip.mp4", [0.0, 0.5, 1.0, 1.5], noise=True)
    out = run_without_training_stack(
        cli("predict", str(clip), "--detector", str(ckpt), "--timeline", str(tmp_path / "tl")),
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[0])
    assert row["kind"] == "video" and row["n_frames"] >= 2 and row["error"] is None
    assert row["timeline"] and Path(row["timeline"]).is_file()


def test_adapt_names_the_train_extra(tmp_path: Path) -> None:
    out = run_without_training_stack(
        cli("adapt", str(tmp_path), "--out", str(tmp_path / "mine.safetensors")), tmp_path
    )
    assert out.returncode == 1 and "fakescope adapt needs the 'train' extra" in out.stderr
