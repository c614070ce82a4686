"""Benchmark: how well each detector family generalises beyond the generator it was trained on.

Every family is trained on the shared dev set (SD1.x fakes vs COCO/ImageNet reals) with ONE seeded
split (``runs/generalise/splits.csv``, made once and reused), then scored on out-of-distribution
(OOD) checks that are built once under ``runs/ood/``:

* ``video``    frames of the video-spotdiff clips (8 per clip; 512 short side, centre crop 512,
               JPEG q90: the held-out sets' normalisation); a generator none of the families saw.
* ``soc384``   the test split downscaled to 384 px, then JPEG q75 (social-media style re-save).
* ``soc448``   the test split centre-cropped to 448 px, then JPEG q60.
* ``hnorm``    the test split re-encoded as JPEG q90 (the held-out normalisation).
* ``demo``     the fakescope demo set (96 px skimage crops vs autoencoder re-syntheses), left at
               96 px: each detector's own preprocessing handles the size (resize-mode models
               upscale it, the crop-mode NPR CNN pads it to 224 with zeros).

Families: ``finetune-effnet``, ``clip-probe`` (pool embed), ``clip-probe-cls_patch``,
``clip-probe-patch_mean``, ``npr-cnn`` (MobileNetV2 on neighbouring-pixel residuals of native
224 px crops) and ``fusion`` (stacking of the CLIP probe and the artefact CNN with the better
validation AUC, fitted on val only). Training-data tricks, as extra TRAIN rows:
``+aug`` (a JPEG q60-90 / downscale 0.5-1.0 re-saved copy of every train image) and ``+resynth``
(train-split reals re-synthesised by the demo autoencoder, as extra fakes).

Not a test: run it by hand, e.g. ``python bench/generalise.py --only clip-probe,fusion``. Trained
runs are reused unless ``--force``; results go to ``runs/generalise/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fakescope.config import TrainConfig
from fakescope.data.manifest import build_manifest
from fakescope.data.splits import load_splits, make_splits, save_splits
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.scoring import score_frame
from fakescope.models.checkpoint import load_detector, save_checkpoint
from fakescope.models.detector import Detector

ROOT = Path(__file__).resolve().parents[2]
REPO = Path(__file__).resolve().parents[1]
DATA = ROOT / "shared/data/sd14-coco-imagenet"
VIDEO = ROOT / "shared/data/video-spotdiff"
WEIGHTS = ROOT / "shared/weights"
CLIP = WEIGHTS / "clip_vit_b16_openai_visual.int8.onnx"
EFFNET = WEIGHTS / "tf_efficientnet_lite0.in1k.safetensors"
MOBILENET = WEIGHTS / "mobilenetv2_100.backbone_in1k.safetensors"
OUT = REPO / "runs/generalise"
OOD = REPO / "runs/ood"
WORKERS = 2
SEED = 0
OOD_CHECKS = ("video", "soc384", "soc448", "hnorm", "demo")
NEW_GENERATOR_CHECKS = ("video", "demo")
FRAMES_PER_CLIP = 8
RESYNTH_STEPS = 1000  # the demo's 200 steps leave a visible colour cast on 512 px photos

log = logging.getLogger("generalise")


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One trained detector: a name, the config fields that define it, and a training-data trick."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    tricks: tuple[str, ...] = ()


def _probe(pool: str) -> dict[str, Any]:
    return {"family": "probe", "model": "clip_vit_b16", "backbone": str(CLIP), "pool": pool}


EFFNET_FIELDS = {
    "model": "tf_efficientnet_lite0",
    "weights": str(EFFNET),
    "epochs": 5,
    "lr": 3e-4,
    "resize_mode": "resize",
}
NPR_FIELDS = {
    "model": "mobilenetv2_100",
    "weights": str(MOBILENET),
    "epochs": 5,
    "lr": 5e-4,
    "resize_mode": "crop",
    "input_filter": "npr",
}
FAMILIES: tuple[Family, ...] = (
    Family("finetune-effnet", EFFNET_FIELDS),
    Family("clip-probe", _probe("embed")),
    Family("clip-probe-cls_patch", _probe("cls_patch")),
    Family("clip-probe-patch_mean", _probe("patch_mean")),
    Family("npr-cnn", NPR_FIELDS),
    Family("clip-probe+aug", _probe("embed"), ("aug",)),
    Family("clip-probe+resynth", _probe("embed"), ("resynth",)),
    Family("clip-probe+aug+resynth", _probe("embed"), ("aug", "resynth")),
    Family("npr-cnn+aug", NPR_FIELDS, ("aug",)),
    Family("npr-cnn+resynth", NPR_FIELDS, ("resynth",)),
)
BY_NAME = {f.name: f for f in FAMILIES}
ARTEFACT_CANDIDATES = ("finetune-effnet", "npr-cnn")
ALL_NAMES = (*BY_NAME, "fusion")


# --------------------------------------------------------------------------------------------
# Image helpers
# --------------------------------------------------------------------------------------------


def save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    """Write an RGB image as JPEG (PIL's default 4:2:0 subsampling, like the dev set)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert("RGB").save(path, format="JPEG", quality=int(quality))


def short_side_centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize (Lanczos) so the short side is ``size``, then centre-crop ``size`` x ``size``."""
    w, h = img.size
    if min(w, h) != size:
        scale = size / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
        w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop ``size`` x ``size`` at native resolution."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def write_manifest(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` (path, label, group, source[, split]) as CSV, atomically (marks it complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# The split and the OOD checks
# --------------------------------------------------------------------------------------------


def shared_splits() -> Path:
    """The one seeded split every family uses (made with the library on first use)."""
    path = OUT / "splits.csv"
    if not path.exists():
        save_splits(make_splits(build_manifest(DATA), seed=SEED), path)
        log.info("made the split %s", path)
    return path


def test_rows(splits: Path) -> pd.DataFrame:
    """The test split of the shared split."""
    df = load_splits(splits)
    return df[df["split"] == "test"].reset_index(drop=True)


def video_frames(path: Path, n: int) -> list[Image.Image]:
    """``n`` uniformly spaced frames of a video, decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    picks = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return [frames[i] for i in picks]


def build_video(out: Path) -> list[dict[str, Any]]:
    """Frames of every clip, normalised like the held-out sets; label from the folder."""
    rows = []
    for label, folder in ((1, "fake"), (0, "real")):
        for clip in sorted((VIDEO / folder).glob("*.mp4")):
            for i, frame in enumerate(video_frames(clip, FRAMES_PER_CLIP)):
                target = out / folder / f"{clip.stem}_{i:02d}.jpg"
                save_jpeg(short_side_centre_crop(frame, 512), target, 90)
                rows.append({"path": str(target), "label": label, "group": clip.stem})
    return rows


def build_resaved(
    test: pd.DataFrame, out: Path, change: Callable[[Image.Image], Image.Image], quality: int
) -> list[dict[str, Any]]:
    """The test split passed through ``change`` and re-saved as JPEG at ``quality``."""
    rows = []
    for r in test.itertuples():
        with Image.open(r.path) as img:
            changed = change(img.convert("RGB"))
        target = out / ("fake" if r.label else "real") / f"{Path(r.path).stem}.jpg"
        save_jpeg(changed, target, quality)
        rows.append({"path": str(target), "label": int(r.label), "group": r.group})
    return rows


def build_demo(out: Path) -> list[dict[str, Any]]:
    """The demo set (96 px PNGs), left at its own size."""
    from fakescope.data.demo import make_demo_dataset

    folder = make_demo_dataset(out, n_per_class=150, size=96, seed=SEED)
    df = build_manifest(folder)
    return df[["path", "label", "group"]].to_dict("records")


def _downscale_384(img: Image.Image) -> Image.Image:
    return short_side_centre_crop(img, 384)  # a plain resize for the square dev images


def ood_manifests(splits: Path) -> dict[str, Path]:
    """Build (once) every OOD check as image files plus ``runs/ood/<check>.csv``."""
    test = test_rows(splits)
    builders: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
        "video": build_video,
        "soc384": lambda o: build_resaved(test, o, _downscale_384, 75),
        "soc448": lambda o: build_resaved(test, o, lambda im: centre_crop(im, 448), 60),
        "hnorm": lambda o: build_resaved(test, o, lambda im: short_side_centre_crop(im, 512), 90),
        "demo": build_demo,
    }
    out: dict[str, Path] = {}
    for name, build in builders.items():
        csv = OOD / f"{name}.csv"
        if not csv.exists():
            t0 = time.time()
            rows = [{**r, "source": name} for r in build(OOD / name)]
            write_manifest(rows, csv)
            log.info("built OOD check %s: %d images in %.0fs", name, len(rows), time.time() - t0)
        out[name] = csv
    return out


