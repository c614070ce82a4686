"""Provenance evidence: what a file's metadata says about where it came from.

This sits beside the pixel score. It reads, without judging the pixels:

* **C2PA** manifests (Content Credentials) with ``c2pa-python``: the claim generator, the actions,
  any IPTC ``digitalSourceType`` that declares AI generation, and the signature's validation
  status, reported honestly (``valid``, ``invalid: <reason>`` or
  ``unverified (untrusted certificate)``).
* **IPTC** ``Iptc4xmpExt:DigitalSourceType`` in the XMP packet.
* **XMP** ``xmp:CreatorTool``, ``tiff:Software``, ``stEvt:softwareAgent`` (edit history) and
  ``photoshop:Credit``, and **EXIF** ``Software`` (plus ``Make``/``Model`` and the WebUI's
  ``UserComment`` when they name a generator), matched against a list of known generators.
* **PNG** text chunks that generator tools write (the Stable Diffusion WebUI's ``parameters``,
  ComfyUI's ``prompt``/``workflow``, InvokeAI's ``invokeai_metadata``, NovelAI's ``Comment``).
* **Stable Diffusion's invisible watermark** (the ``dwtDct`` method of ``invisible-watermark``) as
  the reference scripts embed it.

Metadata is trivially stripped or forged, so evidence of AI generation is strong when present,
and its absence proves nothing; the summary says so. :func:`read_provenance` never raises.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fakescope.data.images import DEFAULT_MAX_PIXELS, file_problem
from fakescope.data.video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

MAX_VALUE_CHARS = 200
# Set to a PEM file of trusted C2PA root certificates (for example the C2PA trust list) to tell
# "valid" signatures from "unverified (untrusted certificate)" ones; without it none is trusted.
C2PA_TRUST_ANCHORS_ENV = "FAKESCOPE_C2PA_TRUST_ANCHORS"
# The watermark needs the pixels. invisible-watermark refuses images under 256x256 pixels in area;
# above 2048x2048 no reference script's output is left unscaled, and scaling destroys the mark.
WATERMARK_MIN_PIXELS = 256 * 256
WATERMARK_MAX_PIXELS = min(2048 * 2048, DEFAULT_MAX_PIXELS)

_IPTC_VOCABULARY = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/): (ai, means).
_SOURCE_TYPES: dict[str, tuple[bool, str]] = {
    "trainedalgorithmicmedia": (True, "declares AI generation (trained algorithmic media)"),
    "compositewithtrainedalgorithmicmedia": (
        True,
        "declares a composite that includes AI-generated elements",
    ),
    "algorithmicmedia": (True, "declares algorithmic generation (algorithmic media)"),
    "digitalcapture": (False, "declares a capture by a digital camera"),
    "computationalcapture": (False, "declares a computational camera capture"),
    "negativefilm": (False, "declares a scan of a film negative"),
    "positivefilm": (False, "declares a scan of a film positive"),
    "print": (False, "declares a scan of a print"),
    "minorhumanedits": (False, "declares minor human edits"),
    "humanedits": (False, "declares human edits"),
    "compositecapture": (False, "declares a composite of captures"),
    "algorithmicallyenhanced": (False, "declares algorithmic enhancement of a capture"),
    "digitalcreation": (False, "declares digital creation by a person"),
    "digitalart": (False, "declares digital art by a person"),
    "datadrivenmedia": (False, "declares data-driven media"),
    "screencapture": (False, "declares a screen capture"),
    "virtualrecording": (False, "declares a virtual recording"),
    "composite": (False, "declares a composite"),
    "compositesynthetic": (False, "declares a composite with synthetic elements"),
    "softwareimage": (False, "declares an image made by software"),
}

# Known image generators, matched case-insensitively on word boundaries in software fields.
_GENERATORS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("Stable Diffusion", r"\bstable[\s_-]?diffusion\b|\bsdxl\b|\bsd\.next\b"),
        ("AUTOMATIC1111 WebUI", r"\bautomatic1111\b|\bstable-diffusion-webui\b"),
        ("ComfyUI", r"\bcomfy\s?ui\b"),
        ("InvokeAI", r"\binvoke\s?ai\b"),
        ("Fooocus", r"\bfooocus\b"),
        ("NovelAI", r"\bnovel\s?ai\b"),
        ("DALL-E", r"\bdall[\s·._-]?e\b"),
        ("OpenAI", r"\bopen\s?ai\b|\bchat\s?gpt\b|\bgpt[\s-]?4o\b|\bgpt[\s-]?image\b|\bsora\b"),
        ("Midjourney", r"\bmid\s?journey\b"),
        ("Adobe Firefly", r"\bfirefly\b"),
        ("Imagen", r"\bimagen\b"),
        ("Google Gemini", r"\bgemini\b|\bgoogle ai\b"),
        ("Flux", r"\bflux(?:\.1)?\b|\bblack forest labs\b"),
        ("Ideogram", r"\bideogram\b"),
        ("Leonardo.Ai", r"\bleonardo(?:[\s.]?ai)?\b"),
        ("Craiyon", r"\bcraiyon\b"),
        ("DreamStudio", r"\bdream\s?studio\b"),
        ("Stability AI", r"\bstability[\s.]?ai\b"),
        ("Kandinsky", r"\bkandinsky\b"),
        ("DeepFloyd IF", r"\bdeepfloyd\b"),
        ("Bing Image Creator", r"\bbing image creator\b"),
        ("Meta AI", r"\bmeta ai\b|\bimagine with meta\b"),
        ("Playground", r"\bplayground[\s.]?(?:ai|v[23])\b"),
        ("Krea", r"\bkrea(?:[\s.]?ai)?\b"),
        ("Recraft", r"\brecraft\b"),
        ("Runway", r"\brunway\s?ml\b|\brunway gen-?\d"),
        ("NightCafe", r"\bnightcafe\b"),
        ("Wombo Dream", r"\bwombo\b"),
        ("Draw Things", r"\bdraw things\b"),
        ("Qwen-Image", r"\bqwen[\s-]?image\b"),
        ("Hunyuan", r"\bhunyuan"),
        ("Seedream", r"\bseedream\b"),
    )
)

# PNG text chunks that generator tools write: key -> the tool.
_PNG_TOOL_CHUNKS: dict[str, str] = {
    "parameters": "Stable Diffusion WebUI",
    "prompt": "ComfyUI",
    "workflow": "ComfyUI",
    "invokeai_metadata": "InvokeAI",
    "invokeai_graph": "InvokeAI",
    "sd-metadata": "InvokeAI",
    "Dream": "InvokeAI",
    "fooocus_scheme": "Fooocus",
}
# The WebUI's parameter text: "...\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, ..."
_WEBUI_PARAMETERS = re.compile(r"\bSteps: \d+,.*\b(?:Sampler|Seed|CFG scale): ", re.DOTALL)
_NOVELAI_KEYS = frozenset({"steps", "sampler", "seed", "uc", "scale", "n_samples"})

_XMP_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}
_EXIF_MAKE, _EXIF_MODEL, _EXIF_SOFTWARE = 0x010F, 0x0110, 0x0131
_EXIF_DESCRIPTION, _EXIF_IFD, _EXIF_USER_COMMENT = 0x010E, 0x8769, 0x9286


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def read_provenance(
    path: str | os.PathLike, watermark: bool = True, video: bool | None = None
) -> Provenance:
    """Read the provenance evidence of one file. Never raises.

    Only headers and metadata blocks are read, except for the watermark check, which decodes
    the pixels of images between 256x256 and 2048x2048 pixels in area. On a PNG, text chunks
    stored after the pixel data are read only when the pixels are decoded for that check.

    Args:
        path: The file (any image format Pillow opens; C2PA is also read from the other formats
            ``c2pa-python`` supports, such as HEIC, AVIF and MP4).
        watermark: Also look for Stable Diffusion's invisible watermark: a full decode of the
            pixels plus about 10 ms per megapixel (a 512x512 PNG takes about 8 ms in all).
        video: The file is a video container (MP4, MOV, WebM, MKV, AVI): only its C2PA manifest
            is read, since the image readers (EXIF, XMP, PNG text, watermark) do not apply to
            it, and their not applying is no error. None: decided by the file's extension
            (animated GIF and WebP files are images here).

    Returns:
        The evidence, a one-line summary, and the readers that failed in ``error``.
    """
    if video is None:
        video = Path(path).suffix.lower() in VIDEO_EXTENSIONS
    try:
        return _read(Path(path), watermark, video)
    except Exception as exc:  # the promise is "never raises": this is the last resort
        logger.debug("provenance of %s failed", path, exc_info=True)
        reason = f"could not read provenance: {_describe(exc)}"
        return Provenance(False, [], f"provenance could not be read ({reason})", reason)


def _read(file: Path, watermark: bool, video: bool = False) -> Provenance:
    """The body of :func:`read_provenance`."""
    problem = file_problem(file, "a file")
    if problem is not None:
        return Provenance(False, [], f"provenance could not be read ({problem})", problem)
    items: list[Evidence] = []
    errors: list[str] = []
    _guard("c2pa", errors, _read_c2pa, file, items, errors)
    if not video:  # EXIF, XMP, PNG text and the watermark are image metadata
        _guard("image", errors, _read_image, file, watermark, items, errors)
    return Provenance(
        declared_ai=any(item.ai for item in items),
        evidence=items,
        summary=_summarise(items, video),
        error="; ".join(errors) or None,
    )


def _guard(name: str, errors: list[str], reader: Any, *args: Any) -> bool:
    """Run one reader; an exception becomes an entry in ``errors`` (and False)."""
    try:
        reader(*args)
    except Exception as exc:
        logger.debug("%s reader failed", name, exc_info=True)
        errors.append(f"{name}: {_describe(exc)}")
        return False
    return True


def _describe(exc: BaseException) -> str:
    """A short text for an exception, falling back to its type name."""
    text = " ".join(str(exc).split())
    return _shorten(text) if text else type(exc).__name__


def _shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Collapse whitespace and cut to ``limit`` characters (with an ellipsis)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Generator names
# --------------------------------------------------------------------------------------------


def _generator_named(text: str) -> str | None:
    """The known AI image generator that ``text`` names (``"Stable Diffusion"``...), or None."""
    for name, pattern in _GENERATORS:
        if pattern.search(text):
            return name
    return None


def _software_evidence(source: str, name: str, value: str, what: str) -> Evidence:
    """An item for a software field: ``ai=True`` when it names a known generator."""
    generator = _generator_named(value)
    if generator is not None:
        return Evidence(source, name, _shorten(value), True, f"names a generator ({generator})")
    return Evidence(source, name, _shorten(value), False, what)


def _source_type_evidence(source: str, name: str, value: str) -> Evidence:
    """An item for an IPTC digital source type (a vocabulary URL or a bare term)."""
    term = value.strip().rstrip("/").rsplit("/", 1)[-1]
    ai, means = _SOURCE_TYPES.get(term.lower(), (False, f"declares the source type {term!r}"))
    return Evidence(source, name, _shorten(value), ai, means)


# --------------------------------------------------------------------------------------------
# C2PA
# --------------------------------------------------------------------------------------------

_c2pa_lock = threading.Lock()
_c2pa_cache: dict[tuple[int, str], Any] = {}


def _c2pa_context(c2pa: Any, errors: list[str]) -> Any:
    """A c2pa Context that never goes online, with the trust anchors from the environment.

    Remote manifests and OCSP are not fetched: this runs on every predicted image, offline.
    Contexts are cached per process (native handles do not survive a fork) and anchor file.
    """
    anchors_file = os.environ.get(C2PA_TRUST_ANCHORS_ENV, "")
    key = (os.getpid(), anchors_file)
    with _c2pa_lock:
        context = _c2pa_cache.get(key)
        if context is not None:
            return context
        settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
        if anchors_file:
            try:
                settings["trust"] = {"trust_anchors": Path(anchors_file).read_text()}
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"c2pa: cannot read trust anchors {anchors_file}: {_describe(exc)}")
                return c2pa.Context.from_dict(settings)  # not cached: retried next time
        context = c2pa.Context.from_dict(settings)
        _c2pa_cache.clear()
        _c2pa_cache[key] = context
        return context


def _read_c2pa(file: Path, items: list[Evidence], errors: list[str]) -> None:
    """Add the evidence of an embedded C2PA manifest store, if there is one."""
    try:
        import c2pa
    except ImportError:
        errors.append("c2pa: c2pa-python is not installed; C2PA manifests not checked")
        return
    context = _c2pa_context(c2pa, errors)
    try:
        reader = c2pa.Reader.try_create(str(file), context=context)
    except c2pa.C2paError.NotSupported:
        return  # a format c2pa cannot carry a manifest in
    except c2pa.C2paError as exc:
        message = exc.message if isinstance(getattr(exc, "message", None), str) else str(exc)
        remote = re.search(r"remote manifests? from url (\S+)", message)
        if remote:
            items.append(
                Evidence(
                    "c2pa",
                    "remote manifest",
                    _shorten(remote.group(1)),
                    False,
                    "refers to a C2PA manifest stored online (not fetched)",
                    "not checked (remote manifest)",
                )
            )
            return
        errors.append(f"c2pa: could not read manifest: {_describe(exc)}")
        return
    if reader is None:
        return
    with reader:
        store = json.loads(reader.json())
    items.extend(_c2pa_evidence(store))


def _c2pa_evidence(store: dict) -> list[Evidence]:
    """Evidence items from a manifest store's JSON (active manifest first, then ingredients)."""
    signature = _c2pa_signature(store)
    manifests = store.get("manifests") or {}
    active = store.get("active_manifest")
    order = [active] if active in manifests else []
    order += [label for label in manifests if label != active]
    found: list[Evidence] = []
    for label in order:
        manifest = manifests.get(label) or {}
        prefix = "" if label == active else "ingredient "
        found.extend(_manifest_evidence(manifest, prefix))
        if label == active:
            found.extend(_signer_evidence(manifest))
    if not found:
        found.append(Evidence("c2pa", "manifest", _shorten(str(active)), False, "has a manifest"))
    for item in found:
        item.signature = signature
    return found


