"""The prediction row, declared once: ``predict``'s JSON Lines and CSV, the server's responses and
``scan``'s Parquet columns are all derived from :class:`Prediction`'s fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FrameScore(BaseModel):
    """One sampled video frame and its score."""

    index: int = Field(description="ordinal among the sampled frames")
    time_s: float = Field(description="presentation time in seconds")
    score: float = Field(description="P(fake) of this frame")


class Prediction(BaseModel):
    """One scored input. ``score`` is P(fake); ``verdict`` is fake, real, uncertain, error or
    ``"fake (declared)"`` (see :meth:`fakescope.models.detector.Detector.decide`).

    ``provenance`` is what the file's metadata says about its origin (C2PA, IPTC, EXIF/XMP,
    generator PNG chunks, Stable Diffusion's invisible watermark; see
    :mod:`fakescope.provenance`), or None when not read (in-memory images). A declared AI
    origin makes the verdict ``"fake (declared)"``; the score stays the pixel score. Absent
    metadata proves nothing and leaves the pixel verdict alone.
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the input (an uploaded file's name, for the server)")
    kind: str = Field(description="image or video")
    score: float | None = Field(description="P(fake) in [0, 1]; null on error")
    verdict: str = Field(description="fake, real, uncertain, error, or 'fake (declared)'")
    threshold: float = Field(description="P(fake) at or above which the verdict is fake")
    uncertain_band: float = Field(description="half-width around the threshold read as uncertain")
    detector: str | None = Field(
        None,
        description="the detector's name for people: builtin:NAME, or its file's name (an "
        "adapted one adds '(adapted from PARENT)')",
    )
    model: str = Field(
        description="the detector's architecture, technically (e.g. "
        "probe:clip_vit_b16_openai_visual.int8.onnx/layers+l2)"
    )
    time_ms: float = Field(description="time spent on this input, decoding included")
    error: str | None = Field(None, description="why the input could not be scored")
    width: int | None = None
    height: int | None = None
    n_frames: int | None = Field(None, description="frames scored (videos)")
    aggregate: str | None = Field(None, description="how frame scores were combined (videos)")
    timeline: str | None = Field(None, description="the score-over-time plot written (videos)")
    heatmap: str | None = Field(None, description="the heatmap PNG written (--explain)")
    frames: list[FrameScore] | None = Field(None, description="per-frame scores (videos)")
    novelty: float | None = Field(
        None, description="distance from the training data (detectors with an out-of-depth guard)"
    )
    reason: str | None = Field(
        None,
        description="why the verdict is uncertain beyond the score ('unlike the training data') "
        "or why it is 'fake (declared)'",
    )
    provenance: dict[str, Any] | None = Field(
        None,
        description="what the file's metadata says about its origin: declared_ai, summary, "
        "error, evidence (source, field, value, ai, means, signature); a declared AI origin "
        "makes the verdict 'fake (declared)', absent metadata proves nothing",
    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (video rows keep their per-frame scores)."""
        return self.model_dump()


#: The row's fields in order; nested ones (``frames``, ``provenance``) are JSON where a format
#: needs flat columns.
ROW_FIELDS: tuple[str, ...] = tuple(Prediction.model_fields)
NESTED_FIELDS: tuple[str, ...] = ("frames", "provenance")
#: ``--format csv``: every field but the per-frame scores (``provenance`` as JSON text).
CSV_COLUMNS: tuple[str, ...] = tuple(f for f in ROW_FIELDS if f != "frames")