# --------------------------------------------------------------------------------------------
# Training-data tricks
# --------------------------------------------------------------------------------------------


def resave_copy(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """A random downscale (0.5-1.0, random filter) and a JPEG quality (60-90) for one image."""
    scale = rng.uniform(0.5, 1.0)
    w, h = img.size
    filters = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)
    resample = filters[int(rng.integers(len(filters)))]
    small = img.resize((max(8, round(w * scale)), max(8, round(h * scale))), resample)
    return small, int(rng.integers(60, 91))


def aug_rows(train: pd.DataFrame) -> list[dict[str, Any]]:
    """Write a re-saved copy of every train image to ``runs/ood/aug`` (once); same label."""
    csv = OOD / "aug.csv"
    if csv.exists():
        return pd.read_csv(csv).to_dict("records")
    rng = np.random.default_rng(SEED)
    rows = []
    for r in train.itertuples():
        with Image.open(r.path) as img:
            small, quality = resave_copy(img.convert("RGB"), rng)
        target = OOD / "aug" / ("fake" if r.label else "real") / f"{Path(r.path).stem}_aug.jpg"
        save_jpeg(small, target, quality)
        rows.append(
            {"path": str(target), "label": int(r.label), "group": r.group, "source": r.source}
        )
    write_manifest(rows, csv)
    return rows