def _manifest_evidence(manifest: dict, prefix: str) -> Iterator[Evidence]:
    """The claim generator and actions of one manifest."""
    for generator in _claim_generators(manifest):
        yield _software_evidence(
            "c2pa",
            f"{prefix}claim_generator",
            generator,
            "names the software that made the manifest",
        )
    names: list[str] = []
    for action in _actions(manifest):
        name = str(action.get("action", "?"))
        names.append(name)
        source_type = action.get("digitalSourceType")
        if isinstance(source_type, str) and source_type.strip():
            field_name = f"{prefix}c2pa.actions: {name} digitalSourceType"
            yield _source_type_evidence("c2pa", field_name, source_type)
        agent = _agent_name(action.get("softwareAgent"))
        if agent and _generator_named(agent):
            yield _software_evidence(
                "c2pa", f"{prefix}c2pa.actions: {name} softwareAgent", agent, ""
            )
    if names:
        yield Evidence(
            "c2pa",
            f"{prefix}c2pa.actions",
            _shorten(", ".join(names)),
            False,
            "records the actions taken on the content",
        )


def _claim_generators(manifest: dict) -> list[str]:
    """The claim generator names of a manifest (v1 string and v2 info list)."""
    names: list[str] = []
    legacy = manifest.get("claim_generator")
    if isinstance(legacy, str) and legacy.strip():
        names.append(legacy)
    for info in manifest.get("claim_generator_info") or []:
        if isinstance(info, dict) and info.get("name"):
            version = info.get("version")
            names.append(f"{info['name']} {version}" if version else str(info["name"]))
    return list(dict.fromkeys(names))


