"""Who may use the server: a ``Host`` allow-list and an optional API key, as ASGI middleware.

The ``Host`` check stops DNS rebinding: a web page on another site cannot make a browser talk to
a server on loopback under a name the attacker controls. The API key, when set, is needed by
every endpoint but ``/healthz`` and the web page's own files (``/`` and ``/static/``, which hold
no data); it is sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` and compared in
constant time. Refusals are JSON like every other error: 400 ``bad_host``, 401 ``unauthorized``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from fakescope.serve.limits import ApiError


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The API key a request carries (``Authorization: Bearer`` or ``X-API-Key``), if any."""
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key else None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented key with the expected one."""
    return hmac.compare_digest((presented or "").encode(), expected.encode())


def needs_key(path: str) -> bool:
    """Whether a path needs the API key (all but the health check and the page's files)."""
    return not (path in ("/healthz", "/") or path.startswith("/static/"))


class AccessGuard:
    """Pure ASGI middleware: refuse unknown ``Host`` headers (400) and missing keys (401).

    Args:
        app: the app behind it.
        allowed_hosts: accepted host names or addresses (``*``: any).
        api_key: the key every request but the exempt ones must carry (None: no key).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], api_key: str | None) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in self.allowed
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await refusal.send(send)

    def refusal(self, scope: Scope) -> ApiError | None:
        """Why a request is refused, or None when it may pass."""
        if not self.any_host:
            host = host_name(_header(scope, b"host") or "")
            if host not in self.allowed:
                return ApiError(
                    400,
                    "bad_host",
                    f"the Host header {host or '(none)'!r} is not one this server answers to "
                    "(see --allowed-hosts)",
                )
        key_needed = self.api_key is not None and needs_key(scope.get("path", ""))
        if key_needed and not key_matches(presented_key(scope), self.api_key or ""):
            return ApiError(
                401,
                "unauthorized",
                "this server needs an API key: send 'Authorization: Bearer KEY' or "
                "'X-API-Key: KEY'",
                {"WWW-Authenticate": "Bearer"},
            )
        return None
