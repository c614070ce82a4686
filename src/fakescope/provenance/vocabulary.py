"""What names or declares AI generation: IPTC digital source types and known generators.

The C2PA and metadata readers turn a software field or a source type into an
:class:`~fakescope.provenance.evidence.Evidence` item here, so both judge names alike.
"""

from __future__ import annotations

import re

from fakescope.provenance.evidence import Evidence, shorten

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


def generator_named(text: str) -> str | None:
    """The known AI image generator that ``text`` names (``"Stable Diffusion"``...), or None."""
    for name, pattern in _GENERATORS:
        if pattern.search(text):
            return name
    return None


def software_evidence(source: str, name: str, value: str, what: str) -> Evidence:
    """An item for a software field: ``ai=True`` when it names a known generator."""
    generator = generator_named(value)
    if generator is not None:
        return Evidence(source, name, shorten(value), True, f"names a generator ({generator})")
    return Evidence(source, name, shorten(value), False, what)


def source_type_evidence(source: str, name: str, value: str) -> Evidence:
    """An item for an IPTC digital source type (a vocabulary URL or a bare term)."""
    term = value.strip().rstrip("/").rsplit("/", 1)[-1]
    ai, means = _SOURCE_TYPES.get(term.lower(), (False, f"declares the source type {term!r}"))
    return Evidence(source, name, shorten(value), ai, means)
