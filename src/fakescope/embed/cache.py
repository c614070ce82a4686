"""On-disk embedding cache keyed by file content, and embedding of whole manifest frames."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fakescope.utils import file_digest

if TYPE_CHECKING:
    from fakescope.embed.base import Backbone

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 500
_DEFAULT_BATCH = 32
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def default_cache_dir() -> Path:
    """``$FAKESCOPE_CACHE/embeddings`` (default ``~/.cache/fakescope/embeddings``)."""
    from fakescope.utils import cache_dir

    return cache_dir("embeddings")


class EmbeddingCache:
    """Embedding vectors stored in one SQLite file, ``root/<cache_id>.sqlite``.

    Keys are usually file-content digests (see :func:`embed_frame`), and ``cache_id`` names the
    backbone (model, pool, preprocessing), so one database holds one kind of vector. Every
    :meth:`put_many` is one committed transaction in WAL mode: a run killed halfway keeps every
    committed row and the file stays usable. The cache can be opened again after it is closed (or
    by a later process); one writer at a time is expected, while concurrent readers are fine.

    Args:
        root: the cache folder (created when missing).
        cache_id: the backbone's :attr:`~fakescope.embed.base.Backbone.cache_id`.
    """

    def __init__(self, root: str | os.PathLike[str], cache_id: str) -> None:
        if not _SAFE_ID.fullmatch(cache_id):
            raise ValueError(f"cache_id must be a plain file name, got {cache_id!r}")
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_id = cache_id
        self.path = self.root / f"{cache_id}.sqlite"
        self._conn = sqlite3.connect(str(self.path), timeout=60.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._conn:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)"
            )

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors for those ``keys`` that are present (float32, 1-D)."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(unique), _QUERY_CHUNK):
            part = unique[start : start + _QUERY_CHUNK]
            marks = ",".join("?" * len(part))
            rows = self._conn.execute(
                f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", part
            ).fetchall()
            for key, dim, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] != dim:
                    logger.warning("ignoring a damaged cache row for %s in %s", key, self.path)
                    continue
                found[key] = vec.copy()
        return found

    def put_many(self, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors (as float32) in one committed transaction; existing keys are replaced."""
        rows = []
        for key, vec in items.items():
            arr = np.ascontiguousarray(vec, dtype=np.float32).reshape(-1)
            rows.append((str(key), int(arr.shape[0]), arr.tobytes()))
        if not rows:
            return
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO emb (key, dim, vec) VALUES (?, ?, ?)", rows
            )

    def __len__(self) -> int:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM emb").fetchone()
        return int(count)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        row = self._conn.execute("SELECT 1 FROM emb WHERE key = ?", (key,)).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"


# --------------------------------------------------------------------------------------------
# Whole frames
# --------------------------------------------------------------------------------------------