def _actions(manifest: dict) -> Iterator[dict]:
    """All actions of a manifest's ``c2pa.actions`` assertions (v1 and v2)."""
    for assertion in manifest.get("assertions") or []:
        if not isinstance(assertion, dict):
            continue
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        data = assertion.get("data") or {}
        for action in data.get("actions") or []:
            if isinstance(action, dict):
                yield action


def _agent_name(agent: Any) -> str | None:
    """A softwareAgent's name (a string in v1, a dict in v2)."""
    if isinstance(agent, dict):
        agent = agent.get("name")
    return agent if isinstance(agent, str) and agent.strip() else None


def _signer_evidence(manifest: dict) -> Iterator[Evidence]:
    """Who signed the active manifest, from its signature info."""
    info = manifest.get("signature_info") or {}
    parts = [
        f"{label} {info[key]}"
        for key, label in (("common_name", "signer"), ("issuer", "issuer"), ("alg", "alg"))
        if info.get(key)
    ]
    if parts:
        yield Evidence(
            "c2pa", "signature_info", _shorten(", ".join(parts)), False, "who signed the manifest"
        )


_TRUST_CODES = frozenset({"signingCredential.untrusted"})


def _c2pa_signature(store: dict) -> str:
    """The store's validation status in plain words."""
    state = str(store.get("validation_state") or "")
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = results.get("failure")
    if failures is None:
        failures = store.get("validation_status") or []
    failures = [f for f in failures if isinstance(f, dict)]
    codes = {str(f.get("code", "")) for f in failures}
    others = [f for f in failures if f.get("code") not in _TRUST_CODES]
    if others or state == "Invalid":
        first = others[0] if others else (failures[0] if failures else {})
        code = first.get("code") or "validation failed"
        explanation = first.get("explanation")
        reason = f"{code} ({explanation})" if explanation else str(code)
        return _shorten(f"invalid: {reason}", 120)
    if state == "Trusted":
        return "valid"
    if codes & _TRUST_CODES:
        return "unverified (untrusted certificate)"
    if state == "Valid":
        return "valid (certificate trust not checked)"
    return f"unknown ({state})" if state else "unknown"


