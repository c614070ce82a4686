"""Metadata shortcuts: can one header feature alone tell fake from real?

For every feature a one-feature classifier is scored by ROC-AUC, taken as ``max(AUC, 1 - AUC)`` so
that either direction counts:

* numeric features (width, height, aspect, megapixels, JPEG quality, bytes per pixel): the AUC of
  the raw value, and the out-of-fold AUC of a depth-2 decision tree on it (which also catches a
  middle band, e.g. fakes at exactly 512 px between smaller and larger reals); the larger counts.
  Rows where the feature is missing (JPEG quality of a PNG) are left out and the coverage kept.
* categorical features (format, subsampling, EXIF, camera make, colour mode, ICC profile,
  progressive): the fake rate of each category, learnt on the other folds (smoothed towards the
  overall rate) and scored out of fold, so a make seen once cannot fake a perfect split.

AUC >= 0.9 is a *strong* shortcut and >= 0.75 a *moderate* one; each gets a warning in plain words
that says what differs between the classes and what to do. A random forest on all features
together, cross-validated, gives a summary "metadata alone" AUC. Every AUC carries a bootstrap 95%
interval, and a flag on fewer than 30 images per class says it may be chance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from fakescope.audit.metadata import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from fakescope.eval.intervals import bootstrap_ci
from fakescope.eval.measures import fast_auc

logger = logging.getLogger(__name__)

STRONG_AUC = 0.9
MODERATE_AUC = 0.75
MAX_FOLDS = 5
SMALL_CLASS = 30
MIN_ROWS = 4
_SMOOTHING = 2.0
_SEED = 0

# name shown to people, the family the feature belongs to, and the remedy.
FEATURE_INFO: dict[str, tuple[str, str, str]] = {
    "format": ("File format", "format", "Re-encode every image the same way with --normalise."),
    "subsampling": (
        "JPEG chroma subsampling",
        "format",
        "Re-encode every image the same way with --normalise.",
    ),
    "jpeg_quality": (
        "JPEG quality",
        "format",
        "Re-encode every image at one JPEG quality with --normalise.",
    ),
    "mode": ("Colour mode", "format", "Convert every image to RGB (--normalise does)."),
    "icc_profile": ("Embedded ICC colour profile", "format", "Strip or normalise the profiles."),
    "progressive": ("Progressive JPEG encoding", "format", "Re-encode with --normalise."),
    "exif": ("EXIF presence", "metadata", "Strip metadata, or never feed it to the detector."),
    "camera_make": ("Camera make (EXIF)", "metadata", "Strip metadata from both classes."),
    "width": (
        "Resolution (width)",
        "size",
        "Resize every image to one size with --normalise.",
    ),
    "height": (
        "Resolution (height)",
        "size",
        "Resize every image to one size with --normalise.",
    ),
    "megapixels": (
        "Resolution (pixel count)",
        "size",
        "Resize every image to one size with --normalise.",
    ),
    "aspect": (
        "Aspect ratio",
        "size",
        "Crop every image to one shape (--normalise centre-crops to a square).",
    ),
    "bytes_per_pixel": (
        "File size per pixel",
        "compression",
        "Re-encode every image the same way with --normalise; if it stays, it reflects content.",
    ),
}


@dataclass
class FeatureScore:
    """How well one feature alone separates the classes.

    Attributes:
        feature: Column name in the feature table.
        name: Readable name.
        family: ``format``, ``size``, ``metadata`` or ``compression``.
        kind: ``numeric`` or ``categorical``.
        auc: ``max(AUC, 1 - AUC)`` of the best one-feature classifier, or None when undefined.
        auc_ci: Bootstrap 95% interval of ``auc``.
        method: Which classifier gave ``auc``.
        n: Rows where the feature is present.
        coverage: ``n`` over all readable rows.
        level: ``strong``, ``moderate`` or ``none``.
        detail: What differs between the classes, in words.
        warning: The plain-words warning, empty when not flagged.
    """

    feature: str
    name: str
    family: str
    kind: str
    auc: float | None
    auc_ci: list[float] | None
    method: str
    n: int
    coverage: float
    level: str = "none"
    detail: str = ""
    warning: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# AUC helpers
# --------------------------------------------------------------------------------------------


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC-AUC, or None for one class."""
    if np.unique(y).size < 2:
        return None
    return fast_auc(y, s)


def _two_sided(y: np.ndarray, s: np.ndarray) -> float:
    """``max(AUC, 1 - AUC)``; raises ValueError for one class (for the bootstrap)."""
    auc = _auc(y, s)
    if auc is None:
        raise ValueError("one class")
    return max(auc, 1.0 - auc)


