"""``fakescope serve``: run the HTTP API and web page with uvicorn.

Nothing here imports FastAPI or torch until the command runs, so ``fakescope --help`` stays fast
and works without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fakescope.cli.common import (
    add_detector_arguments,
    add_video_arguments,
    detector_ref,
    video_options,
)

if TYPE_CHECKING:
    from fakescope.serve.limits import ServeSettings

logger = logging.getLogger(__name__)


DEFAULT_HOST = "127.0.0.1"

DEFAULT_PORT = 8000


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
        "/healthz, /docs (OpenAPI) and a web page at /. There is no authentication: keep the "
        "default loopback host, or put it behind a proxy that adds some.",
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
        "--max-connections",
        type=int,
        default=64,
        help="open connections before uvicorn answers 503 itself (default 64)",
    )
    add_video_arguments(p)  # --frames is the default a request may change, --max-frames its cap
    p.add_argument("--tmp-dir", help="where per-request upload folders go (default: system temp)")


def cmd_serve(args: argparse.Namespace) -> int:
    """Load the detector and run uvicorn until interrupted.

    Raises:
        ValueError: the ``serve`` extra missing, or bad limits.
        FileNotFoundError: the detector, or its backbone file, is not where it is looked for.
    """
    ref = detector_ref(args)
    try:
        import uvicorn

        from fakescope.serve.app import create_app
    except ImportError as e:
        raise ValueError(
            f"serve needs FastAPI and uvicorn ({e.name or e} is missing): "
            "pip install fastapi uvicorn python-multipart"
        ) from None
    from fakescope.infer.backends import open_detector

    settings = settings_from_args(args)
    settings.amp = ref.amp
    settings.validate()
    detector = open_detector(ref)
    app = create_app(detector, settings)
    if not _is_loopback(args.host):
        logger.warning(
            "serving on %s: the API has no authentication; anyone who can reach it can use it",
            args.host,
        )
    logger.info("serving %s on http://%s:%d/", ref.ref, args.host, args.port)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        limit_concurrency=args.max_connections,
        timeout_keep_alive=5,
        log_level="info",
    )
    return 0


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
    )


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