# --------------------------------------------------------------------------------------------
# Pillow: EXIF, XMP, PNG text, watermark
# --------------------------------------------------------------------------------------------


def _read_image(file: Path, watermark: bool, items: list[Evidence], errors: list[str]) -> None:
    """Add the evidence Pillow can see: EXIF, XMP/IPTC, PNG text and the watermark."""
    try:
        img = Image.open(file)
    except UnidentifiedImageError:
        if not items:  # a format c2pa read needs no image reader
            errors.append("image: not a recognised image format")
        return
    except Image.DecompressionBombError as exc:
        errors.append(f"image: over Pillow's pixel limit, metadata not read: {_describe(exc)}")
        return
    except Exception as exc:  # PIL plugins raise OSError, SyntaxError, ValueError, struct.error...
        errors.append(f"image: truncated or corrupt header: {_describe(exc)}")
        return
    with img:
        seen_png: set[str] = set()
        _guard("exif", errors, _exif_evidence, img, items)
        _guard("xmp", errors, _xmp_evidence, img, items)
        is_png = img.format == "PNG"
        if is_png:
            _guard("png", errors, _png_evidence, img.info, seen_png, items)
        if watermark and _watermark_eligible(img):
            decoded = _guard("watermark", errors, _watermark_evidence, img, items, errors)
            if is_png and decoded:
                # The pixels are decoded now, so text chunks after them cost nothing more.
                _guard("png", errors, _png_evidence, img.text, seen_png, items)


