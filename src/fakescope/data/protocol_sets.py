"""Build the image sets of the selection protocol: checks that image content cannot win.

A detector trained on art-heavy fakes and photo reals can score 0.99 by learning "art = fake".
These sets are built so that such a shortcut does not pay:

* ``spotdiff``: frames of AI and real video clips of the *same* scenes (content-matched pairs),
  grouped by clip so that intervals resample clips, not frames.
* ``pool-photo``: photographic fakes (prompts that ask for a photo) against real photos only.
* ``styled`` (a control): real photos against painterly re-renderings of the *same* photos made
  with classical filters (no generator). Both are real; a detector whose score follows
  "looks like a painting" separates them, and should not.
* ``squash`` (a control): real photos centre-cropped against the same photos squashed to a square
  from a 3:2 crop (the dev set's reals were squashed, its fakes were born square).

Every image goes through one normalisation (short side 512, centre square, JPEG 90), the same as
the held-out sets. The result is a folder with ``manifest.csv``
(``path,label,source,group,set,role``): ``role`` is ``test`` for generalisation sets and
``control`` for shortcut controls.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter, ImageOps

from fakescope.data.images import ImageLoadError, load_image
from fakescope.data.normalise import normalised_jpeg_bytes

logger = logging.getLogger(__name__)

FRAMES_PER_CLIP = 24
#: Prompts of the pool (its ``group``, less the trailing number) that ask for an everyday scene a
#: camera could have taken: the fakes made from them are compared with real photos only.
PHOTO_PROMPTS = (
    "girl-lost-forest",
    "girl-putting-make-up-mirror",
    "mick-jagger-eating-hamburger-national",
    "new-type-fish-discovered-deepest",
    "pretty-girl-putting-makeup",
    "pretty-girl-wearing-red-cape",
    "rainy-tokyo-street-scene-night",
    "realistic-beautiful-woman-night-time",
    "sale-baby-shoes-never-worn",
    "two-ships-passing-night",
    "woman-coffeeshop-working-her-laptop",
)
CONTROLS = ("styled", "squash")


def _save(img: Image.Image, out: Path) -> str:
    """Write ``img`` normalised (512, JPEG 90) to ``out``; return the path as a string."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(normalised_jpeg_bytes(img))
    return str(out)


def spotdiff_rows(
    video_dir: Path, out: Path, skipped: list[dict], frames: int = FRAMES_PER_CLIP
) -> list[dict]:
    """``frames`` evenly spaced frames of every clip under ``video_dir/{fake,real}``.

    A clip that cannot be decoded is added to ``skipped`` with the reason; the others go on.
    """
    from fakescope.data.video import VideoError, sample_frames

    rows = []
    for label in ("fake", "real"):
        for clip in sorted((video_dir / label).glob("*.mp4")):
            scene = clip.stem.split("_")[0].lower()
            try:
                picked = list(sample_frames(clip, mode="uniform", n=frames, max_frames=frames))
            except VideoError as e:
                skipped.append({"path": str(clip), "reason": e.reason})
                continue
            for f in picked:
                path = _save(f.image, out / "spotdiff" / label / f"{clip.stem}_{f.index:05d}.jpg")
                rows.append(_row(path, label, f"video-{label}", clip.stem, "spotdiff", scene))
    return rows


def _load(path: str, skipped: list[dict]) -> Image.Image | None:
    """The image, or None with the file and the reason added to ``skipped``."""
    try:
        return load_image(path)
    except ImageLoadError as e:
        skipped.append({"path": str(path), "reason": e.reason})
        return None


def _row(path: str, label: str, source: str, group: str, set_: str, scene: str = "") -> dict:
    role = "control" if set_ in CONTROLS else "test"
    return {
        "path": path,
        "label": label,
        "source": source,
        "group": group,
        "set": set_,
        "scene": scene,
        "role": role,
    }


def is_photo_prompt(group: str) -> bool:
    """Whether a pool group (prompt slug and number) is one of :data:`PHOTO_PROMPTS`."""
    return re.sub(r"-\d+$", "", str(group)) in PHOTO_PROMPTS


