from __future__ import annotations

import numpy as np
import pytest

from models.calibration import (
    apply_temperature,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def test_ece_and_brier_match_hand_computed_values() -> None:
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    # Confidences 0.9, 0.8, 0.7, 0.55 fall in 15 bins of width 1/15 at 13, 11, 10, 8: one sample each.
    # |acc - conf| per bin: |1 - 0.9|, |0 - 0.8|, |1 - 0.7|, |1 - 0.55| -> mean over 4 samples.
    assert expected_calibration_error(proba, y) == pytest.approx((0.1 + 0.8 + 0.3 + 0.45) / 4)
    # Two samples in one bin: the bin's accuracy and confidence are averaged before the difference.
    assert expected_calibration_error(proba, y, n_bins=1) == pytest.approx(abs(0.75 - (0.9 + 0.8 + 0.7 + 0.55) / 4))
    assert brier_score(proba, y) == pytest.approx((0.02 + 1.28 + 0.18 + 0.405) / 4)
    # A confidence of exactly 1 lands in the last bin, not past it.
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_temperature_keeps_the_argmax_and_one_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=50)
    np.testing.assert_allclose(apply_temperature(proba, 1.0), proba, atol=1e-12)
    for t in (0.1, 0.5, 3.0):
        scaled = apply_temperature(proba, t)
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
        assert (scaled.argmax(axis=1) == proba.argmax(axis=1)).all()
    # A class a model never predicts (probability 0) keeps a negligible probability.
    assert apply_temperature(np.array([[1.0, 0.0]]), 5.0)[0, 1] < 1e-5


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    """Labels drawn from softmax(z / 2.5) while the model reports softmax(z): T = 2.5 is the truth."""
    rng = np.random.default_rng(1)
    logits = 3.0 * rng.normal(size=(4000, 4))
    true = np.exp(logits / 2.5)
    true /= true.sum(axis=1, keepdims=True)
    y = (true.cumsum(axis=1) > rng.random((4000, 1))).argmax(axis=1)
    reported = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = fit_temperature(reported, y)  # 4,000 samples: the prior hardly matters
    assert t == pytest.approx(2.5, rel=0.08)
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 400))
    best = grid[np.argmin([negative_log_likelihood(reported, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.02)
    report = calibration_report(reported, y, t)
    assert report["ece_after"] < report["ece_before"] / 3 and report["nll_after"] < report["nll_before"]
    assert report["brier_after"] < report["brier_before"]


def test_fit_temperature_edge_cases() -> None:
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0
    # Uniform probabilities: every temperature gives the same NLL, so T stays 1.
    assert fit_temperature(np.full((10, 2), 0.5), np.arange(10) % 2) == 1.0
    # Perfectly separated but soft: without a prior, sharpening always helps, down to the lower bound; the
    # prior on log T stops it much earlier.
    separated, y = np.array([[0.6, 0.4], [0.3, 0.7]]), np.array([0, 1])
    assert fit_temperature(separated, y, prior_strength=0.0) == pytest.approx(0.05, rel=0.01)
    assert 0.2 < fit_temperature(separated, y) < 1.0
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.full((2, 2), 0.5), np.array([0, 2]))
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.full((2, 2), 0.5), 0.0)
