"""What the server allows, and how it says no: settings, API errors, admission and a model lock.

Model work is bounded in two ways. At most ``max_concurrency`` jobs run at once (an
:class:`asyncio.Semaphore` around work done in a thread), and at most ``max_queue`` requests wait
for a slot; a request that finds the queue full is refused at once with 503 and ``Retry-After``.
Every request carries a deadline; a job that overruns it answers 504, and its slot is only given
back when its thread really ends (threads cannot be killed), so a slow model never lets more than
``max_concurrency`` jobs run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fakescope.data.images import DEFAULT_MAX_PIXELS
from fakescope.infer.video import VideoOptions

logger = logging.getLogger(__name__)

T = TypeVar("T")

MB = 1024 * 1024
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServeSettings:
    """Limits and defaults of one server.

    Attributes:
        max_upload_mb: largest accepted file, in MiB (bigger uploads get 413).
        max_pixels: largest accepted image (or video frame) in pixels (bigger ones get 422).
        max_concurrency: model jobs running at once.
        max_queue: requests allowed to wait for a model slot; one more gets 503.
        timeout_s: deadline of one request, upload and model work included (504 past it).
        video: how videos are sampled and scored; ``video.frames`` is the default a request may
            change, ``video.max_frames`` the most it may ask for (more gets 422).
        max_batch_files: most files in one batch request (more gets 413).
        batch_size: images per model call.
        device: ``auto``, ``cpu``, ``cuda``...
        tmp_root: parent folder of the per-request temporary folders (None: the system default).
        explain_method: heatmap method: ``auto``, ``gradcam`` or ``occlusion``.
        amp: torch autocast: ``auto`` (bf16 where the CPU supports it), ``bf16`` or ``off``.
        max_batch_mb: most bytes one batch body may hold, in MiB (more gets 413).
        max_tmp_mb: temp space all requests together may reserve, in MiB. A request reserves its
            declared ``Content-Length`` (or its largest possible body) before any byte is
            written; one that does not fit gets 503 with ``Retry-After``.
        allowed_hosts: ``Host`` header values accepted (names or addresses, no port); ``*``
            accepts any. Other hosts get 400 (a guard against DNS rebinding).
        api_key: when set, every endpoint but ``/healthz`` and the page's static files needs it,
            as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (401 otherwise).
        isolate_decode: decode each upload once in a supervised worker process before scoring,
            so a decoder that crashes on a hostile file cannot take the server down (422).
        decode_workers: worker processes for that check.
        decode_timeout_s: most seconds one file's check may take (422 past it).
    """

    max_upload_mb: float = 50.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_concurrency: int = 2
    max_queue: int = 8
    timeout_s: float = 60.0
    video: VideoOptions = field(default_factory=VideoOptions)
    max_batch_files: int = 16
    batch_size: int = 16
    device: str = "auto"
    tmp_root: str | None = None
    explain_method: str = "auto"
    amp: str = "auto"
    max_batch_mb: float = 200.0
    max_tmp_mb: float = 1024.0
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    api_key: str | None = None
    isolate_decode: bool = True
    decode_workers: int = 2
    decode_timeout_s: float = 30.0

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * MB)

    @property
    def max_batch_bytes(self) -> int:
        """``max_batch_mb`` in bytes."""
        return int(self.max_batch_mb * MB)

    @property
    def max_tmp_bytes(self) -> int:
        """``max_tmp_mb`` in bytes."""
        return int(self.max_tmp_mb * MB)

    def validate(self) -> None:
        """Raise ``ValueError`` on settings that make no sense."""
        checks = [
            (self.max_upload_mb > 0, "max_upload_mb must be positive"),
            (self.max_pixels > 0, "max_pixels must be positive"),
            (self.max_concurrency >= 1, "max_concurrency must be at least 1"),
            (self.max_queue >= 0, "max_queue must be 0 or more"),
            (self.timeout_s > 0, "timeout_s must be positive"),
            (
                self.video.frames <= self.video.max_frames,
                "video frames must be at most the most frames per video (max_frames)",
            ),
            (self.max_batch_files >= 1, "max_batch_files must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.max_batch_mb > 0, "max_batch_mb must be positive"),
            (
                self.max_tmp_mb >= max(self.max_upload_mb, self.max_batch_mb),
                "max_tmp_mb must be at least max_upload_mb and max_batch_mb",
            ),
            (bool(self.allowed_hosts), "allowed_hosts must name at least one host (or '*')"),
            (self.api_key is None or len(self.api_key) >= 8, "api_key must be 8+ characters"),
            (self.decode_workers >= 1, "decode_workers must be at least 1"),
            (self.decode_timeout_s > 0, "decode_timeout_s must be positive"),
        ]
        self.video.validate()
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ApiError(Exception):
    """An answer other than 200, with the JSON body ``{"error": code, "detail": detail}``.

    Attributes:
        status: the HTTP status code.
        code: a short machine-readable name, e.g. ``too_large``.
        detail: what went wrong, in plain words.
        headers: extra response headers (``Retry-After`` for 503).
    """

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        """The JSON body."""
        return {"error": self.code, "detail": self.detail}

    def body_bytes(self) -> bytes:
        """The JSON body, encoded."""
        return json.dumps(self.body()).encode()

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Answer with this error through an ASGI ``send`` (for middleware and raw ASGI apps)."""
        body = self.body_bytes()
        headers = [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(body)).encode())]
        headers += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def busy_error() -> ApiError:
    """503: every model slot is taken and the queue is full."""
    return ApiError(
        503,
        "busy",
        "the server is busy with other requests; try again in a moment",
        {"Retry-After": "1"},
    )


