"""Near-duplicate images within and across splits, found with perceptual hashes.

Every image gets a 64-bit DCT perceptual hash (``imagehash.phash``), a 64-bit difference hash
(``imagehash.dhash``, reported for judging pairs) and the sha256 of its bytes. Two images are a
pair when their pHashes differ in at most ``threshold`` of 64 bits. The search XORs the hash
vector against itself in row chunks and counts bits with numpy (``bitwise_count``), so it is
vectorised and needs no Python loop over pairs: 100k images take well under a minute.

How the default threshold (6 bits) was tuned, on the 900 images of the shared
``sd14-coco-imagenet`` set (512x512 JPEG q95) and 150 originals picked at random from it:

* Copies of one image: JPEG 75/50/30, downscale x0.5 and x0.25, resize x0.9 then JPEG 85, the
  "social" chain (1080 px, JPEG 75), Gaussian blur sigma 1 and an aspect squash to 512x400 stay
  within 4 bits for 99-100% of the images (median 0, 95th percentile at most 2); a few JPEG 50/30
  copies reach 8 bits. pHash is not made for crops: a centre crop keeping 95% of each side is within
  4 bits for 34% of the images and within 6 bits for 65% (90%: 5% and 17%).
* Distinct images (404,550 pairs): 3 pairs within 2 bits, all true duplicates (one identical file,
  two re-renders that differ by a few pixels); at 4 bits one more (a blurred image and a sharp one of
  the same composition); at 6 bits a fifth (two generations of one prompt with the same layout); 8
  at 10 bits. The median distance from an image to its nearest distinct neighbour is 18 bits and
  99% of images are more than 6 bits from every other.

So 6 bits keeps every re-encoded or resized copy and most mild crops while adding about one false
pair per 200,000 distinct pairs, and the false pairs it adds are near-identical compositions that
are worth a look anyway. Use 4 for very large sets, 8-10 to catch more crops at the cost of more
look-alikes. Pairs are listed with both distances and whether the files are byte-identical.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, JpegImagePlugin

from fakescope.data.images import DEFAULT_MAX_PIXELS, to_rgb

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 6
HASH_BITS = 64
SPLIT_PAIRS = (("train", "test"), ("train", "val"), ("val", "test"))
PAIR_COLUMNS = (
    "path_a",
    "path_b",
    "phash_distance",
    "dhash_distance",
    "identical_file",
    "label_a",
    "label_b",
    "split_a",
    "split_b",
    "source_a",
    "source_b",
)
_CHUNK_ELEMENTS = 1 << 22  # about 32 MiB of uint64 per XOR block
_DRAFT = (256, 256)
_DIGEST_CHUNK = 1 << 20


def _hash_bits(hash_obj: Any) -> int:
    """An ``imagehash.ImageHash`` of 64 bits as a Python int (row-major, first bit highest)."""
    bits = np.asarray(hash_obj.hash, dtype=bool).reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _open_for_hash(path: str) -> Image.Image:
    """Decode an image as RGB for hashing; large JPEGs are decoded at reduced scale (draft)."""
    with Image.open(path) as img:
        width, height = img.size
        if width * height > DEFAULT_MAX_PIXELS:
            raise ValueError(f"image is {width}x{height}, over the pixel limit")
        if isinstance(img, JpegImagePlugin.JpegImageFile):
            img.draft("RGB", _DRAFT)
        img.load()
        return to_rgb(img).copy()


def _sha256(path: str) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def image_hashes(path: str) -> dict[str, Any]:
    """Perceptual hashes and byte digest of one file.

    Args:
        path: An image file.

    Returns:
        ``{"path", "phash", "dhash", "sha256", "error"}``; the hashes are ints of 64 bits, or None
        with ``error`` set when the file cannot be decoded.
    """
    import imagehash

    row: dict[str, Any] = {"path": path, "phash": None, "dhash": None, "sha256": None}
    row["error"] = None
    try:
        row["sha256"] = _sha256(path)
        img = _open_for_hash(path)
        row["phash"] = _hash_bits(imagehash.phash(img))
        row["dhash"] = _hash_bits(imagehash.dhash(img))
    except Exception as exc:  # any decoder failure is one row, not a failed audit
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def _hash_all(paths: Sequence[str], workers: int) -> list[dict[str, Any]]:
    """Hash every file, in processes when ``workers > 0`` (decoding is CPU bound)."""
    if workers <= 0 or len(paths) < 2:
        return [image_hashes(p) for p in paths]
    chunksize = max(1, min(64, len(paths) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(image_hashes, paths, chunksize=chunksize))


def hash_frame(df: pd.DataFrame, workers: int = 0) -> pd.DataFrame:
    """Hash every row of a manifest.

    Args:
        df: A frame with a ``path`` column.
        workers: Processes for decoding; 0 works in this process.

    Returns:
        ``path, phash, dhash, sha256, error`` per row, in ``df``'s order (hashes as Python ints,
        or None for files that failed).
    """
    rows = _hash_all([str(p) for p in df["path"]], workers)
    out = pd.DataFrame(rows, columns=["path", "phash", "dhash", "sha256", "error"])
    failed = int(out["error"].notna().sum())
    if failed:
        logger.warning("could not hash %d of %d files", failed, len(out))
    return out


def _as_uint64(values: Iterable[int]) -> np.ndarray:
    """Ints of 64 bits as a uint64 array."""
    return np.array([int(v) for v in values], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    as_bytes = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.uint8)


def close_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All index pairs ``i < j`` whose 64-bit hashes differ in at most ``threshold`` bits.

    Args:
        hashes: uint64 array of hashes.
        threshold: Largest Hamming distance that counts as a pair (0..64).

    Returns:
        ``(i, j, distance)`` arrays sorted by ``i`` then ``j``.
    """
    h = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    n = len(h)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, chunk):
        block = h[start : start + chunk]
        dist = _popcount(block[:, None] ^ h[None, :])
        rows = np.arange(start, start + len(block))[:, None]
        mask = (dist <= threshold) & (np.arange(n)[None, :] > rows)
        bi, bj = np.nonzero(mask)
        found_i.append(bi + start)
        found_j.append(bj)
        found_d.append(dist[bi, bj])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (
        np.concatenate(found_i).astype(np.int64),
        np.concatenate(found_j).astype(np.int64),
        np.concatenate(found_d).astype(np.int64),
    )


