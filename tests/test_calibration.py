"""Platt calibration and target-FPR thresholds, checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_curve

from fakescope.eval.calibration import apply_calibration, fit_platt, threshold_for_fpr


def _overconfident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = (y * 2 - 1) * 1.0 + rng.normal(0, 1.2, n)
    return logits * 6.0 + 2.0, y  # far too confident and shifted


def test_platt_matches_sklearn_logistic_regression() -> None:
    z, y = _overconfident()
    cal = fit_platt(z, y)
    ref = LogisticRegression(C=1e4, max_iter=1000).fit(z.reshape(-1, 1), y)
    np.testing.assert_allclose(
        apply_calibration(z, cal), ref.predict_proba(z.reshape(-1, 1))[:, 1], rtol=1e-6, atol=1e-8
    )


def test_platt_improves_log_loss_and_keeps_ranking() -> None:
    z, y = _overconfident()
    cal = fit_platt(z, y)
    before = log_loss(y, apply_calibration(z, None))
    after = log_loss(y, apply_calibration(z, cal))
    assert after < before * 0.7
    assert cal["a"] > 0  # monotone: AUC unchanged
    assert np.array_equal(np.argsort(apply_calibration(z, cal)), np.argsort(z))


def test_platt_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        fit_platt(np.array([0.1, 0.2]), np.array([1, 1]))


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.5, 1.0])
def test_threshold_for_fpr_holds_on_the_fitting_set(fpr: float) -> None:
    rng = np.random.default_rng(1)
    real = rng.uniform(0, 1, 200)
    t = threshold_for_fpr(real, fpr)
    assert np.mean(real >= t) <= fpr + 1e-12
    # and it is the lowest such threshold: any real just below t would break the bound
    if fpr < 1.0:
        assert np.mean(real >= np.nextafter(t, -np.inf)) > fpr or t == real.min()


def test_threshold_agrees_with_sklearn_roc_curve() -> None:
    rng = np.random.default_rng(2)
    real, fake = rng.normal(0, 1, 300), rng.normal(1.5, 1, 300)
    t = threshold_for_fpr(real, 0.05)
    y = np.r_[np.zeros(300), np.ones(300)]
    fpr, tpr, thr = roc_curve(y, np.r_[real, fake])
    best_tpr = tpr[fpr <= 0.05].max()
    assert np.mean(fake >= t) == pytest.approx(best_tpr, abs=1e-9)


def test_bad_target_fpr() -> None:
    with pytest.raises(ValueError, match="target FPR"):
        threshold_for_fpr(np.array([0.2]), 1.5)
