"""What provenance reading finds: :class:`Evidence` items and the :class:`Provenance` of a file.

Also the text helpers every reader shares: values are shortened to :data:`MAX_VALUE_CHARS`,
exceptions described in a few words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MAX_VALUE_CHARS = 200


@dataclass
class Evidence:
    """One item of provenance evidence found in a file.

    Attributes:
        source: Where it was found: ``"c2pa"``, ``"iptc"``, ``"xmp"``, ``"exif"``, ``"png"`` or
            ``"watermark"``.
        field: The field, for example ``"c2pa.actions: c2pa.created digitalSourceType"``,
            ``"Iptc4xmpExt:DigitalSourceType"``, ``"Software"`` or ``"parameters"``.
        value: What was found, shortened to at most 200 characters.
        ai: True when this item declares or names AI generation.
        means: Plain words, for example ``"declares AI generation (trained algorithmic media)"``
            or ``"names a generator (Stable Diffusion)"``.
        signature: C2PA items only: ``"valid"``, ``"invalid: <reason>"``,
            ``"unverified (untrusted certificate)"``, ...
    """

    source: str
    field: str
    value: str
    ai: bool
    means: str
    signature: str | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


@dataclass
class Provenance:
    """What a file's metadata says about its origin.

    Attributes:
        declared_ai: True when any evidence item has ``ai=True``.
        evidence: Everything found, AI-related or not.
        summary: One line, for example ``"declared AI-generated: C2PA manifest (signature
            valid), IPTC digital source type"`` or ``"no provenance metadata found (this proves
            nothing)"``.
        error: The readers that failed, for example ``"c2pa: could not read manifest: ..."``,
            joined by ``"; "``; None when all worked.
    """

    declared_ai: bool
    evidence: list[Evidence]
    summary: str
    error: str | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict, evidence items included."""
        return {
            "declared_ai": self.declared_ai,
            "evidence": [item.to_dict() for item in self.evidence],
            "summary": self.summary,
            "error": self.error,
        }


def describe(exc: BaseException) -> str:
    """A short text for an exception, falling back to its type name."""
    text = " ".join(str(exc).split())
    return shorten(text) if text else type(exc).__name__


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Collapse whitespace and cut to ``limit`` characters (with an ellipsis)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