def resynth_rows(train: pd.DataFrame) -> list[dict[str, Any]]:
    """Re-synthesise every train-split real photo (once) as an extra fake (JPEG q95, 512 px)."""
    from fakescope.data.resynth import resynthesize_folder

    csv = OOD / "resynth.csv"
    if csv.exists():
        return pd.read_csv(csv).to_dict("records")
    reals = train[train["label"] == 0]["path"].tolist()
    t0 = time.time()
    paths = resynthesize_folder(
        reals, OOD / "resynth", size=512, seed=SEED, train_steps=RESYNTH_STEPS
    )
    log.info("re-synthesised %d train reals in %.0fs", len(paths), time.time() - t0)
    rows = [{"path": str(p), "label": 1, "group": "resynth", "source": "resynth"} for p in paths]
    write_manifest(rows, csv)
    return rows


TRICKS: dict[str, Callable[[pd.DataFrame], list[dict[str, Any]]]] = {
    "aug": aug_rows,
    "resynth": resynth_rows,
}


def splits_with_tricks(splits: Path, tricks: Sequence[str]) -> Path:
    """The shared split plus extra train rows from ``tricks`` (the same val and test rows)."""
    if not tricks:
        return splits
    path = OUT / f"splits+{'+'.join(tricks)}.csv"
    if path.exists():
        return path
    df = load_splits(splits)
    train = df[df["split"] == "train"]
    extra = [row for t in tricks for row in TRICKS[t](train)]
    both = pd.concat([df, pd.DataFrame(extra).assign(split="train")], ignore_index=True)
    save_splits(both, path)
    return path


# --------------------------------------------------------------------------------------------
# Training and scoring
# --------------------------------------------------------------------------------------------


def family_config(fam: Family, splits: Path) -> TrainConfig:
    """The full TrainConfig of a family."""
    return TrainConfig(
        data=str(DATA),
        splits=str(splits_with_tricks(splits, fam.tricks)),
        out=str(OUT / fam.name),
        seed=SEED,
        workers=WORKERS,
        **fam.fields,
    )


def is_trained(cfg: TrainConfig) -> bool:
    """A finished run made with exactly this config (its test report written)."""
    run_dir = cfg.run_dir()
    cfg_file, done = run_dir / "config.json", run_dir / "bench.json"
    if not (cfg_file.exists() and done.exists() and (run_dir / "report/metrics.json").exists()):
        return False
    return json.loads(cfg_file.read_text()) == json.loads(json.dumps(cfg.to_dict()))


_TRAINED_NOW: set[str] = set()  # runs trained in this invocation (--force retrains them once)


def train(fam: Family, splits: Path, force: bool) -> Path:
    """Train, calibrate and report a family unless a matching finished run exists."""
    from fakescope.train.run import run

    cfg = family_config(fam, splits)
    run_dir = cfg.run_dir()
    if is_trained(cfg) and (not force or fam.name in _TRAINED_NOW):
        log.info("reusing %s", run_dir)
        return run_dir
    log.info("training %s", fam.name)
    t0 = time.time()
    run(cfg, force=True)
    (run_dir / "bench.json").write_text(json.dumps({"train_s": time.time() - t0}))
    _TRAINED_NOW.add(fam.name)
    return run_dir