def split_pool_reals(pool: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Halve the pool's real photos, stratified by source: (for training, for the protocol)."""
    reals = pool[pool["label"] == "real"]
    rng = np.random.default_rng(seed)
    held = [g.iloc[rng.permutation(len(g))[: len(g) // 2]] for _, g in reals.groupby("source")]
    test = pd.concat(held)
    return reals.drop(test.index), test


def pool_photo_rows(
    pool: pd.DataFrame, reals: pd.DataFrame, out: Path, skipped: list[dict]
) -> list[dict]:
    """Photographic fakes of the pool against held-back real photos."""
    fakes = pool[(pool["label"] == "fake") & pool["group"].astype(str).map(is_photo_prompt)]
    rows = []
    for df, label in ((fakes, "fake"), (reals, "real")):
        for r in df.itertuples():
            img = _load(r.path, skipped)
            if img is None:
                continue
            path = _save(img, out / "pool-photo" / label / Path(r.path).name)
            rows.append(_row(path, label, str(r.source), str(r.group), "pool-photo"))
    return rows


def painterly(img: Image.Image, style: int) -> Image.Image:
    """A classical (non-generative) painterly rendering of a photo: one of three styles."""
    img = img.convert("RGB")
    if style == 0:  # oil-like: mode filter, then smoothing
        return img.filter(ImageFilter.ModeFilter(7)).filter(ImageFilter.SMOOTH_MORE)
    if style == 1:  # poster: few colours with dark edges
        flat = ImageOps.posterize(img.filter(ImageFilter.MedianFilter(5)), 3)
        edges = (
            img.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
        )
        return Image.composite(Image.new("RGB", img.size), flat, edges)
    # watercolour-like: strong blur of colour, detail from a softened luminance
    colour = img.filter(ImageFilter.GaussianBlur(4))
    return Image.blend(colour, ImageOps.autocontrast(img.filter(ImageFilter.EMBOSS)), 0.15)


def squashed(img: Image.Image) -> Image.Image:
    """The central 3:2 crop of a square photo, stretched back to a square."""
    w, h = img.size
    ch = round(h * 2 / 3)
    top = (h - ch) // 2
    return img.crop((0, top, w, top + ch)).resize((w, h), Image.Resampling.LANCZOS)


def control_rows(
    reals: pd.DataFrame, out: Path, skipped: list[dict], limit: int = 200
) -> list[dict]:
    """The ``styled`` and ``squash`` controls on up to ``limit`` held-back real photos.

    Label 1 ("fake") marks the altered copy, so an AUC near 0.5 means the detector ignores the
    alteration; the group is the photo, shared by both copies.
    """
    rows = []
    for i, r in enumerate(reals.head(limit).itertuples()):
        img = _load(r.path, skipped)
        if img is None:
            continue
        stem, group = Path(r.path).stem, f"photo-{i}"
        for set_, altered in (("styled", painterly(img, i % 3)), ("squash", squashed(img))):
            base = _save(img, out / set_ / "real" / f"{stem}.jpg")
            alt = _save(altered, out / set_ / "altered" / f"{stem}.jpg")
            rows.append(_row(base, "real", str(r.source), group, set_))
            rows.append(_row(alt, "fake", f"{set_}-copy", group, set_))
    return rows


def read_pool(pool_dir: str | Path) -> pd.DataFrame:
    """The pool's manifest with absolute paths."""
    pool_dir = Path(pool_dir)
    if not (pool_dir / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"no pool manifest at {pool_dir / 'manifest.csv'}; build the pool with "
            "shared/tools/build_pool.py OUT --mirror DIR"
        )
    df = pd.read_csv(pool_dir / "manifest.csv")
    df["path"] = [str(pool_dir / p) for p in df["path"]]
    return df


def build_protocol_sets(
    out: str | Path, video_dir: str | Path | None, pool_dir: str | Path | None
) -> pd.DataFrame:
    """Build every set whose source is given into ``out`` and write ``out/manifest.csv``.

    Args:
        out: the folder to write.
        video_dir: ``video-spotdiff`` (with ``fake/`` and ``real/`` clips), or None to skip.
        pool_dir: the multi-generator pool from ``build_pool.py``, or None to skip.

    Returns:
        The manifest. Files that could not be read are left out, listed with the reason in
        ``out/skipped.csv`` and logged.
    """
    out = Path(out)
    rows: list[dict] = []
    skipped: list[dict] = []
    if video_dir is not None:
        rows += spotdiff_rows(Path(video_dir), out, skipped)
    if pool_dir is not None:
        pool = read_pool(Path(pool_dir))
        _, held = split_pool_reals(pool)
        rows += pool_photo_rows(pool, held, out, skipped)
        rows += control_rows(held, out, skipped)
    if not rows:
        raise ValueError("no protocol sets to build: give the video folder, the pool, or both")
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(out / "skipped.csv", index=False)
    for s in skipped:
        logger.warning("%s: left out of the protocol sets: %s", s["path"], s["reason"])
    df = pd.DataFrame(rows)
    df["path"] = [str(Path(p).relative_to(out)) for p in df["path"]]
    df.to_csv(out / "manifest.csv", index=False)
    return df
