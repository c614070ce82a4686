"""The server's settings, declared once: :class:`ServerSettings` (and its nested
:class:`ConnectionLimits`) give ``fakescope serve``'s option defaults and help, and
:func:`fakescope.serve.app.create_app` and uvicorn take the same object.

Values are checked when the settings are made (and when one is changed), so a limit that makes no
sense (``max_concurrency=0``, more default video frames than the cap) fails before the server
starts. Nothing here imports FastAPI or uvicorn.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fakescope.data.images import DEFAULT_MAX_PIXELS
from fakescope.infer.video import VideoOptions

MB = 1024 * 1024
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
EXPLAIN_METHODS = ("auto", "gradcam", "occlusion")


def default_allowed_hosts(bound: str) -> tuple[str, ...]:
    """Loopback names plus the bound address (unless it is a wildcard like 0.0.0.0)."""
    extra = () if bound in ("0.0.0.0", "::", "") or bound in LOOPBACK_HOSTS else (bound,)
    return LOOPBACK_HOSTS + extra


class ConnectionLimits(BaseModel):
    """What one client connection may hold (enforced by :mod:`fakescope.serve.protocol`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    header_timeout_s: float = Field(
        10.0, gt=0, description="seconds for a request's headers to arrive; then 408 and close"
    )
    max_connections: int = Field(
        64, ge=1, description="open connections served at once; more get a JSON 503"
    )
    max_per_client: int = Field(
        16, ge=1, description="open connections from one client address; more get a JSON 503"
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="seconds an idle kept-alive connection stays open"
    )

    @model_validator(mode="after")
    def _per_client_within_all(self) -> ConnectionLimits:
        if self.max_per_client > self.max_connections:
            raise ValueError("need 1 <= max connections per client <= max connections")
        return self

    def validate(self) -> None:  # type: ignore[override]
        """Raise ``ValueError`` on limits that make no sense (checked when made; kept for
        callers that changed a copy made with ``model_copy``)."""
        type(self).model_validate(self.model_dump())


class ServerSettings(BaseModel):
    """Limits and defaults of one server; each field's description is its option's help.

    Model work is bounded by ``max_concurrency`` jobs at once and ``max_queue`` waiting; uploads
    by ``max_upload_mb`` per file, ``max_batch_mb`` and ``max_batch_files`` per batch and
    ``max_tmp_mb`` of temp space for all requests together (see :mod:`fakescope.serve.limits`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    max_upload_mb: float = Field(50.0, gt=0, description="largest file in MiB; more gets 413")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="largest image or video frame in pixels (as predict); more gets 422",
    )
    max_concurrency: int = Field(
        2, ge=1, description="model jobs at once (also the decoder worker count)"
    )
    max_queue: int = Field(
        8, ge=0, description="requests that may wait for the model; beyond that 503"
    )
    timeout_s: float = Field(
        60.0, gt=0, description="seconds per request, upload and model work; 504 after"
    )
    video: VideoOptions = Field(
        default_factory=VideoOptions,
        description="how videos are sampled and scored; video.frames is the default a request "
        "may change, video.max_frames the most it may ask for (more gets 422)",
    )
    max_batch_files: int = Field(16, ge=1, description="most files per batch; more gets 413")
    batch_size: int = Field(16, ge=1, description="images per model call")
    device: str = Field("auto", description="auto, cpu, cuda or mps")
    tmp_root: str | None = Field(
        None, description="where per-request upload folders go (default: system temp)"
    )
    explain_method: str = Field("auto", description="heatmap method: auto, gradcam or occlusion")
    amp: str = Field(
        "auto", description="torch autocast: auto (bf16 where the CPU supports it), bf16 or off"
    )
    max_batch_mb: float = Field(
        200.0, gt=0, description="most MiB of files in one batch request; more gets 413"
    )
    max_tmp_mb: float = Field(
        1024.0,
        gt=0,
        description="temp space (MiB) all requests together may reserve; beyond it 503",
    )
    allowed_hosts: tuple[str, ...] = Field(
        None,  # type: ignore[assignment]  # filled in from ``host``
        validate_default=True,
        description="Host header values to answer ('*': any; default: localhost, 127.0.0.1, "
        "::1 and the bound host); others get 400 (a guard against DNS rebinding)",
    )
    api_key: str | None = Field(
        None,
        min_length=8,
        repr=False,
        json_schema_extra={"secret": True},  # never echoed in an error message
        description="require this key (Authorization: Bearer KEY or X-API-Key) on every "
        "endpoint but /healthz and the page's files (401 otherwise)",
    )
    isolate_decode: bool = Field(
        True,
        description="decode each upload once in a supervised worker process first, so that a "
        "decoder crash on a hostile file cannot end the server (422)",
    )
    decode_workers: int = Field(2, ge=1, description="worker processes for that decoding check")
    decode_timeout_s: float = Field(
        30.0, gt=0, description="most seconds one file's decoding check may take (422 after)"
    )
    connections: ConnectionLimits = Field(
        default_factory=ConnectionLimits, description="what one client connection may hold"
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any, info: Any) -> Any:
        if value is None:
            return default_allowed_hosts(info.data.get("host", "127.0.0.1"))
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value

    @field_validator("video")
    @classmethod
    def _video(cls, value: VideoOptions) -> VideoOptions:
        value.validate()
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServerSettings:
        checks = [
            (
                self.video.frames <= self.video.max_frames,
                "video frames must be at most the most frames per video (max_frames)",
            ),
            (
                self.max_tmp_mb >= max(self.max_upload_mb, self.max_batch_mb),
                "max_tmp_mb must be at least max_upload_mb and max_batch_mb",
            ),
            (bool(self.allowed_hosts), "allowed_hosts must name at least one host (or '*')"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

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

    def validate(self) -> None:  # type: ignore[override]
        """Raise ``ValueError`` on settings that make no sense. They are checked when made and
        when a field is set; this checks again after a change inside ``video``."""
        type(self).model_validate(self.model_dump())


#: The name the settings had before they were declared here (still importable).
ServeSettings = ServerSettings
