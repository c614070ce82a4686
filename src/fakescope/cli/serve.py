"""``fakescope serve``: run the HTTP API and web page with uvicorn.

Nothing here imports FastAPI or torch until the command runs, so ``fakescope --help`` stays fast
and works without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakescope.cli.common import (
    add_detector_arguments,
    add_video_arguments,
    detector_ref,
    video_options,
)

if TYPE_CHECKING:
    from fakescope.serve.limits import ServeSettings
    from fakescope.serve.protocol import ConnectionLimits

logger = logging.getLogger(__name__)


DEFAULT_HOST = "127.0.0.1"

DEFAULT_PORT = 8000

API_KEY_ENV = "FAKESCOPE_API_KEY"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``."""
    add_serve_parser(sub)


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to a subparsers object; it runs :func:`cmd_serve`.

    Args:
        sub: what ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The ``serve`` parser.
    """
    p = sub.add_parser(
        "serve",
        help="serve a detector over HTTP: a JSON API and a drag-and-drop web page",
        description="Serve a detector: POST /v1/detect, /v1/detect/batch, GET /v1/model, "
        "/healthz, /docs (OpenAPI) and a web page at /. Beyond loopback, set an API key "
        "(--api-key-file or FAKESCOPE_API_KEY) and put TLS in front (see docs/security.md).",
    )
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return p


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` options (shared by the subcommand and ``python -m fakescope.serve``)."""

    add_detector_arguments(p)
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest file (default 50)")
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest image or video frame in pixels (default 120,000,000, as predict)",
    )
    p.add_argument("--max-concurrency", type=int, default=2, help="model jobs at once (default 2)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="requests that may wait for the model; beyond that 503 (default 8)",
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request; 504 after (default 60)"
    )
    p.add_argument(
        "--max-batch-files", type=int, default=16, help="most files per batch (default 16)"
    )
    p.add_argument(
        "--max-batch-mb",
        type=float,
        default=200.0,
        help="most MiB of files in one batch request; more gets 413 (default 200)",
    )
    p.add_argument(
        "--max-tmp-mb",
        type=float,
        default=1024.0,
        help="temp space all requests together may reserve; beyond it 503 (default 1024)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="open connections served at once; more get a JSON 503 (default 64)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=int,
        default=16,
        help="open connections from one client address; more get a JSON 503 (default 16)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's headers to arrive; then 408 and close (default 10)",
    )
    p.add_argument(
        "--allowed-hosts",
        help="comma-separated Host header values to answer ('*': any; default: localhost, "
        "127.0.0.1, ::1 and --host)",
    )
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        help="require this key (Authorization: Bearer KEY or X-API-Key) on every endpoint but "
        "/healthz and the page's files; prefer --api-key-file or FAKESCOPE_API_KEY, which "
        "do not show in the process list",
    )
    key.add_argument("--api-key-file", help="read the API key from this file (first line)")
    p.add_argument(
        "--no-isolate-decode",
        dest="isolate_decode",
        action="store_false",
        help="decode uploads in the server process only (faster; a decoder crash on a hostile "
        "file then ends the server)",
    )
    add_video_arguments(p)  # --frames is the default a request may change, --max-frames its cap
    p.add_argument("--tmp-dir", help="where per-request upload folders go (default: system temp)")


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the detector and run uvicorn until interrupted; 0, or 143 after a SIGTERM (whose
    shutdown is as clean as Ctrl+C's).

    Raises:
        ValueError: the ``serve`` extra missing, or bad limits.
        FileNotFoundError: the detector, or its backbone file, is not where it is looked for.
    """
    ref = detector_ref(args)
    try:
        import uvicorn

        from fakescope.serve.app import create_app
        from fakescope.serve.protocol import uvicorn_config
    except ImportError as e:
        raise ValueError(
            f"serve needs FastAPI and uvicorn ({e.name or e} is missing): "
            "pip install fastapi uvicorn python-multipart"
        ) from None
    from fakescope.infer.backends import open_detector

    settings = settings_from_args(args)
    settings.amp = ref.amp
    settings.validate()
    limits = connection_limits(args)
    detector = open_detector(ref)
    app = create_app(detector, settings)
    warn_exposure(args.host, settings)
    logger.info("serving %s on http://%s:%d/", ref.ref, args.host, args.port)
    config = uvicorn_config(app, args.host, args.port, limits, log_level="info")
    try:
        stopped_by = run_until_stopped(uvicorn.Server(config))
    finally:  # Ctrl+C (KeyboardInterrupt) and SIGTERM alike: no decoder process outlives us
        app.state.service.close()
    return 128 + stopped_by if stopped_by else 0


def run_until_stopped(server: Any) -> int | None:
    """Run a ``uvicorn.Server`` until it shuts down; return the number of the SIGTERM that
    stopped it, or None.

    uvicorn shuts down gracefully on SIGINT and SIGTERM alike, then raises the signal again for
    the handler it found. With the default SIGTERM handler that kills the process on the spot,
    before the decoder worker processes and multiprocessing's resource tracker are stopped (they
    then linger for minutes); so SIGTERM gets a handler here that only notes it, and the caller
    cleans up as after Ctrl+C.
    """
    if threading.current_thread() is not threading.main_thread():
        server.run()  # signals are the main thread's business
        return None
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: caught.append(signum))
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return caught[0] if caught else None


def warn_exposure(host: str, settings: ServeSettings) -> None:
    """Log a warning when serving beyond loopback without an API key, or for any Host."""
    if not _is_loopback(host) and settings.api_key is None:
        logger.warning(
            "serving on %s without an API key: anyone who can reach it can use it "
            "(set --api-key-file or FAKESCOPE_API_KEY)",
            host,
        )
    if "*" in settings.allowed_hosts:
        logger.warning("--allowed-hosts '*': any Host header is answered (no rebinding guard)")


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    """The per-connection limits from parsed ``serve`` options."""
    from fakescope.serve.protocol import ConnectionLimits

    limits = ConnectionLimits(
        header_timeout_s=args.header_timeout,
        max_connections=args.max_connections,
        max_per_client=min(args.max_connections_per_client, args.max_connections),
    )
    limits.validate()
    return limits


def api_key(args: argparse.Namespace) -> str | None:
    """The API key from ``--api-key``, ``--api-key-file`` or ``FAKESCOPE_API_KEY`` (or None).

    Raises:
        ValueError: an empty key or an unreadable key file.
    """
    key = args.api_key
    if args.api_key_file:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read an API key from {args.api_key_file}: {e}") from None
        if not lines:
            raise ValueError(f"{args.api_key_file}: the API key file is empty")
        key = lines[0]
    if key is None:
        key = os.environ.get(API_KEY_ENV) or None
    if key is not None and not key.strip():
        raise ValueError("the API key is empty")
    return key.strip() if key is not None else None


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """A :class:`~fakescope.serve.limits.ServeSettings` from parsed ``serve`` options."""
    from fakescope.data.images import DEFAULT_MAX_PIXELS
    from fakescope.serve.limits import ServeSettings

    return ServeSettings(
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        video=video_options(args),
        max_batch_files=args.max_batch_files,
        device=args.device,
        tmp_root=args.tmp_dir,
        max_batch_mb=args.max_batch_mb,
        max_tmp_mb=args.max_tmp_mb,
        allowed_hosts=allowed_hosts(args),
        api_key=api_key(args),
        isolate_decode=args.isolate_decode,
        decode_workers=max(1, args.max_concurrency),
    )


def allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    """``--allowed-hosts`` as a tuple, or loopback names plus ``--host``."""
    from fakescope.serve.protocol import default_allowed_hosts

    if args.allowed_hosts:
        return tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    return default_allowed_hosts(args.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fakescope.serve``: parse the ``serve`` options and run the server."""
    from fakescope.models.header import CheckpointError
    from fakescope.utils import setup_logging

    parser = argparse.ArgumentParser(prog="python -m fakescope.serve", description=__doc__)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(0)
    try:
        return cmd_serve(args)
    except (ValueError, CheckpointError, FileNotFoundError) as e:
        print(f"fakescope serve: error: {e}", file=sys.stderr)
        return 1
