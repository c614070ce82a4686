"""Dataset audits: metadata shortcuts (format, size, JPEG quality, EXIF) and near-duplicate leakage.

The entry point is :func:`fakescope.audit.report.run_audit`; the pieces are
:mod:`~fakescope.audit.metadata` (per-file header features), :mod:`~fakescope.audit.shortcuts`
(one-feature classifiers and plain-words warnings) and :mod:`~fakescope.audit.duplicates`
(perceptual hashes and leakage across splits).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_audit"]


def run_audit(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Audit a dataset; see :func:`fakescope.audit.report.run_audit` (imported lazily)."""
    from fakescope.audit.report import run_audit as _run_audit

    return _run_audit(*args, **kwargs)