def _column(df: pd.DataFrame, name: str, idx: np.ndarray) -> list[Any]:
    """Values of ``df[name]`` at positions ``idx``, or empty strings when the column is absent."""
    if name not in df.columns:
        return [""] * len(idx)
    return df[name].astype(str).to_numpy()[idx].tolist()


def _pair_table(
    df: pd.DataFrame, hashes: pd.DataFrame, ok: np.ndarray, threshold: int
) -> pd.DataFrame:
    """The table of pairs among the hashed rows ``ok`` (positions in ``df``)."""
    ph = _as_uint64(hashes["phash"].to_numpy()[ok])
    dh = _as_uint64(hashes["dhash"].to_numpy()[ok])
    i, j, dist = close_pairs(ph, threshold)
    a, b = ok[i], ok[j]
    sha = hashes["sha256"].to_numpy()
    labels = df["label"].to_numpy() if "label" in df.columns else np.full(len(df), -1)
    table = pd.DataFrame(
        {
            "path_a": df["path"].astype(str).to_numpy()[a],
            "path_b": df["path"].astype(str).to_numpy()[b],
            "phash_distance": dist,
            "dhash_distance": _popcount(dh[i] ^ dh[j]).astype(np.int64),
            "identical_file": sha[a] == sha[b],
            "label_a": labels[a].astype(np.int64),
            "label_b": labels[b].astype(np.int64),
            "split_a": _column(df, "split", a),
            "split_b": _column(df, "split", b),
            "source_a": _column(df, "source", a),
            "source_b": _column(df, "source", b),
        },
        columns=list(PAIR_COLUMNS),
    )
    return table.sort_values(["phash_distance", "path_a", "path_b"], kind="mergesort").reset_index(
        drop=True
    )


def _split_key(a: str, b: str) -> str:
    """``train-test`` style key for an unordered split pair, in train/val/test order."""
    order = {"train": 0, "val": 1, "test": 2}
    first, second = sorted((a, b), key=lambda s: (order.get(s, 9), s))
    return f"{first}-{second}"


