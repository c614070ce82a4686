"""Response shapes, for the OpenAPI page at ``/docs`` (the handlers build plain dicts)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fakescope.infer.row import Prediction


class DetectResult(Prediction):
    """One scored file: the same row as ``fakescope predict`` writes (:class:`Prediction`), plus
    the heatmap inline when asked for."""

    model_config = ConfigDict(extra="allow")

    heatmap_png: str | None = Field(
        None, description="base64 PNG heatmap overlay (images, with ?explain=true)"
    )
    heatmap_method: str | None = Field(None, description="gradcam or occlusion")


class BatchResult(BaseModel):
    """Rows in upload order; files that could not be scored are rows with verdict error."""

    results: list[DetectResult]


class ErrorBody(BaseModel):
    """Every non-200 answer."""

    error: str = Field(description="a short code, e.g. too_large, unsupported_type, busy")
    detail: str = Field(description="what went wrong, in plain words")


class Health(BaseModel):
    """Liveness."""

    status: str = "ok"


class ModelInfo(BaseModel):
    """The loaded detector and the server's limits."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the detector's architecture, technically (as rows' `model`)")
    detector: str = Field(
        description="the detector's name: builtin:NAME, or its file's name (an adapted one adds "
        "'(adapted from PARENT)')"
    )
    description: str | None = Field(
        None, description="what a built-in detector is, or how an adapted one was made, in words"
    )
    adapted: dict[str, Any] | None = Field(
        None,
        description="for a detector made by `fakescope adapt`: its parent (name, sha256), the "
        "examples (counts, sha256) and the measurements",
    )
    kind: str
    preprocessing: dict[str, Any]
    threshold: float
    uncertain_band: float
    calibration: dict[str, Any] | None
    input_filter: str | None
    fakescope_version: str
    checkpoint_version: str | None
    created: str | None
    limits: dict[str, Any]
    video: dict[str, Any]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error status codes."""
    words = {
        400: "Malformed request (not multipart, no file, several files)",
        408: "The upload took longer than the request deadline",
        413: "File (or batch) over the upload limit, or too many files",
        415: "The file's bytes are no supported image or video format",
        422: "Unreadable or corrupt file, over the pixel limit, or too many video frames asked",
        503: "Busy: every model slot taken and the queue full (see Retry-After)",
        504: "The request ran past the server's deadline",
    }
    return {c: {"model": ErrorBody, "description": words[c]} for c in codes}
