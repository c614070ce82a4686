"""Image metadata that Pillow reads from the header: EXIF, XMP (with IPTC) and PNG text chunks.

* **IPTC** ``Iptc4xmpExt:DigitalSourceType`` in the XMP packet.
* **XMP** ``xmp:CreatorTool``, ``tiff:Software``, ``stEvt:softwareAgent`` (edit history) and
  ``photoshop:Credit``, and **EXIF** ``Software`` (plus ``Make``/``Model`` and the WebUI's
  ``UserComment`` when they name a generator), matched against a list of known generators.
* **PNG** text chunks that generator tools write (the Stable Diffusion WebUI's ``parameters``,
  ComfyUI's ``prompt``/``workflow``, InvokeAI's ``invokeai_metadata``, NovelAI's ``Comment``).
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from PIL import Image

from fakescope.provenance.evidence import Evidence, shorten
from fakescope.provenance.vocabulary import generator_named, software_evidence, source_type_evidence

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


def exif_evidence(img: Image.Image, items: list[Evidence]) -> None:
    """EXIF Software (and Make, Model, ImageDescription, UserComment when telling)."""
    if img.format == "PNG" and "exif" not in img.info:
        return  # PIL would decode the whole image looking for a late eXIf chunk
    exif = img.getexif()
    software = _exif_text(exif.get(_EXIF_SOFTWARE))
    if software:
        items.append(
            software_evidence(
                "exif", "Software", software, "names the software that wrote the file"
            )
        )
    for tag, name in ((_EXIF_MAKE, "Make"), (_EXIF_MODEL, "Model")):
        value = _exif_text(exif.get(tag))
        if not value:
            continue
        if value.startswith(("workflow:", "prompt:")):  # ComfyUI's WebP/animated output
            means = "carries generation metadata written by ComfyUI"
            items.append(Evidence("exif", name, shorten(value), True, means))
        elif generator_named(value):
            items.append(software_evidence("exif", name, value, ""))
    texts = [("ImageDescription", _exif_text(exif.get(_EXIF_DESCRIPTION)))]
    with contextlib.suppress(KeyError, ValueError, TypeError, OSError, SyntaxError):
        comment = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT)
        texts.append(("UserComment", _user_comment(comment)))
    for name, text in texts:
        if text and _WEBUI_PARAMETERS.search(text):
            means = "carries generation parameters written by Stable Diffusion WebUI"
            items.append(Evidence("exif", name, shorten(text), True, means))


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


def xmp_evidence(img: Image.Image, items: list[Evidence]) -> None:
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
        items.append(source_type_evidence("iptc", "Iptc4xmpExt:DigitalSourceType", value))
    fields = (
        ("xmp", "CreatorTool", "names the software that wrote the file"),
        ("tiff", "Software", "names the software that wrote the file"),
        ("stEvt", "softwareAgent", "names software in the edit history"),
    )
    for prefix, local, means in fields:
        for value in _xmp_values(root, prefix, local):
            items.append(software_evidence("xmp", f"{prefix}:{local}", value, means))
    for value in _xmp_values(root, "photoshop", "Credit"):
        if generator_named(value):  # e.g. "Made with Google AI"; credits are usually people
            items.append(software_evidence("xmp", "photoshop:Credit", value, ""))


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


def png_evidence(chunks: dict, seen: set[str], items: list[Evidence]) -> None:
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
            items.append(Evidence("png", key, shorten(text), True, means))
        elif key == "Software":
            means = "names the software that wrote the file"
            items.append(software_evidence("png", key, text, means))
        elif key == "Source" and generator_named(text):
            items.append(software_evidence("png", key, text, ""))
        elif key == "Comment" and _novelai_comment(text):
            means = "carries generation parameters written by NovelAI"
            items.append(Evidence("png", key, shorten(text), True, means))


def _novelai_comment(text: str) -> bool:
    """True for NovelAI's JSON ``Comment`` (``{"prompt": ..., "steps": 28, "sampler": ...}``)."""
    if not text.startswith("{"):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and len(_NOVELAI_KEYS & data.keys()) >= 2
