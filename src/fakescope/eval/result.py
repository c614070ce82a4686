"""The metric report of an evaluation as a typed value: :class:`Metrics`, what
:func:`fakescope.eval.metrics.compute_metrics` returns and ``metrics.json`` holds.

Fields are declared in the order ``metrics.json`` lists them, so :meth:`Metrics.to_json_dict`
gives back the file's keys in that order. A value that could not be computed (AUC on one class,
NaN) is None and written as ``null``; the fields that some runs add and others do not
(``uncertain_band``, the cross-validation and skip counts, a breakdown cell's pooled groups) are
left out of the file when unset, not written as ``null``.

:meth:`Metrics.load` reads a saved ``metrics.json``, including those of earlier versions: keys it
does not know are ignored, and the metrics added after the first release (intervals, TPR at a
fixed FPR, ECE) default to None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from fakescope.config import validation_message
from fakescope.eval.measures import ECE_BINS, FPR_TARGETS

__all__ = [
    "FoldSummary",
    "Interval",
    "Metrics",
    "MetricsFileError",
    "Spread",
    "SubsetSummary",
    "TprAtFpr",
]

#: A 95% interval ``(lo, hi)``; a list in JSON.
Interval = tuple[float, float]


class MetricsFileError(ValueError):
    """A ``metrics.json`` that is not JSON, or whose values have the wrong types (one line naming
    the file and the bad keys)."""


class _Record(BaseModel):
    """A JSON record whose fields in :attr:`_omit_when_none` are left out, not ``null``, while
    unset."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    _omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self._omit_when_none:
            if name in data and getattr(self, name) is None:
                del data[name]
        return data


class SubsetSummary(_Record):
    """The metrics of one breakdown cell (one group value, or the pooled small groups)."""

    _omit_when_none: ClassVar[frozenset[str]] = frozenset({"n_groups", "groups"})

    n: int
    n_real: int
    n_fake: int
    accuracy: float
    accuracy_exact_ci: Interval | None = Field(
        None, description="exact (Clopper–Pearson) 95% interval; absent in older files"
    )
    roc_auc: float | None = None
    real_acc: float | None = None
    fake_acc: float | None = None
    n_groups: int | None = Field(None, description="the pooled cell only: how many groups")
    groups: list[str] | None = Field(None, description="the pooled cell only: their values")


class FoldSummary(_Record):
    """One cross-validation fold's AUC and accuracy with their bootstrap intervals."""

    fold: int
    n: int
    roc_auc: float | None
    roc_auc_ci: Interval | None
    accuracy: float
    accuracy_ci: Interval | None
    threshold: float


class Spread(_Record):
    """Mean and standard deviation over folds (None when no fold had the value)."""

    mean: float | None
    std: float | None


class TprAtFpr(NamedTuple):
    """The TPR at one target FPR, with its bootstrap interval."""

    fpr: float
    value: float | None
    ci: Interval | None


class Metrics(_Record):
    """The metric report of a binary real/fake evaluation (``metrics.json``).

    Proportions are in [0, 1]; ``*_ci`` are bootstrap 95% intervals and ``accuracy_exact_ci`` the
    exact one. ``breakdown`` maps a grouping column to its values' :class:`SubsetSummary`.
    """

    _omit_when_none: ClassVar[frozenset[str]] = frozenset(
        {"uncertain_band", "n_rows", "n_skipped", "folds", "fold_auc", "fold_accuracy"}
    )

    n: int
    n_real: int
    n_fake: int
    threshold: float | None = None
    accuracy: float
    accuracy_ci: Interval | None = None
    accuracy_exact_ci: Interval | None = None
    balanced_accuracy: float | None = None
    roc_auc: float | None = None
    roc_auc_ci: Interval | None = None
    average_precision: float | None = None
    average_precision_ci: Interval | None = None
    tpr_at_fpr_1: float | None = None
    tpr_at_fpr_1_ci: Interval | None = None
    tpr_at_fpr_5: float | None = None
    tpr_at_fpr_5_ci: Interval | None = None
    real_acc: float | None = None
    fake_acc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    ece: float | None = None
    ece_bins: int = ECE_BINS
    uncertain_band: float | None = Field(
        None, description="the detector's uncertain half-width around the threshold, when known"
    )
    confusion_matrix: list[list[int]] | None = None
    classification_report: dict[str, dict[str, float] | float] = Field(default_factory=dict)
    classification_report_text: str = ""
    breakdown: dict[str, dict[str, SubsetSummary]] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    # added by the callers, after compute_metrics
    n_rows: int | None = Field(None, description="cross-validation: rows in the manifest")
    n_skipped: int | None = Field(None, description="images left out (unreadable, unscored)")
    folds: list[FoldSummary] | None = Field(None, description="cross-validation: per fold")
    fold_auc: Spread | None = Field(None, description="cross-validation: AUC over folds")
    fold_accuracy: Spread | None = Field(None, description="cross-validation: accuracy over folds")

    def tprs(self) -> tuple[TprAtFpr, ...]:
        """The TPR at each target FPR of :data:`fakescope.eval.measures.FPR_TARGETS`."""
        return tuple(
            TprAtFpr(fpr, getattr(self, key), getattr(self, f"{key}_ci"))
            for key, fpr in FPR_TARGETS
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` content: plain JSON values in field order, None as ``null``
        (but unset optional fields left out)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "metrics") -> Metrics:
        """Check ``data`` (a parsed ``metrics.json``) and make it a :class:`Metrics`.

        Raises:
            MetricsFileError: ``data`` is no JSON object, or a value has the wrong type; the
                message starts with ``source``.
        """
        if not isinstance(data, dict):
            raise MetricsFileError(
                f"{source}: expected a JSON object of metrics, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise MetricsFileError(f"{source}: {validation_message(e, cls, 'key')}") from None

    @classmethod
    def load(cls, path: str | Path) -> Metrics:
        """Read a saved ``metrics.json`` (this version's or an earlier one's).

        Raises:
            FileNotFoundError: The file does not exist.
            MetricsFileError: It is not JSON, or a value has the wrong type (naming the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MetricsFileError(f"{path}: not a JSON metrics file ({e})") from None
        return cls.from_json_dict(data, str(path))
