"""The HTTP API and web page: ``create_app(detector, settings)`` returns a FastAPI app.

Endpoints:

* ``POST /v1/detect`` (multipart field ``file``): one image or video, answered with the same row
  as ``fakescope predict`` writes (videos with per-frame ``frames``), plus ``heatmap_png`` with
  ``?explain=true``.
* ``POST /v1/detect/batch`` (multipart field ``files``, several): ``{"results": [row, ...]}`` in
  order; a file that cannot be scored is a row with verdict ``error`` and its reason.
* ``GET /v1/model``, ``GET /healthz``, ``GET /docs`` (OpenAPI) and ``GET /`` (the web page).

Every refusal is JSON ``{"error": code, "detail": words}``: 400 malformed, incomplete or for an
unknown ``Host``, 401 without the API key (when one is set), 408 slow upload, 413 too large, 415
unknown type (judged from the bytes), 422 unreadable, over a limit or crashing the decoder, 503
busy (with ``Retry-After``), 504 past the deadline. A request is admitted (a request place and
its temp space reserved) before any body byte is read. Uploads live in a per-request temp folder
that is deleted when the request ends. Connection-level limits (header timeout, connections per
client and in all) are in :mod:`fakescope.serve.protocol`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakescope.models.detector import Detector
from fakescope.serve.access import AccessGuard
from fakescope.serve.limits import ApiError, Gate, TempBudget
from fakescope.serve.schemas import (
    BatchResult,
    DetectResult,
    Health,
    ModelInfo,
    error_responses,
)
from fakescope.serve.service import DetectService
from fakescope.serve.settings import ServerSettings
from fakescope.serve.uploads import Upload, body_limit, content_length, receive_files
from fakescope.version import __version__

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DESCRIPTION = (
    "Detect AI-generated images and videos. `score` is P(fake) in [0, 1] (label 1 = fake); "
    "`verdict` is fake, real or uncertain (within `uncertain_band` of `threshold`). Errors are "
    '`{"error": code, "detail": words}`.'
)


def _file_body(field: str, many: bool) -> dict[str, Any]:
    """The OpenAPI request body of a multipart upload read straight from the stream."""
    binary = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: schema},
                    }
                }
            },
        }
    }


def create_app(detector: Detector, settings: ServerSettings | None = None) -> FastAPI:
    """Build the server for one loaded detector.

    Args:
        detector: the detector to serve (from :func:`fakescope.models.load_detector`).
        settings: limits and video defaults (defaults: :class:`ServerSettings`).

    Returns:
        The FastAPI app; ``app.state.service`` holds the :class:`DetectService` (its
        ``predictor`` does the scoring) and ``app.state.gate`` the concurrency gate.

    Raises:
        ValueError: settings that make no sense.
    """
    settings = settings or ServerSettings()
    settings.validate()
    if settings.tmp_root:
        Path(settings.tmp_root).mkdir(parents=True, exist_ok=True)
    service = DetectService(detector, settings)
    gate = Gate(settings.max_concurrency, settings.max_queue, settings.timeout_s)
    app = FastAPI(title="fakescope", version=__version__, description=DESCRIPTION)
    app.state.settings, app.state.service, app.state.gate = settings, service, gate
    app.state.temp_budget = TempBudget(settings.max_tmp_bytes)
    _add_error_handlers(app)
    app.add_middleware(AccessGuard, allowed_hosts=settings.allowed_hosts, api_key=settings.api_key)
    app.add_middleware(SecurityHeaders)
    app.include_router(_api_routes(service, gate, settings))
    app.include_router(_page_routes())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# ------------------------------------------------------------------------------------ routes
def _api_routes(service: DetectService, gate: Gate, settings: ServerSettings) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/detect",
        response_model=DetectResult,
        responses=error_responses(400, 408, 413, 415, 422, 503, 504),
        openapi_extra=_file_body("file", many=False),
        summary="Score one image or video",
    )
    async def detect(
        request: Request,
        explain: bool = Query(False, description="add a heatmap overlay (images)"),
        frames: int | None = Query(
            None, ge=1, description=f"video frames to sample (default {settings.video.frames})"
        ),
    ) -> JSONResponse:
        video = service.video_options(frames)
        row = await _handle(
            request,
            settings,
            gate,
            field="file",
            max_files=1,
            strict=True,
            work=lambda ups: service.detect(ups[0], explain, video),
        )
        return JSONResponse(row)

    @router.post(
        "/v1/detect/batch",
        response_model=BatchResult,
        responses=error_responses(400, 408, 413, 422, 503, 504),
        openapi_extra=_file_body("files", many=True),
        summary="Score several images and videos; per-file errors are rows",
    )
    async def detect_batch(
        request: Request,
        frames: int | None = Query(
            None, ge=1, description=f"video frames to sample (default {settings.video.frames})"
        ),
    ) -> JSONResponse:
        video = service.video_options(frames)
        rows = await _handle(
            request,
            settings,
            gate,
            field="files",
            max_files=settings.max_batch_files,
            strict=False,
            work=lambda ups: service.detect_batch(ups, video),
        )
        return JSONResponse({"results": rows})

    @router.get("/v1/model", response_model=ModelInfo, summary="The loaded detector and limits")
    async def model() -> JSONResponse:
        return JSONResponse(service.model_info())

    @router.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return router


def _page_routes() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return router


async def _handle(
    request: Request,
    settings: ServerSettings,
    gate: Gate,
    *,
    field: str,
    max_files: int,
    strict: bool,
    work: Callable[[list[Upload]], Any],
) -> Any:
    """Admit the request (a request place and its temp space, before any body byte is read),
    receive the files into a private temp folder, run ``work`` on them through the gate, and
    delete the folder whatever happens."""
    deadline = asyncio.get_running_loop().time() + settings.timeout_s
    max_body = settings.max_batch_bytes if max_files > 1 else None
    limit = body_limit(max_files, settings.max_upload_bytes, max_body)
    declared = content_length(request.headers)
    budget: TempBudget = request.app.state.temp_budget
    with gate.admit(), budget.reserve(min(limit, declared) if declared is not None else limit):
        gate.check_capacity()
        tmp = tempfile.TemporaryDirectory(
            prefix="fakescope-upload-", dir=settings.tmp_root, ignore_cleanup_errors=True
        )
        try:
            uploads = await _receive(
                request, Path(tmp.name), settings, field, max_files, strict, deadline, max_body
            )
            return await gate.run(lambda: work(uploads), deadline)
        finally:
            tmp.cleanup()


async def _receive(
    request: Request,
    dest: Path,
    settings: ServerSettings,
    field: str,
    max_files: int,
    strict: bool,
    deadline: float,
    max_body: int | None,
) -> list[Upload]:
    """:func:`receive_files` within the request's deadline."""
    receiving = receive_files(
        request.headers,
        request.stream(),
        dest,
        field=field,
        max_files=max_files,
        max_bytes=settings.max_upload_bytes,
        strict=strict,
        max_body=max_body,
    )
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        return await asyncio.wait_for(receiving, timeout=remaining)
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            "upload_timeout",
            f"the upload did not arrive within the server's limit of {settings.timeout_s:g} s",
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None


# ------------------------------------------------------------------------------------ errors
def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        if exc.status >= 500:
            logger.warning("%s %s", exc.status, exc.detail)
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        detail = str(exc.detail)
        if status == 404:
            detail = f"nothing at {request.url.path} (see /docs for the API)"
        elif status == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return _error(status, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "the server failed on this request; see its log")


# -------------------------------------------------------------------------------- middleware
class SecurityHeaders:
    """Pure ASGI middleware: ``nosniff`` everywhere, a strict CSP on the page and its assets.

    ``/docs`` keeps FastAPI's defaults (it loads Swagger UI from a CDN).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if page:
                    headers["Content-Security-Policy"] = CSP
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
