"""Provenance evidence: what a file's metadata says about where it came from.

This sits beside the pixel score. It reads, without judging the pixels:

* **C2PA** manifests (Content Credentials) with ``c2pa-python``: the claim generator, the actions,
  any IPTC ``digitalSourceType`` that declares AI generation, and the signature's validation
  status, reported honestly (``valid``, ``invalid: <reason>`` or
  ``unverified (untrusted certificate)``) (:mod:`~fakescope.provenance.c2pa`).
* **IPTC** ``Iptc4xmpExt:DigitalSourceType`` in the XMP packet.
* **XMP** ``xmp:CreatorTool``, ``tiff:Software``, ``stEvt:softwareAgent`` (edit history) and
  ``photoshop:Credit``, and **EXIF** ``Software`` (plus ``Make``/``Model`` and the WebUI's
  ``UserComment`` when they name a generator), matched against a list of known generators
  (:mod:`~fakescope.provenance.metadata`, :mod:`~fakescope.provenance.vocabulary`).
* **PNG** text chunks that generator tools write (the Stable Diffusion WebUI's ``parameters``,
  ComfyUI's ``prompt``/``workflow``, InvokeAI's ``invokeai_metadata``, NovelAI's ``Comment``).
* **Stable Diffusion's invisible watermark** (the ``dwtDct`` method of ``invisible-watermark``) as
  the reference scripts embed it (:mod:`~fakescope.provenance.watermark`).

Metadata is trivially stripped or forged, so evidence of AI generation is strong when present,
and its absence proves nothing; the summary says so (:mod:`~fakescope.provenance.summary`).
:func:`read_provenance` (:mod:`~fakescope.provenance.reader`) never raises.

No torch, OpenCV or pandas here: provenance is read in the core install.
"""

from __future__ import annotations

from fakescope.provenance.c2pa import C2PA_TRUST_ANCHORS_ENV
from fakescope.provenance.evidence import MAX_VALUE_CHARS, Evidence, Provenance
from fakescope.provenance.reader import read_provenance

__all__ = [
    "C2PA_TRUST_ANCHORS_ENV",
    "MAX_VALUE_CHARS",
    "Evidence",
    "Provenance",
    "read_provenance",
]