def _exif_evidence(img: Image.Image, items: list[Evidence]) -> None:
    """EXIF Software (and Make, Model, ImageDescription, UserComment when telling)."""
    if img.format == "PNG" and "exif" not in img.info:
        return  # PIL would decode the whole image looking for a late eXIf chunk
    exif = img.getexif()
    software = _exif_text(exif.get(_EXIF_SOFTWARE))
    if software:
        items.append(
            _software_evidence(
                "exif", "Software", software, "names the software that wrote the file"
            )
        )
    for tag, name in ((_EXIF_MAKE, "Make"), (_EXIF_MODEL, "Model")):
        value = _exif_text(exif.get(tag))
        if not value:
            continue
        if value.startswith(("workflow:", "prompt:")):  # ComfyUI's WebP/animated output
            means = "carries generation metadata written by ComfyUI"
            items.append(Evidence("exif", name, _shorten(value), True, means))
        elif _generator_named(value):
            items.append(_software_evidence("exif", name, value, ""))
    texts = [("ImageDescription", _exif_text(exif.get(_EXIF_DESCRIPTION)))]
    with contextlib.suppress(KeyError, ValueError, TypeError, OSError, SyntaxError):
        comment = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT)
        texts.append(("UserComment", _user_comment(comment)))
    for name, text in texts:
        if text and _WEBUI_PARAMETERS.search(text):
            means = "carries generation parameters written by Stable Diffusion WebUI"
            items.append(Evidence("exif", name, _shorten(text), True, means))