def auc_with_ci(df: pd.DataFrame) -> dict[str, Any]:
    """ROC-AUC (with a 1000-resample bootstrap interval) and accuracy of a scored frame."""
    m = compute_metrics(df["label"].to_numpy(), df["score"].to_numpy())
    return {
        "n": m["n"],
        "auc": m["roc_auc"],
        "auc_ci": m["roc_auc_ci"],
        "accuracy": m["accuracy"],
    }


def score_checks(det: Detector, checks: dict[str, Path], out: Path) -> dict[str, dict[str, Any]]:
    """Score every OOD check, keep the predictions and return AUCs (cached in ``ood.json``)."""
    cache = out / "ood.json"
    done: dict[str, dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else {}
    for name, csv in checks.items():
        if name in done:
            continue
        df = pd.read_csv(csv)
        scored, failures = score_frame(det, df, workers=WORKERS)
        if failures:
            log.warning("%s: %d %s images failed to score", out.name, len(failures), name)
        (out / "ood").mkdir(parents=True, exist_ok=True)
        scored.to_csv(out / "ood" / f"{name}.csv", index=False)
        done[name] = auc_with_ci(scored)
        cache.write_text(json.dumps(done, indent=1))
    return {k: done[k] for k in checks}


def images_per_second(det: Detector, df: pd.DataFrame) -> float:
    """End-to-end scoring speed (decode, preprocess, model) with an empty embedding cache."""
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.time()
        scored, _ = score_frame(det, df, workers=WORKERS, cache_dir=cache_dir)
        return len(scored) / (time.time() - t0)


def bench_info(run_dir: Path, det: Detector, test: pd.DataFrame) -> dict[str, Any]:
    """Train time and scoring speed, measured once per trained run (kept in ``bench.json``)."""
    path = run_dir / "bench.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    if "images_per_s" not in info:
        info["images_per_s"] = images_per_second(det, test)
        path.write_text(json.dumps(info))
    return info


def val_auc(det: Detector, splits: Path) -> float:
    """ROC-AUC on the validation split (used to pick the fusion's artefact member)."""
    df = load_splits(splits)
    scored, _ = score_frame(det, df[df["split"] == "val"].reset_index(drop=True), workers=WORKERS)
    return float(compute_metrics(scored["label"], scored["score"], n_boot=0)["roc_auc"])


def evaluate_family(
    fam: Family, splits: Path, checks: dict[str, Path], force: bool
) -> dict[str, Any]:
    """Train (or reuse) one family and collect its figures."""
    run_dir = train(fam, splits, force)
    det = load_detector(run_dir / "best.safetensors")
    rep = json.loads((run_dir / "report/metrics.json").read_text())
    info = bench_info(run_dir, det, test_rows(splits))
    return {
        "family": fam.name,
        "arch": det.spec.arch,
        "train_s": info["train_s"],
        "test_auc": rep["roc_auc"],
        "test_auc_ci": rep["roc_auc_ci"],
        "ood": score_checks(det, checks, run_dir),
        "images_per_s": info["images_per_s"],
    }


def evaluate_fusion(splits: Path, checks: dict[str, Path], force: bool) -> dict[str, Any]:
    """Stack the CLIP probe with the artefact CNN of better val AUC; fitted on val rows only."""
    probe_ckpt = train(BY_NAME["clip-probe"], splits, force) / "best.safetensors"
    probe = load_detector(probe_ckpt)
    cands = {n: train(BY_NAME[n], splits, force) / "best.safetensors" for n in ARTEFACT_CANDIDATES}
    aucs = {n: val_auc(load_detector(p), splits) for n, p in cands.items()}
    best = max(aucs, key=lambda n: aucs[n])
    log.info("fusion: val AUCs %s -> artefact member %s", aucs, best)
    run_dir = OUT / "fusion"
    ckpt = run_dir / "best.safetensors"
    meta_path = run_dir / "fusion.json"
    members = {p.parent.name: p.stat().st_mtime for p in (probe_ckpt, cands[best])}
    old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if force or old.get("members") != members or not ckpt.exists():
        fused, fit_s = fit_fusion(probe, load_detector(cands[best]), splits)
        run_dir.mkdir(parents=True, exist_ok=True)
        for f in (run_dir / "ood.json", run_dir / "bench.json"):
            f.unlink(missing_ok=True)
        save_checkpoint(ckpt, fused, **fused.meta)
        meta_path.write_text(json.dumps({"members": members, "val_aucs": aucs, "train_s": fit_s}))
        (run_dir / "bench.json").write_text(json.dumps({"train_s": fit_s}))
    det = load_detector(ckpt)
    test = test_rows(splits)
    scored, _ = score_frame(det, test, workers=WORKERS)
    ind = auc_with_ci(scored)
    info = bench_info(run_dir, det, test)
    return {
        "family": "fusion",
        "arch": det.spec.arch,
        "fusion_weights": det.meta.get("fusion_fit", {}).get("weights"),
        "train_s": info["train_s"],
        "test_auc": ind["auc"],
        "test_auc_ci": ind["auc_ci"],
        "ood": score_checks(det, checks, run_dir),
        "images_per_s": info["images_per_s"],
    }


def fit_fusion(probe: Detector, artefact: Detector, splits: Path) -> tuple[Detector, float]:
    """``fuse()`` on the shared split (it uses the val rows only); returns the time it took."""
    from fakescope.train.fusion import fuse

    t0 = time.time()
    fused = fuse([probe, artefact], load_splits(splits), method="stacking", workers=WORKERS)
    return fused, time.time() - t0


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def mean_auc(ood: dict[str, dict[str, Any]], names: Sequence[str]) -> float | None:
    """Mean AUC over the named checks that have one."""
    vals = [ood[n]["auc"] for n in names if n in ood and ood[n]["auc"] is not None]
    return float(np.mean(vals)) if vals else None


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_table(results: list[dict[str, Any]]) -> str:
    """The plain-text results table."""
    head = ["family", "train s", "test AUC [95% CI]", *OOD_CHECKS, "OOD mean", "newgen", "img/s"]
    lines = []
    for r in results:
        ci = r["test_auc_ci"]
        test = f"{_f(r['test_auc'])} [{_f(ci[0])},{_f(ci[1])}]" if ci else _f(r["test_auc"])
        ood = [_f(r["ood"].get(c, {}).get("auc")) for c in OOD_CHECKS]
        lines.append(
            [
                r["family"],
                _f(r["train_s"], ".0f"),
                test,
                *ood,
                _f(r["ood_mean"]),
                _f(r["newgen_mean"]),
                _f(r["images_per_s"], ".1f"),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    rows = [head, ["-" * w for w in widths], *lines]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows
    )


def save_results(new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge ``new`` into ``results.json`` (other families' entries are kept) and return all."""
    path = OUT / "results.json"
    old = json.loads(path.read_text())["results"] if path.exists() else []
    merged = {r["family"]: r for r in old} | {r["family"]: r for r in new}
    ordered = [merged[n] for n in ALL_NAMES if n in merged]
    doc = {"ood_checks": list(OOD_CHECKS), "new_generator_checks": list(NEW_GENERATOR_CHECKS)}
    path.write_text(json.dumps({**doc, "results": ordered}, indent=1))
    return ordered


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(ALL_NAMES)}")
    p.add_argument("--force", action="store_true", help="retrain runs that already exist")
    return p.parse_args(argv)


def selected(only: str) -> list[str]:
    """The family names to run, in canonical order."""
    if not only:
        return list(ALL_NAMES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_NAMES))
    if unknown:
        raise SystemExit(f"unknown family {unknown}; choose from {', '.join(ALL_NAMES)}")
    return [n for n in ALL_NAMES if n in names]


def check_inputs() -> None:
    """Stop with a clear message when the shared data or weights are absent."""
    for path in (DATA, VIDEO, CLIP, EFFNET, MOBILENET):
        if not path.exists():
            raise SystemExit(f"generalise bench needs {path}; it is not here")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    check_inputs()
    t_start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    splits = shared_splits()
    checks = ood_manifests(splits)
    results = []
    for name in selected(args.only):
        t0 = time.time()
        if name == "fusion":
            r = evaluate_fusion(splits, checks, args.force)
        else:
            r = evaluate_family(BY_NAME[name], splits, checks, args.force)
        r["ood_mean"] = mean_auc(r["ood"], OOD_CHECKS)
        r["newgen_mean"] = mean_auc(r["ood"], NEW_GENERATOR_CHECKS)
        results.append(r)
        log.info("%s done in %.0fs", name, time.time() - t0)
    everything = save_results(results)
    print("\n== generalisation bench (dev: sd14-coco-imagenet; one split, seed 0) ==")
    print(format_table(everything))
    print(f"OOD mean = mean AUC over {', '.join(OOD_CHECKS)}; newgen = mean over video, demo")
    print(f"results: {OUT / 'results.json'}; wall {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