def embed_frame(
    backbone: Backbone,
    df: pd.DataFrame,
    cache: EmbeddingCache | None = None,
    workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Embed every image in ``df["path"]``, reusing and filling the cache.

    Files are keyed by the sha256 of their bytes, so a moved or renamed file is still a hit, a
    changed file is a miss, and identical files are embedded once. Only misses are decoded and
    embedded, and each batch is written to the cache as soon as it is done, so an interrupted run
    loses at most one batch. Failures are not cached: they are retried on the next run.

    Args:
        backbone: the feature extractor.
        df: a frame with a ``path`` column.
        cache: where to look up and store vectors; None embeds everything.
        workers: DataLoader worker processes for decoding (also threads for hashing).
        progress: show a progress bar (only when stderr is a terminal).

    Returns:
        ``(embeddings, failures)``: ``embeddings`` is float32 ``[N, D]`` in row order, where the
        rows of files that failed are all NaN so positions stay aligned with ``df`` (``D`` is 0
        when no file at all could be embedded); ``failures`` lists ``(row_position, reason)``.
    """
    if "path" not in df.columns:
        raise ValueError(f"cannot embed: no 'path' column (columns: {list(df.columns)})")
    paths = [str(p) for p in df["path"]]
    digests, failures = _digest_all(paths, workers)
    first_path: dict[str, str] = {}
    for path, digest in zip(paths, digests, strict=True):
        if digest is not None:
            first_path.setdefault(digest, path)
    vectors = cache.get_many(list(first_path)) if cache is not None else {}
    todo = {d: p for d, p in first_path.items() if d not in vectors}
    logger.info(
        "embeddings (%s): %d cached, %d to compute, %d unreadable",
        backbone.cache_id,
        len(first_path) - len(todo),
        len(todo),
        len(failures),
    )
    load_errors = _embed_missing(backbone, todo, cache, workers, progress, vectors)
    for i, d in enumerate(digests):
        if d is not None and d in load_errors:
            failures[i] = load_errors[d]
    out = _assemble(digests, vectors)
    return out, sorted(failures.items())


def _read_reason(exc: OSError) -> str:
    """A short reason for a file that cannot be read."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read file: {exc.strerror or exc}"


def _digest_or_reason(path: str) -> tuple[str | None, str | None]:
    """``(digest, None)`` or ``(None, reason)``."""
    try:
        return file_digest(path), None
    except OSError as exc:
        return None, _read_reason(exc)


def _digest_all(paths: list[str], workers: int) -> tuple[list[str | None], dict[int, str]]:
    """Digest every file (in threads when ``workers > 0``); unreadable ones become failures."""
    results: Iterable[tuple[str | None, str | None]]
    if workers > 0 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_digest_or_reason, paths))
    else:
        results = [_digest_or_reason(p) for p in paths]
    digests: list[str | None] = []
    failures: dict[int, str] = {}
    for i, (digest, reason) in enumerate(results):
        digests.append(digest)
        if reason is not None:
            failures[i] = reason
    return digests, failures


def _embed_missing(
    backbone: Backbone,
    todo: dict[str, str],
    cache: EmbeddingCache | None,
    workers: int,
    progress: bool,
    vectors: dict[str, np.ndarray],
) -> dict[str, str]:
    """Decode and embed the ``digest → path`` misses into ``vectors``, caching every batch.

    Returns:
        ``digest → reason`` for the files that did not decode.
    """
    if not todo:
        return {}
    from fakescope.data.datasets import make_loader
    from fakescope.data.transforms import eval_transform

    keys = list(todo)
    frame = pd.DataFrame({"path": [todo[k] for k in keys]})
    loader = make_loader(
        frame,
        eval_transform(backbone.preprocessing),
        batch_size=backbone.batch_size or _DEFAULT_BATCH,
        workers=workers,
    )
    errors: dict[str, str] = {}
    for batch in _with_progress(loader, len(keys), progress):
        for i, reason in batch["failures"]:
            errors[keys[i]] = reason
        if batch["x"].numel() == 0:
            continue
        batch_keys = [keys[i] for i in batch["idx"].tolist()]
        new = _embed_batch(backbone, batch["x"].numpy(), batch_keys)
        if cache is not None:
            cache.put_many(new)
        vectors.update(new)
    return errors


def _embed_batch(backbone: Backbone, x: np.ndarray, keys: list[str]) -> dict[str, np.ndarray]:
    """Embed one batch and pair the rows with their keys."""
    emb = np.asarray(backbone.embed(x), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(keys):
        raise ValueError(f"backbone returned shape {emb.shape} for a batch of {len(keys)} images")
    return dict(zip(keys, emb, strict=True))


def _with_progress(loader: Iterable[Any], total: int, progress: bool) -> Iterator[Any]:
    """Iterate the loader, with a tqdm bar counted in images when asked and on a terminal."""
    if not (progress and sys.stderr.isatty()):
        yield from loader
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="embedding", unit="img") as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["idx"]) + len(batch["failures"]))


def _assemble(digests: list[str | None], vectors: dict[str, np.ndarray]) -> np.ndarray:
    """Stack vectors in row order, NaN rows where a file has none."""
    dims = {v.shape[0] for d in digests if d is not None and (v := vectors.get(d)) is not None}
    if len(dims) > 1:
        raise ValueError(f"embeddings of different sizes {sorted(dims)}; is the cache mixed up?")
    dim = dims.pop() if dims else 0
    out = np.full((len(digests), dim), np.nan, dtype=np.float32)
    for i, d in enumerate(digests):
        if d is not None and d in vectors:
            out[i] = vectors[d]
    return out