def _exif_text(value: Any) -> str | None:
    """An EXIF ASCII value as text (NULs stripped), or None."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _user_comment(value: Any) -> str | None:
    """EXIF UserComment text: an 8-byte character-code prefix, then the text (EXIF 2.3 §4.6.5)."""
    if isinstance(value, str):
        return value.replace("\x00", "").strip() or None
    if not isinstance(value, bytes) or len(value) <= 8:
        return None
    code, body = value[:8], value[8:]
    if code.startswith(b"UNICODE"):
        # UCS-2 of either byte order is seen in the wild; keep the one that reads as text.
        candidates = [body.decode(enc, "replace") for enc in ("utf-16-be", "utf-16-le")]
        text = max(candidates, key=lambda t: sum(ch.isascii() for ch in t))
    else:
        text = body.decode("utf-8", "replace")
    return text.replace("\x00", "").strip() or None


def _xmp_packet(img: Image.Image) -> bytes | str | None:
    """The raw XMP packet Pillow found in the header, or None."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        packet = img.info.get(key)
        if packet:
            return packet
    tags = getattr(img, "tag_v2", None)  # TIFF tag 700 in older Pillow versions
    packet = tags.get(700) if tags is not None else None
    return packet if isinstance(packet, (bytes, str)) and packet else None


def _xmp_evidence(img: Image.Image, items: list[Evidence]) -> None:
    """IPTC digital source type and software fields from the XMP packet."""
    packet = _xmp_packet(img)
    if packet is None:
        return
    try:
        from defusedxml import ElementTree
    except ImportError as exc:
        raise RuntimeError("defusedxml is not installed; XMP not read") from exc
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    root = ElementTree.fromstring(packet.strip(b"\x00 \t\r\n"))
    for value in _xmp_values(root, "Iptc4xmpExt", "DigitalSourceType"):
        items.append(_source_type_evidence("iptc", "Iptc4xmpExt:DigitalSourceType", value))
    fields = (
        ("xmp", "CreatorTool", "names the software that wrote the file"),
        ("tiff", "Software", "names the software that wrote the file"),
        ("stEvt", "softwareAgent", "names software in the edit history"),
    )
    for prefix, local, means in fields:
        for value in _xmp_values(root, prefix, local):
            items.append(_software_evidence("xmp", f"{prefix}:{local}", value, means))
    for value in _xmp_values(root, "photoshop", "Credit"):
        if _generator_named(value):  # e.g. "Made with Google AI"; credits are usually people
            items.append(_software_evidence("xmp", "photoshop:Credit", value, ""))


def _xmp_values(root: Any, prefix: str, local: str) -> list[str]:
    """Values of one XMP property, whether written as an attribute, element or rdf list."""
    name = f"{{{_XMP_NS[prefix]}}}{local}"
    resource = f"{{{_XMP_NS['rdf']}}}resource"
    item = f"{{{_XMP_NS['rdf']}}}li"
    values: list[str] = []
    for element in root.iter():
        attribute = element.attrib.get(name)
        if attribute:
            values.append(attribute)
        if element.tag != name:
            continue
        if element.attrib.get(resource):
            values.append(element.attrib[resource])
        values.extend(li.text for li in element.iter(item) if li.text and li.text.strip())
        if element.text and element.text.strip():
            values.append(element.text)
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def _png_evidence(chunks: dict, seen: set[str], items: list[Evidence]) -> None:
    """Generator tools' PNG text chunks, and the Software/Source chunks."""
    for key, value in chunks.items():
        if not isinstance(key, str) or not isinstance(value, str) or key in seen:
            continue
        text = value.strip()
        if not text:
            continue
        seen.add(key)
        tool = _PNG_TOOL_CHUNKS.get(key)
        if tool is not None:
            means = f"carries generation metadata written by {tool}"
            items.append(Evidence("png", key, _shorten(text), True, means))
        elif key == "Software":
            means = "names the software that wrote the file"
            items.append(_software_evidence("png", key, text, means))
        elif key == "Source" and _generator_named(text):
            items.append(_software_evidence("png", key, text, ""))
        elif key == "Comment" and _novelai_comment(text):
            means = "carries generation parameters written by NovelAI"
            items.append(Evidence("png", key, _shorten(text), True, means))


