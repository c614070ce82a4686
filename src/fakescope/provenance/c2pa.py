"""C2PA manifests (Content Credentials), read with ``c2pa-python``.

The claim generator, the actions, any IPTC ``digitalSourceType`` that declares AI generation,
and the signature's validation status, reported honestly (``valid``, ``invalid: <reason>`` or
``unverified (untrusted certificate)``). Nothing is fetched online; trust anchors come from
``$FAKESCOPE_C2PA_TRUST_ANCHORS`` (:data:`C2PA_TRUST_ANCHORS_ENV`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fakescope.provenance.evidence import Evidence, describe, shorten
from fakescope.provenance.vocabulary import generator_named, software_evidence, source_type_evidence

# Set to a PEM file of trusted C2PA root certificates (for example the C2PA trust list) to tell
# "valid" signatures from "unverified (untrusted certificate)" ones; without it none is trusted.
C2PA_TRUST_ANCHORS_ENV = "FAKESCOPE_C2PA_TRUST_ANCHORS"

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
                errors.append(f"c2pa: cannot read trust anchors {anchors_file}: {describe(exc)}")
                return c2pa.Context.from_dict(settings)  # not cached: retried next time
        context = c2pa.Context.from_dict(settings)
        _c2pa_cache.clear()
        _c2pa_cache[key] = context
        return context


def read_c2pa(file: Path, items: list[Evidence], errors: list[str]) -> None:
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
                    shorten(remote.group(1)),
                    False,
                    "refers to a C2PA manifest stored online (not fetched)",
                    "not checked (remote manifest)",
                )
            )
            return
        errors.append(f"c2pa: could not read manifest: {describe(exc)}")
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
        found.append(Evidence("c2pa", "manifest", shorten(str(active)), False, "has a manifest"))
    for item in found:
        item.signature = signature
    return found


def _manifest_evidence(manifest: dict, prefix: str) -> Iterator[Evidence]:
    """The claim generator and actions of one manifest."""
    for generator in _claim_generators(manifest):
        yield software_evidence(
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
            yield source_type_evidence("c2pa", field_name, source_type)
        agent = _agent_name(action.get("softwareAgent"))
        if agent and generator_named(agent):
            yield software_evidence(
                "c2pa", f"{prefix}c2pa.actions: {name} softwareAgent", agent, ""
            )
    if names:
        yield Evidence(
            "c2pa",
            f"{prefix}c2pa.actions",
            shorten(", ".join(names)),
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
            "c2pa", "signature_info", shorten(", ".join(parts)), False, "who signed the manifest"
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
        return shorten(f"invalid: {reason}", 120)
    if state == "Trusted":
        return "valid"
    if codes & _TRUST_CODES:
        return "unverified (untrusted certificate)"
    if state == "Valid":
        return "valid (certificate trust not checked)"
    return f"unknown ({state})" if state else "unknown"
