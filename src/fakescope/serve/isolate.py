"""Decode hostile uploads where a native crash cannot take the server down.

Image and video decoders are C code; a file crafted to crash one would, in the server process,
end the server. :class:`DecodeGuard` first decodes each upload in a small pool of worker
processes (spawned, so they share no threads or locks with the server). A worker that dies on a
file (a segfault, an abort) turns into a 422 ``decoder_crashed`` for that file, and the pool is
started again; a check that runs past its timeout is treated alike, its workers killed. Files
that were being checked in the same pool when it broke are checked once more in the new pool, so
an innocent neighbour is not refused for another file's crash.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from fakescope.serve.limits import ApiError

logger = logging.getLogger(__name__)

CheckFn = Callable[[str, str, int], "str | None"]


def check_decodes(path: str, kind: str, max_pixels: int) -> str | None:
    """Decode a file completely, as scoring will (runs in a worker process).

    Args:
        path: the upload.
        kind: ``image`` or ``video``.
        max_pixels: the pixel limit (bigger images are refused before decoding).

    Returns:
        None when it decodes, else why not (the scoring step reports the same reason).
    """
    if kind == "image":
        from fakescope.data.images import check_image

        return check_image(path, max_pixels)
    from fakescope.data.video import sample_frames

    try:
        for _ in sample_frames(path, mode="keyframes", max_frames=8):
            pass
    except Exception as e:  # the scoring step gives the real reason
        return str(e)
    return None


def crashed_error(name: str) -> ApiError:
    """422 for a file that crashed (or hung) the decoder."""
    return ApiError(
        422,
        "decoder_crashed",
        f"{name}: the decoder crashed on this file (it was checked in a separate process; "
        "the server is fine)",
    )


class DecodeGuard:
    """A supervised pool of decoder processes.

    Args:
        workers: processes in the pool.
        timeout_s: most seconds one check may take.
        check: the function run in a worker, ``check(path, kind, max_pixels) -> reason | None``
            (a module-level function, so that it can be pickled).
    """

    def __init__(self, workers: int, timeout_s: float, check: CheckFn = check_decodes) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.check_fn = check
        self.restarts = 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            return self._pool

    def _restart(self, broken: ProcessPoolExecutor, kill: bool) -> None:
        """Drop a broken (or hung) pool; the next check starts a fresh one."""
        with self._lock:
            if self._pool is not broken:
                return  # another thread already restarted it
            self._pool = None
            self.restarts += 1
        if kill:
            for proc in list(getattr(broken, "_processes", {}).values()):
                proc.kill()
        broken.shutdown(wait=False, cancel_futures=True)
        logger.warning("decoder worker pool restarted (%d so far)", self.restarts)

    def check(self, path: str, kind: str, max_pixels: int, name: str) -> str | None:
        """Decode ``path`` in a worker (blocking; call it from a worker thread).

        Returns:
            None when the file decodes, else the decoder's reason it cannot be used.

        Raises:
            ApiError: 422 ``decoder_crashed`` when the worker died or hung on the file.
        """
        for attempt in range(2):
            pool = self._current()
            try:
                fut: Future[str | None] = pool.submit(self.check_fn, path, kind, max_pixels)
                return fut.result(timeout=self.timeout_s)
            except FutureTimeout:
                logger.warning("%s: decoder check past %.3g s", name, self.timeout_s)
                self._restart(pool, kill=True)
                raise crashed_error(name) from None
            except BrokenProcessPool:
                self._restart(pool, kill=False)
                if attempt == 1:
                    logger.warning("%s: the decoder crashed on this file", name)
                    raise crashed_error(name) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Stop the workers."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_SHARED: dict[tuple[int, float], DecodeGuard] = {}
_SHARED_LOCK = threading.Lock()


def shared_guard(workers: int, timeout_s: float) -> DecodeGuard:
    """One :class:`DecodeGuard` per process for each (workers, timeout): apps share the pool."""
    with _SHARED_LOCK:
        key = (workers, timeout_s)
        if key not in _SHARED:
            _SHARED[key] = DecodeGuard(workers, timeout_s)
        return _SHARED[key]