def _novelai_comment(text: str) -> bool:
    """True for NovelAI's JSON ``Comment`` (``{"prompt": ..., "steps": 28, "sampler": ...}``)."""
    if not text.startswith("{"):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and len(_NOVELAI_KEYS & data.keys()) >= 2


# --------------------------------------------------------------------------------------------
# Stable Diffusion's invisible watermark
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Watermark:
    """A known payload, and how many bit errors a match may have."""

    name: str
    bits: np.ndarray
    max_errors: int


def _bits_of_bytes(payload: bytes) -> np.ndarray:
    """MSB-first bits, as ``WatermarkEncoder.set_watermark("bytes", ...)`` embeds them."""
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8))


# The reference scripts' payloads, all embedded with the dwtDct method:
# * SD 1.x, CompVis/stable-diffusion scripts/txt2img.py: bytes "StableDiffusionV1" (136 bits).
# * SD 2.x, Stability-AI/stablediffusion scripts/txt2img.py: bytes "SDV2" (32 bits).
# * SDXL, Stability-AI/generative-models (and diffusers' StableDiffusionXLWatermarker): the
#   48-bit message 0b1011_0011_1110_1100_1001_0000_0111_1011_1011_0001_1001_1110.
# How many bit errors a match may have. The mark is fragile even unedited: where a 4x4 block's
# largest coefficient does not stand out, embedding it can make another coefficient the largest,
# and the reader then reads that one, so smooth images lose many bits (a quarter of SD 1.x's 136
# bits on some photos in our tests). Unmarked images miss about half the bits. With random bits,
# P(at most k errors of n) is about 1e-12 for 27/136, 5e-7 for 8/48 and 1.3e-6 for 3/32.
# Stability's own detector calls 36 of 48 matching bits (12 errors) "very likely watermarked",
# having found no real image above that in 10,000; these allowances are stricter.
_WATERMARKS = (
    _Watermark("Stable Diffusion 1.x", _bits_of_bytes(b"StableDiffusionV1"), 27),
    _Watermark("Stable Diffusion 2.x", _bits_of_bytes(b"SDV2"), 3),
    _Watermark(
        "Stable Diffusion XL",
        np.array([int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]]),
        8,
    ),
)
# invisible-watermark's dwtDct defaults: 4x4 blocks of the Haar approximation band of the U
# channel, quantisation step 36.
_WM_BLOCK = 4
_WM_SCALE = 36.0
_HAAR = float(np.sqrt(0.5))  # PyWavelets' Haar filter taps, 0.7071067811865476


def _watermark_eligible(img: Image.Image) -> bool:
    """True when the image is big enough to carry the mark and small enough to decode."""
    width, height = img.size
    return WATERMARK_MIN_PIXELS <= width * height <= WATERMARK_MAX_PIXELS


def _watermark_evidence(img: Image.Image, items: list[Evidence], errors: list[str]) -> None:
    """Decode the dwtDct watermark and compare it with Stable Diffusion's payloads."""
    img.load()
    rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    best: tuple[int, _Watermark, str] | None = None
    # The reference scripts hand BGR to the encoder; diffusers' SDXL watermarker hands it RGB.
    # Our pixels are RGB: read as "BGR" they are what an encoder given RGB saw, and vice versa.
    for order, read_as in (("BGR", "RGB"), ("RGB", "BGR")):
        votes = _decode_dwtdct_blocks(rgb, read_as)
        for mark in _WATERMARKS:
            errors_found = _bit_errors(votes, mark.bits)
            if errors_found <= mark.max_errors and (best is None or errors_found < best[0]):
                best = (errors_found, mark, order)
    if best is not None:
        errors_found, mark, order = best
        value = (
            f"{mark.name} payload, {errors_found} of {len(mark.bits)} bits differ "
            f"(dwtDct, {order} channel order)"
        )
        means = f"carries Stable Diffusion's invisible watermark ({mark.name})"
        items.append(Evidence("watermark", "invisible-watermark dwtDct", value, True, means))


