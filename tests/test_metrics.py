"""Tests for fakescope.eval.metrics against scikit-learn."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from fakescope.eval import intervals, measures, metrics
from fakescope.eval.intervals import bootstrap_ci, exact_binomial_ci, is_zero_width
from fakescope.eval.measures import (
    expected_calibration_error,
    fast_auc,
    fast_average_precision,
    reliability_bins,
    tpr_at_fpr,
    tpr_at_fprs,
)
from fakescope.eval.metrics import (
    SMALL_GROUPS_KEY,
    compute_metrics,
    small_groups_key,
)
from fakescope.eval.summary_text import format_summary

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
    assert m.n == 300 and m.n_real + m.n_fake == 300
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert m.roc_auc == pytest.approx(roc_auc_score(y, s))
    assert m.average_precision == pytest.approx(average_precision_score(y, s))
    cm = confusion_matrix(y, pred, labels=[0, 1])
    assert m.confusion_matrix == cm.tolist()
    assert m.real_acc == pytest.approx(cm[0, 0] / cm[0].sum())
    assert m.fake_acc == pytest.approx(cm[1, 1] / cm[1].sum())
    expected = classification_report(
        y, pred, labels=[0, 1], target_names=["real", "fake"], output_dict=True, zero_division=0
    )
    got = m.classification_report
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert got[key] == pytest.approx(value), key
        else:
            assert got[key] == pytest.approx(value), key
    assert "precision" in m.classification_report_text
    assert m.log_loss > 0 and 0 < m.brier < 1


def test_threshold_respected(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    for threshold in (0.3, 0.7):
        m = compute_metrics(y, s, threshold=threshold, n_boot=N_BOOT)
        pred = (s >= threshold).astype(int)
        assert m.threshold == threshold
        assert m.accuracy == pytest.approx(accuracy_score(y, pred))
        assert m.confusion_matrix == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert compute_metrics([1], [0.5], threshold=0.5, n_boot=10).accuracy == 1.0


def test_intervals_contain_estimate(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    m = compute_metrics(y, s, n_boot=N_BOOT)
    for value, ci in (
        (m.accuracy, m.accuracy_ci),
        (m.roc_auc, m.roc_auc_ci),
        (m.average_precision, m.average_precision_ci),
    ):
        assert ci is not None and value is not None
        lo, hi = ci
        assert lo <= value <= hi and lo < hi
    lo, hi = m.accuracy_exact_ci
    assert 0 <= lo <= m.accuracy <= hi <= 1


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
    assert m.roc_auc is None and m.roc_auc_ci is None
    assert m.average_precision is None
    assert m.fake_acc is None and m.real_acc is not None
    assert "AUC is undefined: the set has only real images." in m.warnings
    json.dumps(m.to_json_dict(), allow_nan=False)
    assert "ROC-AUC n/a" in format_summary(m)


def test_breakdown_matches_subsets(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, groups = data
    sources = np.where(y == 1, "gen", "camera")
    m = compute_metrics(y, s, groups={"group": list(groups), "source": sources}, n_boot=N_BOOT)
    assert set(m.breakdown["group"]) == {"a", "b", "c"}
    for value, cell in m.breakdown["group"].items():
        mask = groups == value
        sub = compute_metrics(y[mask], s[mask], n_boot=10)
        for key in ("n", "n_real", "n_fake", "accuracy", "roc_auc", "real_acc", "fake_acc"):
            assert getattr(cell, key) == pytest.approx(getattr(sub, key)), key
    camera = m.breakdown["source"]["camera"]
    assert camera.n_fake == 0 and camera.roc_auc is None and camera.fake_acc is None


def test_small_n_warning() -> None:
    y = np.array([0] * 15 + [1] * 16)
    m = compute_metrics(y, np.where(y == 1, 0.9, 0.1), n_boot=N_BOOT)
    assert m.accuracy == 1.0
    text = " ".join(m.warnings)
    assert "Only 31 test images: accuracy 100.0% has a 95% interval of 88.8–100.0%" in text
    assert "bootstrap cannot show uncertainty" in text
    assert "fewer than 30" in text
    assert m.accuracy_exact_ci[0] == pytest.approx(0.888, abs=1e-3)


def test_json_serialisable(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, groups = data
    m = compute_metrics(y, s, groups={"group": groups}, n_boot=N_BOOT)
    loaded = json.loads(json.dumps(m.to_json_dict(), allow_nan=False))
    assert loaded == m.to_json_dict()
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


def test_metrics_reexports_the_primitives_and_intervals() -> None:
    for name in metrics.__all__:
        assert hasattr(metrics, name), name
    for module in (measures, intervals):
        for name in ("fast_auc", "tpr_at_fprs", "bootstrap_ci", "exact_binomial_ci"):
            if hasattr(module, name):
                assert getattr(metrics, name) is getattr(module, name)


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


# --- TPR at a fixed FPR -------------------------------------------------------------------------

# 20 reals: 0.00, 0.05, ..., 0.90 and one outlier at 0.95; 10 fakes, one tied with the real at 0.90.
HAND_REALS = [*np.round(0.05 * np.arange(19), 2).tolist(), 0.95]
HAND_FAKES = [0.99, 0.93, 0.92, 0.91, 0.90, 0.60, 0.50, 0.30, 0.20, 0.10]


def _hand() -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0] * len(HAND_REALS) + [1] * len(HAND_FAKES))
    return y, np.array(HAND_REALS + HAND_FAKES)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.0, 0.1),  # nothing real may be flagged: threshold above 0.95 catches only 0.99
        (0.01, 0.1),  # 1% of 20 reals is 0.2 of an image: still no real may be flagged
        (0.05, 0.4),  # one real (0.95) allowed: threshold 0.91 catches 0.99, 0.93, 0.92, 0.91
        (0.10, 0.5),  # two reals: threshold 0.90 also catches the fake tied with a real
        (0.14, 0.5),  # 2.8 reals round down to 2
        (1.0, 1.0),
    ],
)
def test_tpr_at_fpr_hand_computed(target: float, expected: float) -> None:
    y, s = _hand()
    assert tpr_at_fpr(y, s, target) == pytest.approx(expected)


def test_tpr_at_fprs_vector_and_errors() -> None:
    y, s = _hand()
    np.testing.assert_allclose(tpr_at_fprs(y, s, [0.01, 0.05, 0.10]), [0.1, 0.4, 0.5])
    with pytest.raises(ValueError):
        tpr_at_fpr(np.zeros(5), np.linspace(0, 1, 5), 0.05)
    with pytest.raises(ValueError):
        tpr_at_fpr(y, s, 1.5)


@pytest.mark.parametrize("seed", range(6))
def test_tpr_at_fpr_matches_sklearn_roc_curve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n) + 0.4 * y, int(rng.integers(1, 4)))  # many ties
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    for target in (0.0, 0.01, 0.05, 0.1, 0.3, 1.0):
        expected = tpr[fpr <= target + 1e-12].max()
        assert tpr_at_fpr(y, s, target) == pytest.approx(expected, abs=1e-12), target


def test_tpr_at_fpr_in_metrics(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = data
    m = compute_metrics(y, s, n_boot=N_BOOT)
    assert [t.fpr for t in m.tprs()] == [0.01, 0.05]
    for target, value, ci in m.tprs():
        assert value == pytest.approx(tpr_at_fpr(y, s, target))
        assert ci is not None and value is not None
        lo, hi = ci
        assert 0 <= lo < hi <= 1
        assert lo <= value <= hi
    assert m.tpr_at_fpr_1 <= m.tpr_at_fpr_5
    summary = format_summary(m)
    assert f"TPR@1%FPR {m.tpr_at_fpr_1:.3f} [" in summary and "TPR@5%FPR" in summary


def test_tpr_at_fpr_few_reals_and_one_class() -> None:
    y, s = _hand()  # 20 reals: 1% FPR is below one real image, 5% is exactly one
    m = compute_metrics(y, s, n_boot=N_BOOT)
    text = " ".join(m.warnings)
    assert "TPR at 1% FPR: with 20 real images the smallest non-zero FPR is 1/20 = 5.0%" in text
    assert "TPR at 5% FPR: with" not in text
    one = compute_metrics([1] * 12, np.linspace(0.1, 0.9, 12), n_boot=N_BOOT)
    assert one.tpr_at_fpr_1 is None and one.tpr_at_fpr_1_ci is None
    assert "TPR@1%FPR n/a" in format_summary(one)


def test_zero_width_intervals_flagged() -> None:
    y = np.array([0] * 40 + [1] * 40)
    m = compute_metrics(y, np.where(y == 1, 0.8, 0.2), n_boot=N_BOOT)
    for value, ci in (
        (m.roc_auc, m.roc_auc_ci),
        (m.average_precision, m.average_precision_ci),
        (m.tpr_at_fpr_1, m.tpr_at_fpr_1_ci),
        (m.tpr_at_fpr_5, m.tpr_at_fpr_5_ci),
    ):
        assert value == 1.0 and ci == (1.0, 1.0)
    text = " ".join(m.warnings)
    assert "TPR at 1% FPR is 1.000 with a bootstrap interval of zero width" in text
    assert "TPR at 5% FPR is 1.000 with a bootstrap interval of zero width" in text
    assert "Average precision is 1.000 with a bootstrap interval of zero width" in text
    assert "TPR@1%FPR 1.000 [1.000, 1.000] (zero width" in format_summary(m)
    assert is_zero_width([1.0, 1.0]) and not is_zero_width([0.9, 1.0]) and not is_zero_width(None)


# --- calibration --------------------------------------------------------------------------------


def test_ece_hand_computed() -> None:
    y = np.array([0, 1, 1, 1, 0, 1])
    s = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    # bins 0, 5 and 9 hold two images each: gaps |0.05-0.5|, |0.55-0.5|, |0.95-1|
    assert expected_calibration_error(y, s) == pytest.approx((2 * 0.45 + 2 * 0.05 + 2 * 0.05) / 6)
    m = compute_metrics(y, s, n_boot=N_BOOT)
    assert m.ece == pytest.approx(1.1 / 6) and m.ece_bins == 10
    perfect = np.array([0.25] * 4)
    assert expected_calibration_error([0, 0, 0, 1], perfect) == pytest.approx(0.0)


def test_reliability_bins_edges() -> None:
    bins = reliability_bins([0, 1, 1, 1], [0.0, 0.1, 0.99, 1.0])
    assert bins["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 joins the last bin
    assert bins["frac_fake"][9] == 1.0 and np.isnan(bins["mean_score"][5])
    with pytest.raises(ValueError):
        reliability_bins([0, 1], [0.2, 1.2])
    m = compute_metrics([0, 1, 0, 1], [-0.5, 1.5, 0.2, 0.8], n_boot=10)
    assert m.ece is None and "ECE is not computed" in " ".join(m.warnings)


def test_ece_matches_sklearn_calibration_curve(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    y, s, _ = data
    s = np.clip(s, 0.001, 0.999) + 1e-6 * (np.round(s * 10) == s * 10)  # keep off bin edges
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    bins = reliability_bins(y, s, 10)
    full = bins["count"] > 0
    np.testing.assert_allclose(bins["frac_fake"][full], prob_true)
    np.testing.assert_allclose(bins["mean_score"][full], prob_pred)
    counts = np.histogram(s, bins=np.linspace(0, 1, 11))[0]
    expected = np.sum(counts[counts > 0] * np.abs(prob_true - prob_pred)) / len(y)
    assert expected_calibration_error(y, s) == pytest.approx(expected)


# --- per-group breakdown ------------------------------------------------------------------------


def test_small_groups_are_folded() -> None:
    rng = np.random.default_rng(7)
    sizes = {"big": 40, "mid": 10, "tiny": 6, "solo": 1, "few": 3}
    groups = np.repeat(list(sizes), list(sizes.values()))
    y = rng.integers(0, 2, len(groups))
    y[:2] = [0, 1]
    s = np.clip(0.4 * y + rng.normal(0.3, 0.2, len(groups)), 0, 1)
    m = compute_metrics(y, s, groups={"group": groups}, n_boot=N_BOOT)
    cells = m.breakdown["group"]
    assert list(cells) == ["big", "mid", SMALL_GROUPS_KEY]  # n=10 stays, n<10 is pooled, last
    assert SMALL_GROUPS_KEY == "(small groups, n<10 each)"
    folded = cells[SMALL_GROUPS_KEY]
    assert folded.n == 10 and folded.n_groups == 3
    assert folded.groups == ["few", "solo", "tiny"]
    mask = np.isin(groups, ["few", "solo", "tiny"])
    pooled = compute_metrics(y[mask], s[mask], n_boot=10)
    for key in ("n_real", "n_fake", "accuracy", "roc_auc", "accuracy_exact_ci"):
        assert getattr(folded, key) == pytest.approx(getattr(pooled, key)), key
    big = cells["big"]
    k = round(big.accuracy * big.n)
    assert big.accuracy_exact_ci == pytest.approx(exact_binomial_ci(k, big.n))
    unfolded = compute_metrics(y, s, groups={"group": groups}, n_boot=10, min_group_n=0)
    assert set(unfolded.breakdown["group"]) == set(sizes)


def test_fold_threshold_names_its_row() -> None:
    y = np.array([0, 1] * 10)
    groups = np.repeat(["a", "b", "c"], [12, 5, 3])
    m = compute_metrics(y, y * 0.8, groups={"g": groups}, n_boot=10, min_group_n=6)
    assert list(m.breakdown["g"]) == ["a", small_groups_key(6)]
    assert small_groups_key(6) == "(small groups, n<6 each)"
