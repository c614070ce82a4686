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
    from fakescope.serve.settings import ConnectionLimits, ServerSettings

logger = logging.getLogger(__name__)


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


def _setting(p: argparse.ArgumentParser, flag: str, name: str, **kwargs: Any) -> None:
    """An option for a :class:`~fakescope.serve.settings.ServerSettings` field (``name``, or
    ``connections.NAME``): its default, type and help come from the field."""
    from fakescope.serve.settings import ConnectionLimits, ServerSettings

    group, _, key = name.rpartition(".")
    field = (ConnectionLimits if group else ServerSettings).model_fields[key]
    kwargs.setdefault("default", field.default)
    kwargs.setdefault("help", field.description)
    if field.annotation in (int, float):
        kwargs.setdefault("type", field.annotation)
    p.add_argument(flag, **kwargs)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` options (shared by the subcommand and ``python -m fakescope.serve``); their
    defaults and help are :class:`~fakescope.serve.settings.ServerSettings`'s."""

    add_detector_arguments(p)
    _setting(p, "--host", "host")
    _setting(p, "--port", "port")
    _setting(p, "--device", "device")
    _setting(p, "--max-upload-mb", "max_upload_mb")
    _setting(p, "--max-pixels", "max_pixels")
    _setting(p, "--max-concurrency", "max_concurrency")
    _setting(p, "--max-queue", "max_queue")
    _setting(p, "--timeout", "timeout_s")
    _setting(p, "--max-batch-files", "max_batch_files")
    _setting(p, "--max-batch-mb", "max_batch_mb")
    _setting(p, "--max-tmp-mb", "max_tmp_mb")
    _setting(p, "--max-connections", "connections.max_connections")
    _setting(p, "--max-connections-per-client", "connections.max_per_client")
    _setting(p, "--header-timeout", "connections.header_timeout_s")
    _setting(p, "--allowed-hosts", "allowed_hosts", help=_help("allowed_hosts") + " (comma list)")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        help=_help("api_key") + "; prefer --api-key-file or FAKESCOPE_API_KEY, which do not "
        "show in the process list",
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
    _setting(p, "--tmp-dir", "tmp_root")


def _help(name: str) -> str:
    from fakescope.serve.settings import ServerSettings

    return ServerSettings.model_fields[name].description or ""


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

    settings = settings_from_args(args, amp=ref.amp)
    detector = open_detector(ref)
    app = create_app(detector, settings)
    warn_exposure(settings.host, settings)
    logger.info("serving %s on http://%s:%d/", ref.ref, settings.host, settings.port)
    config = uvicorn_config(
        app, settings.host, settings.port, settings.connections, log_level="info"
    )
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


def warn_exposure(host: str, settings: ServerSettings) -> None:
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
    return settings_from_args(args).connections


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


def settings_from_args(args: argparse.Namespace, **more: Any) -> ServerSettings:
    """The :class:`~fakescope.serve.settings.ServerSettings` that parsed ``serve`` options give
    (``more``: further fields, such as ``amp``).

    Raises:
        ValueError: a setting that makes no sense, in one line naming it.
    """
    from pydantic import ValidationError

    from fakescope.config import validation_message
    from fakescope.serve.settings import ServerSettings

    values = {
        "host": args.host,
        "port": args.port,
        "max_upload_mb": args.max_upload_mb,
        "max_pixels": args.max_pixels,
        "max_concurrency": args.max_concurrency,
        "max_queue": args.max_queue,
        "timeout_s": args.timeout,
        "video": video_options(args),
        "max_batch_files": args.max_batch_files,
        "device": args.device,
        "tmp_root": args.tmp_dir,
        "max_batch_mb": args.max_batch_mb,
        "max_tmp_mb": args.max_tmp_mb,
        "allowed_hosts": args.allowed_hosts,
        "api_key": api_key(args),
        "isolate_decode": args.isolate_decode,
        "decode_workers": max(1, args.max_concurrency),
        "connections": {
            "header_timeout_s": args.header_timeout,
            "max_connections": args.max_connections,
            "max_per_client": min(args.max_connections_per_client, args.max_connections),
        },
        **more,
    }
    try:
        return ServerSettings(**values)
    except ValidationError as e:
        raise ValueError(validation_message(e, ServerSettings, "serve setting")) from None


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