def _folds(y: np.ndarray) -> StratifiedKFold | None:
    """Stratified folds for ``y``, or None when a class has fewer than two rows."""
    counts = np.bincount(y.astype(np.int64), minlength=2)
    k = min(MAX_FOLDS, int(counts.min()))
    if k < 2:
        return None
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=_SEED)


def _out_of_fold(
    y: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray | None:
    """Out-of-fold scores from ``fit_predict(train_idx, test_idx) -> scores``."""
    folds = _folds(y)
    if folds is None:
        return None
    scores = np.zeros(len(y), dtype=np.float64)
    for train, test in folds.split(np.zeros(len(y)), y):
        scores[test] = fit_predict(train, test)
    return scores


def _ci(y: np.ndarray, s: np.ndarray, n_boot: int) -> list[float] | None:
    """Bootstrap interval of the two-sided AUC."""
    ci = bootstrap_ci(y, s, _two_sided, n_boot=n_boot, seed=_SEED)
    return list(ci) if ci is not None else None


# --------------------------------------------------------------------------------------------
# One feature
# --------------------------------------------------------------------------------------------


def _numeric_scores(y: np.ndarray, x: np.ndarray) -> tuple[float | None, str, np.ndarray]:
    """Best of the raw-value AUC and the out-of-fold depth-2 tree AUC, with its scores."""
    raw = _auc(y, x)
    if raw is None:
        return None, "raw value", x
    best, method, scores = max(raw, 1 - raw), "raw value", x

    def tree(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = DecisionTreeClassifier(max_depth=2, min_samples_leaf=3, random_state=_SEED)
        model.fit(x[train, None], y[train])
        return model.predict_proba(x[test, None])[:, -1]

    if np.unique(x).size > 1:
        oof = _out_of_fold(y, tree)
        tree_auc = _auc(y, oof) if oof is not None else None
        if tree_auc is not None and max(tree_auc, 1 - tree_auc) > best + 0.02:
            best, method, scores = max(tree_auc, 1 - tree_auc), "depth-2 tree, out of fold", oof
    return best, method, scores


def _category_rate_scores(y: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """Out-of-fold smoothed fake rate of each row's category."""

    def rates(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        prior = float(y[train].mean())
        table = pd.DataFrame({"c": x[train], "y": y[train]}).groupby("c")["y"].agg(["sum", "count"])
        rate = (table["sum"] + _SMOOTHING * prior) / (table["count"] + _SMOOTHING)
        return pd.Series(x[test]).map(rate).fillna(prior).to_numpy(dtype=np.float64)

    return _out_of_fold(y, rates)


def _categorical_scores(y: np.ndarray, x: np.ndarray) -> tuple[float | None, str, np.ndarray]:
    """Out-of-fold AUC of the per-category fake rate."""
    if np.unique(x).size < 2:
        return 0.5, "category fake rate, out of fold", np.zeros(len(y))
    oof = _category_rate_scores(y, x)
    if oof is None:
        return None, "category fake rate, out of fold", np.zeros(len(y))
    auc = _auc(y, oof)
    best = None if auc is None else max(auc, 1 - auc)
    return best, "category fake rate, out of fold", oof


def _level(auc: float | None) -> str:
    """``strong``, ``moderate`` or ``none``."""
    if auc is None:
        return "none"
    if auc >= STRONG_AUC:
        return "strong"
    return "moderate" if auc >= MODERATE_AUC else "none"


def score_feature(features: pd.DataFrame, feature: str, n_boot: int = 1000) -> FeatureScore | None:
    """Score one feature of an :func:`~fakescope.audit.metadata.extract_features` table.

    Args:
        features: The feature table (readable rows, with ``label``).
        feature: A name from :data:`NUMERIC_FEATURES` or :data:`CATEGORICAL_FEATURES`.
        n_boot: Bootstrap resamples for the interval.

    Returns:
        The score, or None when fewer than :data:`MIN_ROWS` rows have the feature.
    """
    numeric = feature in NUMERIC_FEATURES
    col = features[feature]
    present = col.notna().to_numpy()
    if present.sum() < MIN_ROWS:
        return None
    y = features["label"].to_numpy()[present].astype(np.int64)
    if numeric:
        x = col.to_numpy(dtype=np.float64)[present]
        auc, method, scores = _numeric_scores(y, x)
    else:
        x = col.astype(str).to_numpy()[present]
        auc, method, scores = _categorical_scores(y, x)
    name, family, _ = FEATURE_INFO[feature]
    ci = _ci(y, scores, n_boot) if auc is not None and np.unique(scores).size > 1 else None
    score = FeatureScore(
        feature=feature,
        name=name,
        family=family,
        kind="numeric" if numeric else "categorical",
        auc=auc,
        auc_ci=ci,
        method=method,
        n=int(present.sum()),
        coverage=float(present.mean()),
        level=_level(auc),
    )
    score.detail = _describe(feature, y, x, numeric)
    if score.level != "none":
        score.warning = _warning(score, y)
    return score


# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------


_UNITS = {"width": " px", "height": " px", "megapixels": " MP", "bytes_per_pixel": " bytes/pixel"}
_FORMATS = {"width": ".0f", "height": ".0f", "jpeg_quality": ".0f", "megapixels": ".3g"}


def _fmt_value(feature: str, value: float, unit: bool = True) -> str:
    """A numeric value, with its unit unless ``unit`` is False."""
    text = format(value, _FORMATS.get(feature, ".2f"))
    return text + (_UNITS.get(feature, "") if unit else "")


def _category_shares(x: np.ndarray) -> list[tuple[str, float]]:
    """Categories by share, largest first."""
    counts = pd.Series(x).value_counts(normalize=True)
    return [(str(k) if str(k) else "(none)", float(v)) for k, v in counts.items()]


def _shares_text(shares: list[tuple[str, float]], top: int = 3) -> str:
    """``"PNG 80%, JPEG 20%"``."""
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares[:top])


def _describe(feature: str, y: np.ndarray, x: np.ndarray, numeric: bool) -> str:
    """What each class looks like on this feature."""
    parts = []
    for label, word in ((1, "fakes"), (0, "reals")):
        values = x[y == label]
        if len(values) == 0:
            continue
        if numeric:
            lo, mid, hi = np.percentile(values.astype(np.float64), [5, 50, 95])
            if lo == hi:
                parts.append(f"{word}: all {_fmt_value(feature, mid)}")
            else:
                parts.append(
                    f"{word}: median {_fmt_value(feature, mid)} (90% within "
                    f"{_fmt_value(feature, lo, unit=False)}–{_fmt_value(feature, hi)})"
                )
        else:
            parts.append(f"{word}: {_shares_text(_category_shares(values))}")
    return "; ".join(parts)


def _every_sentence(feature: str, y: np.ndarray, x: np.ndarray) -> str:
    """``"every fake is PNG and every real is JPEG"`` when each class has one category."""
    fake, real = set(x[y == 1].tolist()), set(x[y == 0].tolist())
    if len(fake) == 1 and len(real) == 1 and fake != real:
        name = FEATURE_INFO[feature][0].lower()
        f, r = (str(next(iter(s))) or "(none)" for s in (fake, real))
        if feature in ("exif", "icc_profile", "progressive"):
            f = "with" if f == "True" else "without"
            r = "with" if r == "True" else "without"
            return f"every fake is {f} and every real is {r} {name}"
        return f"every fake is {f} and every real is {r}"
    return ""


def _warning(score: FeatureScore, y: np.ndarray) -> str:
    """The plain-words warning for a flagged feature."""
    strength = (
        "alone separates the classes" if score.level == "strong" else "alone predicts the class"
    )
    interval = f" [95% CI {score.auc_ci[0]:.2f}–{score.auc_ci[1]:.2f}]" if score.auc_ci else ""
    what = score.detail
    lead = f"{score.name} {strength} (AUC {score.auc:.2f}{interval}): "
    coverage = "" if score.coverage >= 0.999 else f" (among the {score.n} images that have it)"
    learn = {
        "format": "the file format",
        "size": "the image size",
        "metadata": "the metadata",
        "compression": "how the files were compressed",
    }[score.family]
    text = (
        f"{lead}{what}{coverage}. A detector can learn {learn} instead of the generator. "
        f"{FEATURE_INFO[score.feature][2]}"
    )
    counts = np.bincount(y, minlength=2)
    if counts.min() < SMALL_CLASS:
        text += (
            f" With only {int(counts.min())} images in the smaller class this could be chance;"
            " check it on more data."
        )
    return text


def _strengthen_detail(score: FeatureScore, features: pd.DataFrame) -> None:
    """Use the "every fake is X and every real is Y" wording for clean categorical splits."""
    if score.kind != "categorical" or score.level == "none":
        return
    y = features["label"].to_numpy().astype(np.int64)
    every = _every_sentence(score.feature, y, features[score.feature].astype(str).to_numpy())
    if every:
        score.detail = every
        score.warning = _warning(score, y)


# --------------------------------------------------------------------------------------------
# All features together
# --------------------------------------------------------------------------------------------


def _design_matrix(features: pd.DataFrame) -> np.ndarray:
    """Numeric features (missing as -1 plus an indicator) and one-hot categorical features."""
    parts = []
    for name in NUMERIC_FEATURES:
        col = features[name].to_numpy(dtype=np.float64)
        missing = np.isnan(col)
        parts.append(np.where(missing, -1.0, col)[:, None])
        if missing.any():
            parts.append(missing.astype(np.float64)[:, None])
    dummies = pd.get_dummies(features[list(CATEGORICAL_FEATURES)].astype(str), dtype=np.float64)
    parts.append(dummies.to_numpy())
    return np.hstack(parts)


def all_features_auc(features: pd.DataFrame, n_boot: int = 1000) -> dict[str, Any]:
    """Cross-validated AUC of a random forest on every metadata feature at once.

    Args:
        features: Readable rows of the feature table, with ``label``.
        n_boot: Bootstrap resamples for the interval.

    Returns:
        ``{"auc", "auc_ci", "level", "folds", "method"}``; ``auc`` is None when a class has fewer
        than two rows.
    """
    y = features["label"].to_numpy().astype(np.int64)
    x = _design_matrix(features)

    def forest(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = RandomForestClassifier(
            n_estimators=200, min_samples_leaf=2, random_state=_SEED, n_jobs=1
        )
        model.fit(x[train], y[train])
        return model.predict_proba(x[test])[:, -1]

    folds = _folds(y)
    oof = _out_of_fold(y, forest)
    auc = _auc(y, oof) if oof is not None else None
    ci = bootstrap_ci(y, oof, _roc, n_boot=n_boot, seed=_SEED) if auc is not None else None
    return {
        "auc": auc,
        "auc_ci": list(ci) if ci is not None else None,
        "level": _level(auc),
        "folds": folds.get_n_splits() if folds is not None else 0,
        "method": "random forest on all metadata features, out of fold",
    }


def _roc(y: np.ndarray, s: np.ndarray) -> float:
    """Plain ROC-AUC that raises ValueError for one class."""
    auc = _auc(y, s)
    if auc is None:
        raise ValueError("one class")
    return auc


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def find_shortcuts(features: pd.DataFrame, n_boot: int = 1000) -> dict[str, Any]:
    """Score every metadata feature and the metadata-only classifier; write the warnings.

    Args:
        features: An :func:`~fakescope.audit.metadata.extract_features` table (unreadable rows,
            with ``error`` set, are left out).
        n_boot: Bootstrap resamples for the intervals.

    Returns:
        ``{"features": [FeatureScore dicts, highest AUC first], "all_features": {...},
        "warnings": [str], "flagged": [feature names], "clean": {"format": bool, "size": bool,
        "metadata": bool, "compression": bool}}``.
    """
    ok = (
        features[features["error"].isna()].reset_index(drop=True)
        if "error" in features
        else features
    )
    scores: list[FeatureScore] = []
    if ok["label"].nunique() < 2:
        logger.warning("only one class among the readable files: no shortcut can be measured")
    else:
        for feature in (*CATEGORICAL_FEATURES, *NUMERIC_FEATURES):
            score = score_feature(ok, feature, n_boot=n_boot)
            if score is not None:
                _strengthen_detail(score, ok)
                scores.append(score)
    scores.sort(key=lambda s: -(s.auc or 0.0))
    combined = (
        all_features_auc(ok, n_boot=n_boot)
        if ok["label"].nunique() == 2
        else {"auc": None, "auc_ci": None, "level": "none", "folds": 0, "method": ""}
    )
    warnings_out = family_warnings(scores)
    if _RANK[combined["level"]] > max((_RANK[s.level] for s in scores), default=0):
        warnings_out.append(_combined_warning(combined))
    flagged = [s.feature for s in scores if s.level != "none"]
    clean = {
        family: not any(s.family == family and s.level != "none" for s in scores)
        for family in ("format", "size", "metadata", "compression")
    }
    return {
        "features": [s.to_dict() for s in scores],
        "all_features": combined,
        "warnings": warnings_out,
        "flagged": flagged,
        "clean": clean,
    }


_RANK = {"none": 0, "moderate": 1, "strong": 2}


def family_warnings(scores: list[FeatureScore]) -> list[str]:
    """One warning per feature family: its strongest feature, naming the others flagged with it.

    Args:
        scores: Feature scores, highest AUC first.

    Returns:
        The warnings, strongest family first.
    """
    out = []
    seen: set[str] = set()
    for score in scores:
        if not score.warning or score.family in seen:
            continue
        seen.add(score.family)
        others = [
            f"{s.name} {s.auc:.2f}"
            for s in scores
            if s is not score and s.family == score.family and s.warning and s.auc is not None
        ]
        out.append(score.warning + (f" Also flagged: {', '.join(others)}." if others else ""))
    return out


def _combined_warning(combined: dict[str, Any]) -> str:
    """Warning for the all-features classifier."""
    ci = combined["auc_ci"]
    interval = f" [95% CI {ci[0]:.2f}–{ci[1]:.2f}]" if ci else ""
    return (
        f"Metadata alone predicts the class (AUC {combined['auc']:.2f}{interval}, "
        f"{combined['method']}): together the header features carry the label, so a detector "
        "does not need to look at the content. See the per-feature table for which ones."
    )
