"""Tests for fakescope.eval.metrics against scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
)

from fakescope.eval.metrics import (
    bootstrap_ci,
    compute_metrics,
    exact_binomial_ci,
    fast_auc,
    fast_average_precision,
    format_summary,
)

N_BOOT = 200


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy but informative scores for 300 images with a group column."""
    rng = np.random.default_rng(42)
    y = rng.integers(0, 2, size=300)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.2, size=300), 0, 1)
    groups = rng.choice(["a", "b", "c"], size=300)
    return y, score, groups


def test_matches_sklearn(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    m = compute_metrics(y, s, n_boot=N_BOOT)
    pred = (s >= 0.5).astype(int)
    assert m["n"] == 300 and m["n_real"] + m["n_fake"] == 300
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    cm = confusion_matrix(y, pred, labels=[0, 1])
    assert m["confusion_matrix"] == cm.tolist()
    assert m["real_acc"] == pytest.approx(cm[0, 0] / cm[0].sum())
    assert m["fake_acc"] == pytest.approx(cm[1, 1] / cm[1].sum())
    expected = classification_report(
        y, pred, labels=[0, 1], target_names=["real", "fake"], output_dict=True, zero_division=0
    )
    got = m["classification_report"]
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == pytest.approx(value), key
    assert "precision" in m["classification_report_text"]
    assert m["log_loss"] > 0 and 0 < m["brier"] < 1


def test_threshold_respected(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    for threshold in (0.3, 0.7):
        m = compute_metrics(y, s, threshold=threshold, n_boot=N_BOOT)
        pred = (s >= threshold).astype(int)
        assert m["threshold"] == threshold
        assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert compute_metrics([1], [0.5], threshold=0.5, n_boot=10)["accuracy"] == 1.0


def test_intervals_contain_estimate(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    m = compute_metrics(y, s, n_boot=N_BOOT)
    for key in ("accuracy", "roc_auc", "average_precision"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi and lo < hi
    lo, hi = m["accuracy_exact_ci"]
    assert 0 <= lo <= m["accuracy"] <= hi <= 1


def test_bootstrap_reproducible(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    a = bootstrap_ci(y, s, roc_auc_score, n_boot=N_BOOT, seed=3)
    b = bootstrap_ci(y, s, roc_auc_score, n_boot=N_BOOT, seed=3)
    c = bootstrap_ci(y, s, roc_auc_score, n_boot=N_BOOT, seed=4)
    assert a == b
    assert a != c
    assert compute_metrics(y, s, n_boot=N_BOOT, seed=1) == compute_metrics(
        y, s, n_boot=N_BOOT, seed=1
    )


def test_bootstrap_none_when_mostly_invalid() -> None:
    y, s = np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9])

    def always_invalid(yt: np.ndarray, st: np.ndarray) -> float:
        raise ValueError("needs both classes")

    assert bootstrap_ci(y, s, always_invalid, n_boot=N_BOOT) is None
    assert bootstrap_ci(y, s, lambda yt, st: float("nan"), n_boot=N_BOOT) is None
    ci = bootstrap_ci(y, s, roc_auc_score, n_boot=N_BOOT)  # ~70% of resamples have both
    assert ci == (1.0, 1.0)


def test_exact_ci() -> None:
    lo, hi = exact_binomial_ci(31, 31)
    assert lo == pytest.approx(0.888, abs=1e-3)
    assert hi == 1.0
    assert exact_binomial_ci(0, 10)[0] == 0.0
    lo, hi = exact_binomial_ci(5, 10)
    assert lo == pytest.approx(0.187, abs=1e-3) and hi == pytest.approx(0.813, abs=1e-3)


def test_one_class_does_not_crash() -> None:
    m = compute_metrics([0] * 40, np.linspace(0, 0.6, 40), n_boot=N_BOOT)
    assert m["roc_auc"] is None and m["roc_auc_ci"] is None
    assert m["average_precision"] is None
    assert m["fake_acc"] is None and m["real_acc"] is not None
    assert "AUC is undefined: the set has only real images." in m["warnings"]
    json.dumps(m, allow_nan=False)
    assert "ROC-AUC n/a" in format_summary(m)


def test_breakdown_matches_subsets(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, groups = data
    sources = np.where(y == 1, "gen", "camera")
    m = compute_metrics(y, s, groups={"group": list(groups), "source": sources}, n_boot=N_BOOT)
    assert set(m["breakdown"]["group"]) == {"a", "b", "c"}
    for value, cell in m["breakdown"]["group"].items():
        mask = groups == value
        sub = compute_metrics(y[mask], s[mask], n_boot=10)
        for key in ("n", "n_real", "n_fake", "accuracy", "roc_auc", "real_acc", "fake_acc"):
            assert cell[key] == pytest.approx(sub[key]), key
    camera = m["breakdown"]["source"]["camera"]
    assert camera["n_fake"] == 0 and camera["roc_auc"] is None and camera["fake_acc"] is None


def test_small_n_warning() -> None:
    y = np.array([0] * 15 + [1] * 16)
    m = compute_metrics(y, np.where(y == 1, 0.9, 0.1), n_boot=N_BOOT)
    assert m["accuracy"] == 1.0
    text = " ".join(m["warnings"])
    assert "Only 31 test images: accuracy 100.0% has a 95% interval of 88.8–100.0%" in text
    assert "bootstrap cannot show uncertainty" in text
    assert "fewer than 30" in text
    assert m["accuracy_exact_ci"][0] == pytest.approx(0.888, abs=1e-3)


def test_json_serialisable(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, groups = data
    m = compute_metrics(y, s, groups={"group": groups}, n_boot=N_BOOT)
    loaded = json.loads(json.dumps(m, allow_nan=False))
    assert loaded == m
    summary = format_summary(m)
    assert summary.startswith("accuracy ") and "(n=300)" in summary


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5], n_boot=10)
    with pytest.raises(ValueError):
        compute_metrics([0, 2], [0.5, 0.5], n_boot=10)
    with pytest.raises(ValueError):
        compute_metrics([], [], n_boot=10)


def test_metrics_does_not_import_matplotlib() -> None:
    code = "import sys, fakescope.eval.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fast_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # with ties
    assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    with pytest.raises(ValueError):
        fast_auc(np.ones(5), s[:5])


@pytest.mark.parametrize("seed", range(5))
def test_fast_metrics_equal_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), int(rng.integers(1, 4)))  # many ties
    assert fast_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert fast_average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    with pytest.raises(ValueError):
        fast_average_precision(np.zeros(4), s[:4])