def timeout_error(timeout_s: float) -> ApiError:
    """504: the request ran past its deadline."""
    return ApiError(
        504,
        "timeout",
        f"the request took longer than the server's limit of {timeout_s:g} s and was abandoned",
    )


class Gate:
    """Bounded concurrency for model work, with a bounded waiting line.

    Args:
        max_concurrency: jobs running at once.
        max_queue: requests allowed to wait for a slot; when every slot is taken and this many
            already wait, :meth:`run` refuses at once with 503.
        timeout_s: only used for the text of the 504 error.
    """

    def __init__(self, max_concurrency: int, max_queue: int, timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.waiting = 0
        self.running = 0
        self.admitted = 0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Future[object]] = set()

    def _semaphore(self) -> asyncio.Semaphore:
        """The semaphore of the running event loop (made on first use; test clients may start
        a fresh loop, and a semaphore must not be shared between loops)."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.max_concurrency), loop
            self.waiting = self.running = 0
        return self._sem

    def check_capacity(self) -> None:
        """Refuse at once (503) when every slot is taken and the waiting line is full.

        Called before an upload is read, so a saturated server does not first take in the body.

        Raises:
            ApiError: 503 with ``Retry-After``.
        """
        sem = self._semaphore()
        if sem.locked() and self.waiting >= self.max_queue:
            raise busy_error()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_concurrency + max_queue`` request places, from before the body
        is read until the answer; refuse at once (503) when none is free.

        Raises:
            ApiError: 503 with ``Retry-After``.
        """
        self._semaphore()
        if self.admitted >= self.max_concurrency + self.max_queue:
            raise busy_error()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, fn: Callable[[], T], deadline: float) -> T:
        """Run ``fn`` in a worker thread once a slot is free, before ``deadline``.

        Args:
            fn: the blocking work.
            deadline: ``loop.time()`` by which the result must be there.

        Returns:
            What ``fn`` returned.

        Raises:
            ApiError: 503 when the waiting line is full, 504 past the deadline; whatever ``fn``
                raised otherwise.
        """
        self.check_capacity()
        sem = self._semaphore()
        self.waiting += 1
        try:
            acquired = await _acquire(sem, _remaining(deadline))
        finally:
            self.waiting -= 1
        if not acquired:
            raise timeout_error(self.timeout_s)
        return await self._run_holding(sem, fn, deadline)

    async def _run_holding(self, sem: asyncio.Semaphore, fn: Callable[[], T], deadline: float) -> T:
        """Run ``fn`` in a thread while holding one slot; the slot is freed when the thread ends."""
        from starlette.concurrency import run_in_threadpool

        self.running += 1
        job: asyncio.Future[T] = asyncio.ensure_future(run_in_threadpool(fn))

        def finished(_: asyncio.Future[T]) -> None:
            self.running -= 1
            sem.release()

        try:
            done, _ = await asyncio.wait({job}, timeout=_remaining(deadline))
        except BaseException:  # the request was cancelled: the thread still owns the slot
            self._leave_running(job, finished)
            raise
        if job not in done:
            logger.warning(
                "request past its %.3g s deadline; its thread keeps running", self.timeout_s
            )
            self._leave_running(job, finished)
            raise timeout_error(self.timeout_s)
        finished(job)
        return job.result()

    def _leave_running(self, job: asyncio.Future[T], finished: Callable[..., None]) -> None:
        """Free the slot when an abandoned job's thread ends, and swallow its outcome."""
        self._background.add(job)

        def done(fut: asyncio.Future[T]) -> None:
            self._background.discard(fut)
            finished(fut)
            if not fut.cancelled() and fut.exception() is not None:
                logger.warning("abandoned job failed: %s", fut.exception())

        job.add_done_callback(done)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())


async def _acquire(sem: asyncio.Semaphore, timeout: float) -> bool:
    """Acquire ``sem`` within ``timeout`` seconds; never leaks a permit on timeout or cancel."""
    task = asyncio.ensure_future(sem.acquire())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        _give_back(task, sem)
        raise
    if task in done:
        return True
    _give_back(task, sem)
    return False


def _give_back(task: asyncio.Future[bool], sem: asyncio.Semaphore) -> None:
    """Cancel a pending acquire; release the permit if it was (or ends up) acquired anyway."""

    def release_if_acquired(t: asyncio.Future[bool]) -> None:
        if not t.cancelled() and t.exception() is None:
            sem.release()

    if task.done():
        release_if_acquired(task)
    else:
        task.cancel()
        task.add_done_callback(release_if_acquired)


class TempBudget:
    """Temp space shared by all requests: each reserves its most possible bytes up front.

    Args:
        limit: bytes all reservations together may hold.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0
        self.peak = 0

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        """Hold ``n`` bytes of the budget for the ``with`` block.

        Raises:
            ApiError: 503 with ``Retry-After`` when they do not fit now.
        """
        if self.reserved + n > self.limit:
            raise ApiError(
                503,
                "busy",
                "the server's temp space for uploads is taken by other requests; "
                "try again in a moment",
                {"Retry-After": "2"},
            )
        self.reserved += n
        self.peak = max(self.peak, self.reserved)
        try:
            yield
        finally:
            self.reserved -= n


class SharedExclusiveLock:
    """A readers-writer lock for threads: scoring shares the model, heatmaps need it alone.

    Grad-CAM hooks the model's layers and may move it to the CPU for a moment, so a heatmap must
    not run while another thread scores with the same model. Writers are preferred, so a steady
    flow of scoring cannot starve a heatmap.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock together with other shared holders."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone."""
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
