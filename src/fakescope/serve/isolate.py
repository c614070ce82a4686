"""Decode hostile uploads where a native crash cannot take the server down.

Image and video decoders are C code; a file crafted to crash one would, in the server process,
end the server. :class:`DecodeGuard` first decodes each upload in a small pool of worker
processes (spawned, so they share no threads or locks with the server), as scoring would. An
image is decoded in full and its pixels dropped; the server decodes it again, which is safe since
decoding is deterministic and cheap next to the model. A video's frames, as the request's
:class:`~fakescope.infer.video.VideoOptions` select them, are decoded in the worker and sent back,
so the server process never runs a video decoder (and a clip is not decoded twice).

A worker that dies on a file (a segfault, an abort) turns into a 422 ``decoder_crashed`` for that
file, and the pool is started again; a check that runs past its timeout is treated alike, its
workers killed. The timeout counts decoding only: at most ``workers`` checks are handed to the
pool at once, so none waits in its queue. Files that were being checked in the same pool when it
broke are checked once more in the new pool, so an innocent neighbour is not refused for another
file's crash. A file that fails cleanly in the worker is refused with the worker's reason and is
not decoded again in the server.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from fakescope.data.video import Frame
from fakescope.infer.video import VideoOptions
from fakescope.serve.limits import ApiError

logger = logging.getLogger(__name__)


@dataclass
class Checked:
    """What a worker learnt of one upload.

    Attributes:
        reason: why it cannot be used (worded as the predictor words it, no path), or None.
        frames: a video's sampled frames, decoded in the worker (None for images).
    """

    reason: str | None = None
    frames: list[Frame] | None = None


CheckFn = Callable[[str, str, int, VideoOptions], Checked]


def check_decodes(path: str, kind: str, max_pixels: int, video: VideoOptions) -> Checked:
    """Decode a file as scoring would (runs in a worker process).

    Args:
        path: the upload.
        kind: ``image`` or ``video``.
        max_pixels: the pixel limit (bigger images and frames are refused before decoding).
        video: the request's sampling; the frames it selects are decoded and returned.

    Returns:
        The reason the file cannot be used, or, for a video, its frames.
    """
    if kind == "image":
        from fakescope.data.images import ImageLoadError, load_image

        try:
            load_image(path, max_pixels=max_pixels)
        except ImageLoadError as e:
            return Checked(reason=e.reason)
        except Exception:  # it did not crash the worker: the predictor words this failure
            return Checked()
        return Checked()
    from fakescope.infer.video import read_frames, video_reason

    try:
        return Checked(frames=read_frames(path, video, max_pixels))
    except Exception as e:  # any failure is a reason, as in the predictor
        return Checked(reason=video_reason(e))


def warm_up() -> bool:
    """Import the decoders in a fresh worker, so that a check's timeout counts decoding only."""
    import fakescope.data.images  # noqa: F401
    import fakescope.infer.video  # noqa: F401

    with contextlib.suppress(ImportError):  # without PyAV, videos are refused anyway
        import av  # noqa: F401
    return True


WARM_UP_S = 120.0  # most seconds a fresh pool may take to start its workers


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
        check: the function run in a worker, ``check(path, kind, max_pixels, video) ->
            Checked`` (a module-level function, so that it can be pickled).
    """

    def __init__(self, workers: int, timeout_s: float, check: CheckFn = check_decodes) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.check_fn = check
        self.restarts = 0
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)  # checks in the pool at once
        self._pool: ProcessPoolExecutor | None = None

    def _current(self) -> ProcessPoolExecutor:
        """The pool, started (its workers spawned and their imports done) when there is none."""
        with self._lock:
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")
                pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
                try:
                    for job in [pool.submit(warm_up) for _ in range(self.workers)]:
                        job.result(timeout=WARM_UP_S)
                except (BrokenProcessPool, FutureTimeout) as e:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise RuntimeError(
                        "could not start the decoder worker processes "
                        f"({type(e).__name__}). A script that builds the server must do so "
                        "under `if __name__ == '__main__':` (worker processes are spawned); "
                        "or turn decode isolation off (--no-isolate-decode)"
                    ) from e
                self._pool = pool
            return self._pool

    def start(self) -> None:
        """Start the workers now rather than on the first check."""
        self._current()

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

    def check(
        self, path: str, kind: str, max_pixels: int, name: str, video: VideoOptions
    ) -> Checked:
        """Decode ``path`` in a worker (blocking; call it from a worker thread).

        Args:
            path: the upload.
            kind: ``image`` or ``video``.
            max_pixels: the pixel limit.
            name: what errors call the file.
            video: the request's video sampling.

        Returns:
            The reason the file cannot be used, or, for a video, its frames.

        Raises:
            ApiError: 422 ``decoder_crashed`` when the worker died or hung on the file.
        """
        with self._slots:
            return self._check(path, kind, max_pixels, name, video)

    def _check(
        self, path: str, kind: str, max_pixels: int, name: str, video: VideoOptions
    ) -> Checked:
        for attempt in range(2):
            pool = self._current()
            try:
                fut: Future[Checked] = pool.submit(self.check_fn, path, kind, max_pixels, video)
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

    def close(self, wait_s: float = 0.0) -> None:
        """Stop the workers.

        Args:
            wait_s: how long to wait for them to exit (0: do not wait); any still running after
                that are killed, so a server that stops leaves no decoder process behind.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        if wait_s <= 0:
            return
        deadline = time.monotonic() + wait_s
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


_SHARED: dict[tuple[int, float], DecodeGuard] = {}
_SHARED_LOCK = threading.Lock()


def shared_guard(workers: int, timeout_s: float) -> DecodeGuard:
    """One :class:`DecodeGuard` per process for each (workers, timeout): apps share the pool."""
    with _SHARED_LOCK:
        key = (workers, timeout_s)
        if key not in _SHARED:
            _SHARED[key] = DecodeGuard(workers, timeout_s)
        return _SHARED[key]
