"""The one-line summary of a file's provenance evidence.

Metadata is trivially stripped or forged, so evidence of AI generation is strong when present,
and its absence proves nothing; the summary says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fakescope.provenance.evidence import Evidence, shorten


def summarise(items: Iterable[Evidence], video: bool = False) -> str:
    """One line: what declares AI, or what metadata there is, or that there is none."""
    items = list(items)
    if not items and video:
        return "no C2PA manifest found (only C2PA is read from videos; this proves nothing)"
    if not items:
        return "no provenance metadata found (this proves nothing)"
    ai_labels = _labels(item for item in items if item.ai)
    if ai_labels:
        return "declared AI-generated: " + ", ".join(ai_labels)
    return (
        "no AI declaration found; metadata present: "
        + ", ".join(_labels(items))
        + " (this proves nothing)"
    )


def _labels(items: Iterable[Evidence]) -> list[str]:
    """Short, de-duplicated labels for the summary."""
    labels: list[str] = []
    for item in items:
        labels.append(_label(item))
    return list(dict.fromkeys(labels))


def _label(item: Evidence) -> str:
    """The summary label of one item."""
    if item.source == "c2pa":
        return f"C2PA manifest ({_signature_words(item.signature)})"
    if item.source == "iptc":
        return "IPTC digital source type" if item.ai else f"IPTC digital source type ({item.means})"
    if item.source == "watermark":
        return "Stable Diffusion invisible watermark"
    where = {"exif": "EXIF", "xmp": "XMP", "png": "PNG"}.get(item.source, item.source)
    generator = re.fullmatch(r"names a generator \((.+)\)", item.means)
    if generator:
        return f"{where} {item.field} names {generator.group(1)}"
    if item.ai:
        return f"{where} '{item.field}' generation metadata"
    return f"{where} {item.field} ({shorten(item.value, 40)})"


def _signature_words(signature: str | None) -> str:
    """The signature status as it reads in the summary."""
    if not signature:
        return "signature unknown"
    if signature == "unverified (untrusted certificate)":
        return "signed with an untrusted certificate"
    if signature.startswith("invalid"):
        return "signature invalid"
    if signature.startswith("not checked"):
        return "remote, not checked"
    return f"signature {signature}"