def _decode_dwtdct_blocks(pixels: np.ndarray, order: str = "BGR") -> np.ndarray:
    """One bit per 4x4 block, as invisible-watermark's ``dwtDct`` decoder reads them.

    This is ``imwatermark.maxDct.EmbedMaxDct.decode`` with the default scales ``[0, 36, 36]``
    (only the U channel is read), vectorised: the library loops over blocks in Python, about 50
    times slower, and depends on the GUI build of OpenCV. The U channel is OpenCV's
    ``cvtColor(..., COLOR_BGR2YUV)`` in its own fixed-point arithmetic (:func:`yuv_u`), so no
    OpenCV is needed. The Haar approximation band is computed
    as PyWavelets computes it (rows first, each output ``h * x[2i + 1] + h * x[2i]``), so the
    rounding, and with it every bit, is the same; ``tests/test_provenance.py`` checks this against
    the library. Blocks are in the library's (row-major) order, so bit ``k`` of an ``n``-bit
    payload is voted on by blocks ``k, k + n, k + 2n, ...``.

    Args:
        pixels: ``(H, W, 3)`` uint8 pixels.
        order: the channel order of ``pixels``: ``"BGR"`` (the default, what the library
            assumes) or ``"RGB"`` (the same as reversing the channels first, without a copy).

    Returns:
        A flat uint8 array of 0/1, one per block.
    """
    rows, cols = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    u = yuv_u(pixels[:rows, :cols], order).astype(np.float64)
    half = _HAAR
    u = u[1::2] * half + u[0::2] * half  # Haar low-pass down the rows, then along them
    approx = u[:, 1::2] * half + u[:, 0::2] * half
    n_rows, n_cols = approx.shape[0] // _WM_BLOCK, approx.shape[1] // _WM_BLOCK
    blocks = approx[: n_rows * _WM_BLOCK, : n_cols * _WM_BLOCK]
    blocks = blocks.reshape(n_rows, _WM_BLOCK, n_cols, _WM_BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(n_rows * n_cols, _WM_BLOCK * _WM_BLOCK)
    # The largest-magnitude coefficient after the first, its magnitude modulo the step.
    position = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    value = np.abs(blocks[np.arange(blocks.shape[0]), position])
    return (value % _WM_SCALE > 0.5 * _WM_SCALE).astype(np.uint8)


#: OpenCV's 8-bit RGB -> YUV coefficients, scaled by 2**14 (``imgproc/src/color_yuv``).
_YUV_SHIFT, _R2Y, _G2Y, _B2Y, _B2U = 14, 4899, 9617, 1868, 8061


def yuv_u(pixels: np.ndarray, order: str = "BGR") -> np.ndarray:
    """The U channel of uint8 ``(H, W, 3)`` pixels, bit for bit as OpenCV's
    ``cvtColor(pixels, COLOR_BGR2YUV)[..., 1]`` (``order="RGB"``: ``COLOR_RGB2YUV``)."""
    px = pixels.astype(np.int32)
    b, g, r = (
        (px[..., 0], px[..., 1], px[..., 2])
        if order == "BGR"
        else (
            px[..., 2],
            px[..., 1],
            px[..., 0],
        )
    )
    half = 1 << (_YUV_SHIFT - 1)
    y = (r * _R2Y + g * _G2Y + b * _B2Y + half) >> _YUV_SHIFT
    u = ((b - y) * _B2U + (128 << _YUV_SHIFT) + half) >> _YUV_SHIFT
    return np.clip(u, 0, 255).astype(np.uint8)


def _bit_errors(votes: np.ndarray, payload: np.ndarray) -> int:
    """Bits of ``payload`` that the block votes, repeated cyclically, decode differently."""
    n = len(payload)
    if votes.size < n:
        return n
    slot = np.arange(votes.size) % n
    ones = np.bincount(slot, weights=votes, minlength=n)
    counts = np.bincount(slot, minlength=n)
    decoded = ones / counts * 255 > 127  # the library's rounding of the mean vote
    return int(np.count_nonzero(decoded != payload.astype(bool)))


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _summarise(items: Iterable[Evidence], video: bool = False) -> str:
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
    return f"{where} {item.field} ({_shorten(item.value, 40)})"


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
