"""Receive uploads safely: stream multipart bodies to a private folder, sniff types from bytes.

Nothing from the request chooses a path. Each file part is written, in chunks as it arrives, to
``<request temp dir>/upload-<n><suffix>``, where the suffix comes from the file's first bytes
(its magic number), never from its name or declared type. The client's file name is kept only
for display, cleaned of folders and control characters. A file is cut off as soon as it passes
the size limit, and a declared ``Content-Length`` over the limit is refused before any byte is read.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fakescope.serve.limits import MB, ApiError

try:  # python-multipart >= 0.0.13 names its module python_multipart
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
except ImportError:  # pragma: no cover - older python-multipart
    from multipart.multipart import (  # type: ignore
        MultipartParser,
        MultipartState,
        parse_options_header,
    )

logger = logging.getLogger(__name__)

SNIFF_BYTES = 16
BODY_SLACK = 64 * 1024  # multipart boundaries and part headers on top of the files themselves
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class MediaType:
    """A file type recognised from its first bytes.

    Attributes:
        kind: ``image`` or ``video``.
        name: a short format name, e.g. ``jpeg`` or ``mp4``.
        suffix: the file suffix the upload is stored under (decoders look at it).
    """

    kind: str
    name: str
    suffix: str


_ISO_IMAGE_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic"}
_ISO_IMAGE_BRANDS |= {b"mif1": "heif", b"msf1": "heif", b"heim": "heic", b"heis": "heic"}
ACCEPTED = "JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF/HEIC, MP4/MOV, WebM/MKV and AVI"


def sniff(head: bytes) -> MediaType | None:
    """The media type of a file from its first bytes (16 are enough), or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType("image", "jpeg", ".jpg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType("image", "png", ".png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return MediaType("image", "gif", ".gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return MediaType("image", "webp", ".webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return MediaType("video", "avi", ".avi")
    if head[:2] == b"BM" and len(head) >= 14:
        return MediaType("image", "bmp", ".bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return MediaType("image", "tiff", ".tif")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return MediaType("video", "webm", ".webm" if b"webm" in head else ".mkv")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _ISO_IMAGE_BRANDS:
            name = _ISO_IMAGE_BRANDS[brand]
            return MediaType("image", name, f".{name}")
        if brand == b"qt  ":
            return MediaType("video", "mov", ".mov")
        return MediaType("video", "mp4", ".mp4")
    return None


def display_name(raw: str | None, index: int) -> str:
    """A file name fit to show: no folders, no control characters, at most 200 characters.

    It is never used as a path.
    """
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        return f"upload-{index + 1}"
    return name[:MAX_NAME_CHARS]


@dataclass
class Upload:
    """One received file part.

    Attributes:
        index: position among the files of the request (0-based).
        name: the display name (see :func:`display_name`).
        path: where the bytes are, inside the request's temp folder (None when refused).
        size: bytes received (up to where it was cut off).
        media: the sniffed type (None when unknown or empty).
        error: why the file was refused (too large, unknown type, empty), or None.
    """

    index: int
    name: str
    path: Path | None = None
    size: int = 0
    media: MediaType | None = None
    error: ApiError | None = None


def too_large(limit_bytes: int, what: str = "the file") -> ApiError:
    """413 for a file (or body) over the limit."""
    return ApiError(
        413,
        "too_large",
        f"{what} is larger than the upload limit of {human_size(limit_bytes)}",
    )


def human_size(n: int) -> str:
    """``50 MB``, ``1.02 KB``, ``12 bytes``."""
    if n >= MB:
        return f"{n / MB:.3g} MB"
    if n >= 1024:
        return f"{n / 1024:.3g} KB"
    return f"{n} bytes"


def unsupported(name: str) -> ApiError:
    """415 for bytes that are no image or video format the server knows."""
    return ApiError(
        415,
        "unsupported_type",
        f"{name} is not an image or video file the server can read (it checks the file's "
        f"contents, not its name); accepted: {ACCEPTED}",
    )


def empty_file(name: str) -> ApiError:
    """422 for a file with no bytes."""
    return ApiError(422, "empty_file", f"{name} is empty (0 bytes)")


class _PartWriter:
    """The multipart callbacks: turns file parts of one field into :class:`Upload` files.

    Args:
        dest: the request's private temp folder.
        field: the form field that carries files (others are skipped).
        max_files: most files accepted; one more raises 413 (or 400 when only one is allowed).
        max_bytes: largest accepted file.
        strict: raise on the first refused file (single uploads); otherwise keep going and record
            the refusal on the :class:`Upload` (batches).
    """

    def __init__(self, dest: Path, field: str, max_files: int, max_bytes: int, strict: bool):
        self.dest, self.field, self.max_files = dest, field, max_files
        self.max_bytes, self.strict = max_bytes, strict
        self.uploads: list[Upload] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._header_bytes = 0
        self._current: Upload | None = None
        self._head = b""
        self._file: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        """The callback table for ``MultipartParser``."""
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    # ---------------------------------------------------------------------------------- headers
    def on_part_begin(self) -> None:
        self._headers, self._header_bytes = {}, 0
        self._header_field = self._header_value = b""
        self._current, self._head, self._file = None, b"", None

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ApiError(400, "bad_request", "a multipart part has oversized headers")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        """Start a file for a part of the files field (with or without a file name)."""
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        field = params.get(b"name", b"").decode("utf-8", "replace")
        if field != self.field:
            return  # another form field: its bytes are skipped
        if len(self.uploads) >= self.max_files:
            raise self._too_many()
        raw = params.get(b"filename", b"").decode("utf-8", "replace")
        self._current = Upload(index=len(self.uploads), name=display_name(raw, len(self.uploads)))
        self.uploads.append(self._current)

    def _too_many(self) -> ApiError:
        if self.max_files == 1:
            return ApiError(
                400,
                "bad_request",
                f"send exactly one file in the '{self.field}' field "
                "(use /v1/detect/batch for several)",
            )
        return ApiError(413, "too_many_files", f"a batch may hold at most {self.max_files} files")

    # ------------------------------------------------------------------------------------- data
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        up = self._current
        if up is None or up.error is not None:
            return
        chunk = data[start:end]
        up.size += len(chunk)
        if up.size > self.max_bytes:
            self._refuse(up, too_large(self.max_bytes, up.name))
            return
        if self._file is None:
            self._head += chunk
            if len(self._head) >= SNIFF_BYTES:
                self._open(up)
            return
        self._file.write(chunk)

    def _open(self, up: Upload) -> None:
        """Sniff the buffered head; open the upload's file and write the head to it."""
        up.media = sniff(self._head)
        if up.media is None:
            self._refuse(up, unsupported(up.name))
            return
        up.path = self.dest / f"upload-{up.index}{up.media.suffix}"
        self._file = open(up.path, "xb")  # noqa: SIM115 (closed in on_part_end or _refuse)
        self._file.write(self._head)
        self._head = b""

    def on_part_end(self) -> None:
        up = self._current
        if up is not None and up.error is None and self._file is None:
            if up.size == 0:
                self._refuse(up, empty_file(up.name))
            else:
                self._open(up)  # shorter than SNIFF_BYTES
        self.close()
        self._current = None

    def _refuse(self, up: Upload, error: ApiError) -> None:
        """Drop a file: delete what was written; raise at once when strict."""
        self.close()
        if up.path is not None:
            up.path.unlink(missing_ok=True)
        up.path, up.error, self._head = None, error, b""
        if self.strict:
            raise error

    def close(self) -> None:
        """Close the file being written, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None


def content_length(headers: Any) -> int | None:
    """The declared ``Content-Length``, or None when there is none.

    Raises:
        ApiError: 400 when it is not a non-negative whole number.
    """
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ApiError(400, "bad_request", "the Content-Length header is not a number")
    return int(value)


def body_limit(max_files: int, max_bytes: int, max_body: int | None = None) -> int:
    """The most bytes a request body may have: its files plus room for the multipart framing."""
    files = max_files * max_bytes
    if max_body is not None:
        files = min(files, max_body)
    return files + BODY_SLACK


def incomplete(why: str) -> ApiError:
    """400 for a body that was cut short."""
    return ApiError(400, "incomplete_body", f"incomplete multipart body: {why}")


def _boundary(content_type: str) -> bytes:
    mime, params = parse_options_header(content_type)
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(
            400,
            "bad_request",
            "send the file as multipart/form-data (for example curl -F file=@photo.jpg)",
        )
    return params[b"boundary"]


async def receive_files(
    headers: Any,
    stream: AsyncIterator[bytes],
    dest: Path,
    *,
    field: str,
    max_files: int,
    max_bytes: int,
    strict: bool,
    max_body: int | None = None,
) -> list[Upload]:
    """Stream a multipart body into ``dest``, one file per part of ``field``.

    Args:
        headers: the request headers (``content-type``, ``content-length``).
        stream: the body, chunk by chunk.
        dest: the request's private temp folder.
        field: the form field holding files.
        max_files: most files accepted.
        max_bytes: largest accepted file.
        strict: raise on the first refused file (otherwise the refusal is on its Upload).
        max_body: most bytes of files the whole body may carry (None: ``max_files * max_bytes``).

    Returns:
        The uploads in the order they were sent.

    Raises:
        ApiError: 400 for a malformed or incomplete body (no closing boundary, fewer bytes than
            its ``Content-Length``) or no file, 413 for a body or file over the limit or
            too many files, 415 (strict) for an unknown type, 422 (strict) for an empty file.
    """
    boundary = _boundary(headers.get("content-type", ""))
    limit = body_limit(max_files, max_bytes, max_body)
    what = "the upload" if max_files == 1 else "the batch"
    declared = content_length(headers)
    if declared is not None and declared > limit:
        raise too_large(limit - BODY_SLACK, what)
    writer = _PartWriter(dest, field, max_files, max_bytes, strict)
    parser = MultipartParser(boundary, writer.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > limit or (declared is not None and received > declared):
                if declared is not None and received > declared:
                    raise incomplete("the body is longer than its Content-Length")
                raise too_large(limit - BODY_SLACK, what)
            _feed(parser, chunk)
        _finish(parser)
    finally:
        writer.close()
    if declared is not None and received < declared:
        raise incomplete(f"the body ended after {received} of its {declared} declared bytes")
    if parser.state != MultipartState.END:
        raise incomplete("the multipart body ended without its closing boundary")
    _check_complete(writer.uploads, strict)
    if not writer.uploads:
        raise ApiError(400, "missing_file", f"no file was sent in the '{field}' form field")
    return writer.uploads


def _check_complete(uploads: list[Upload], strict: bool) -> None:
    """Mark files whose part never ended (a body cut short) as refused."""
    for up in uploads:
        if up.error is None and up.path is None:
            up.error = ApiError(400, "bad_request", f"the upload of {up.name} was cut short")
            if strict:
                raise up.error


def _feed(parser: Any, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except ApiError:
        raise
    except Exception as e:  # python-multipart's parse errors
        raise ApiError(400, "bad_request", f"malformed multipart body: {e}") from None


def _finish(parser: Any) -> None:
    try:
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:
        raise ApiError(400, "bad_request", f"malformed multipart body: {e}") from None
