"""Connection-level limits for uvicorn: a header timeout and connection caps, answered in JSON.

uvicorn's h11 protocol waits for ever on a request whose headers never end, and its
``limit_concurrency`` answers a plain-text 503. :func:`guarded_protocol` makes an
``H11Protocol`` subclass that

* closes a connection whose request line and headers are not complete within
  ``header_timeout_s`` of the connection opening (or of the first byte of a later request on a
  kept-alive connection), after a JSON 408;
* admits at most ``max_connections`` connections in all and ``max_per_client`` from one client
  address; one more is answered a JSON 503 with ``Retry-After`` once its headers arrive (within
  the same header timeout), and closed. Refused connections waiting for their headers are
  bounded too: past ``max_connections`` of them, new ones are closed at once;
* answers malformed HTTP with a JSON 400 instead of uvicorn's plain text.

Use :func:`uvicorn_config` to build a ``uvicorn.Config`` with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

from fakescope.serve.limits import ApiError

# declared in serve.settings; importable from here as before
from fakescope.serve.settings import ConnectionLimits, default_allowed_hosts  # noqa: F401

logger = logging.getLogger(__name__)


def json_response(error: ApiError) -> bytes:
    """A whole HTTP/1.1 response with the error's JSON body that closes the connection (for
    answers written straight to the transport, outside any request cycle)."""
    body = error.body_bytes()
    head = [f"HTTP/1.1 {error.status} {h11_reason(error.status)}", "content-type: application/json"]
    head += [f"content-length: {len(body)}", "connection: close"]
    head += [f"{k}: {v}" for k, v in error.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def h11_reason(status: int) -> str:
    """The reason phrase of the few statuses this module sends."""
    return {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}[status]


BUSY_DETAIL = "the server has too many open connections (from you or in all); try again shortly"


async def _busy_app(scope: Any, receive: Any, send: Any) -> None:
    """ASGI app that answers every request with a JSON 503 and closes the connection."""
    headers = {"Retry-After": "1", "Connection": "close"}
    await ApiError(503, "busy", BUSY_DETAIL, headers).send(send)


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a header timeout, connection caps and JSON refusals.

    Made by :func:`guarded_protocol`, which sets ``limits``.
    """

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admitted = False
        self._header_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------ connection life
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peers = [c for c in self.connections if c is not self]
        admitted = [c for c in peers if getattr(c, "admitted", False)]
        host = self.client[0] if self.client else None
        same = sum(1 for c in admitted if c.client and c.client[0] == host)
        if len(admitted) < self.limits.max_connections and same < self.limits.max_per_client:
            self.admitted = True
        else:
            refused = len(peers) - len(admitted)
            if refused >= self.limits.max_connections:
                transport.close()  # too many refusals already waiting for their headers
                return
            logger.warning("connection from %s refused: connection limit", host)
            self.app = _busy_app
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        self.admitted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._stop_header_timer()
        elif self.conn.their_state is h11.IDLE:
            self._start_header_timer()  # a (next) request is on its way: its headers are timed
        else:
            self._stop_header_timer()  # headers complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        pending, _ = self.conn.trailing_data
        if pending and not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._start_header_timer()  # part of a next request is already buffered

    # ------------------------------------------------------------------------------ the timer
    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._header_timeout
            )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined request is being answered
        detail = f"the request headers did not arrive within {self.limits.header_timeout_s:g} s"
        self.transport.write(json_response(ApiError(408, "header_timeout", detail)))
        self.transport.close()

    # ----------------------------------------------------------------------------- malformed
    def send_400_response(self, msg: str) -> None:
        self.transport.write(json_response(ApiError(400, "bad_request", f"malformed HTTP: {msg}")))
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass bound to ``limits``."""
    limits.validate()
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_config(
    app: Any, host: str, port: int, limits: ConnectionLimits | None = None, **kwargs: Any
) -> Config:
    """A ``uvicorn.Config`` serving ``app`` with the guarded protocol and no proxy headers.

    ``kwargs`` go to ``uvicorn.Config`` (``log_level``, ``lifespan``...).
    """
    limits = limits or ConnectionLimits()
    return Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        proxy_headers=False,
        **kwargs,
    )
