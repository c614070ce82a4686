"""A :class:`~fakescope.eval.result.Metrics` report as a few lines of text for the terminal
(:func:`format_summary`); the HTML report is :mod:`fakescope.eval.report`."""

from __future__ import annotations

from collections.abc import Sequence

from fakescope.eval.intervals import is_zero_width
from fakescope.eval.result import Metrics

__all__ = ["format_summary"]


def _fmt(value: float | None, digits: int = 3) -> str:
    """Format a number or return ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: Sequence[float] | None) -> str:
    """Format an interval as `` [lo, hi]`` (flagged when of zero width) or an empty string."""
    if ci is None:
        return ""
    flag = " (zero width: see warnings)" if is_zero_width(ci) else ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]{flag}"


def format_summary(metrics: Metrics) -> str:
    """Render a metric report as a few readable lines.

    Args:
        metrics: Output of :func:`fakescope.eval.metrics.compute_metrics` (or
            :meth:`Metrics.load` of a saved ``metrics.json``).

    Returns:
        Headline line, secondary line, the TPR line, the classification report and the warnings.
    """
    m = metrics
    head = (
        f"accuracy {_fmt(m.accuracy)}{_fmt_ci(m.accuracy_ci)}  "
        f"ROC-AUC {_fmt(m.roc_auc)}{_fmt_ci(m.roc_auc_ci)}  "
        f"AP {_fmt(m.average_precision)}  "
        f"real acc {_fmt(m.real_acc, 2)}  fake acc {_fmt(m.fake_acc, 2)}  "
        f"(n={m.n})"
    )
    second = (
        f"exact 95% CI for accuracy{_fmt_ci(m.accuracy_exact_ci)}  "
        f"balanced acc {_fmt(m.balanced_accuracy)}  "
        f"log loss {_fmt(m.log_loss)}  brier {_fmt(m.brier)}  "
        f"threshold {_fmt(m.threshold, 2)}  "
        f"(real {m.n_real}, fake {m.n_fake})"
    )
    third = (
        f"TPR@1%FPR {_fmt(m.tpr_at_fpr_1)}{_fmt_ci(m.tpr_at_fpr_1_ci)}  "
        f"TPR@5%FPR {_fmt(m.tpr_at_fpr_5)}{_fmt_ci(m.tpr_at_fpr_5_ci)}  "
        f"ECE {_fmt(m.ece)}"
    )
    lines = [head, second, third]
    if m.classification_report_text:
        lines += ["", m.classification_report_text.rstrip()]
    if m.warnings:
        lines += ["", "Warnings:"] + [f"  - {w}" for w in m.warnings]
    return "\n".join(lines)