def leakage_counts(pairs: pd.DataFrame) -> dict[str, Any]:
    """Count pairs per split pair and the images of val/test that have a copy in train.

    Args:
        pairs: The table from :func:`find_duplicates`.

    Returns:
        ``{"pairs_by_split": {"train-test": n, "train-train": n, ...}, "leaked_images":
        {"test": n, "val": n}, "cross_split_pairs": n}``; the leaked counts are distinct images of
        that split with at least one near-duplicate in train (test also counts copies in val).
    """
    by_split: dict[str, int] = {f"{a}-{b}": 0 for a, b in SPLIT_PAIRS}
    leaked: dict[str, set[str]] = {"test": set(), "val": set()}
    cross = 0
    for row in pairs.itertuples(index=False):
        sa, sb = str(row.split_a), str(row.split_b)
        if not sa and not sb:
            continue
        key = _split_key(sa, sb)
        by_split[key] = by_split.get(key, 0) + 1
        cross += int(sa != sb)
        for mine, other, path in ((sa, sb, row.path_a), (sb, sa, row.path_b)):
            if mine == "test" and other in ("train", "val"):
                leaked["test"].add(path)
            if mine == "val" and other == "train":
                leaked["val"].add(path)
    return {
        "pairs_by_split": by_split,
        "leaked_images": {k: len(v) for k, v in leaked.items()},
        "cross_split_pairs": cross,
    }


def _clusters(pairs: pd.DataFrame) -> int:
    """Number of connected groups of near-duplicates (union-find over the pairs)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs["path_a"], pairs["path_b"], strict=True):
        ra, rb = find(str(a)), find(str(b))
        if ra != rb:
            parent[ra] = rb
    return len({find(x) for x in list(parent)})


def find_duplicates(
    df: pd.DataFrame,
    threshold: int = DEFAULT_THRESHOLD,
    workers: int = 0,
    hashes: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Find near-duplicate pairs within and across splits.

    Args:
        df: A manifest (``path``, ``label``; ``split`` and ``source`` used when present).
        threshold: Largest pHash Hamming distance (of 64 bits) that counts as a duplicate.
        workers: Processes for decoding and hashing.
        hashes: Precomputed :func:`hash_frame` output for ``df`` (same order), to skip hashing.

    Returns:
        ``(pairs, summary)``. ``pairs`` has the columns of :data:`PAIR_COLUMNS`, closest first.
        ``summary`` holds ``threshold``, ``n_hashed``, ``n_failed``, ``n_pairs``,
        ``n_identical_files``, ``n_clusters``, ``n_label_conflicts`` (pairs of a real and a fake
        image) and, when ``df`` has a ``split`` column, the :func:`leakage_counts`.

    Raises:
        ValueError: If ``threshold`` is outside 0..64.
    """
    if not 0 <= int(threshold) <= HASH_BITS:
        raise ValueError(f"the hash threshold must be within 0..{HASH_BITS}, got {threshold}")
    df = df.reset_index(drop=True)
    hashes = hash_frame(df, workers) if hashes is None else hashes.reset_index(drop=True)
    ok = np.flatnonzero(hashes["error"].isna().to_numpy())
    pairs = _pair_table(df, hashes, ok, int(threshold))
    summary: dict[str, Any] = {
        "threshold": int(threshold),
        "n_hashed": len(ok),
        "n_failed": len(df) - len(ok),
        "n_pairs": len(pairs),
        "n_identical_files": int(pairs["identical_file"].sum()),
        "n_clusters": _clusters(pairs),
        "n_label_conflicts": int((pairs["label_a"] != pairs["label_b"]).sum()),
    }
    if "split" in df.columns:
        summary.update(leakage_counts(pairs))
    logger.info(
        "near-duplicates (pHash <= %d bits): %d pairs, %d byte-identical",
        threshold,
        summary["n_pairs"],
        summary["n_identical_files"],
    )
    return pairs, summary


def write_pairs(pairs: pd.DataFrame, path: str | Path) -> Path:
    """Write the pair table as CSV (the header alone when there are no pairs)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_csv(out, index=False)
    return out
