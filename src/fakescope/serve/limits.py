"""How the server says no: API errors, admission and a model lock (its limits are
:class:`fakescope.serve.settings.ServerSettings`).

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
from typing import Any, TypeVar

# declared in serve.settings; importable from here as before
from fakescope.serve.settings import LOOPBACK_HOSTS, MB, ServerSettings, ServeSettings  # noqa: F401

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
