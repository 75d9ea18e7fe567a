from __future__ import annotations

import math

import numpy as np
import pytest

from models import checkpoint
from models.conformal import (
    SplitConformal,
    class_scores,
    conformal_quantile,
    conformity_scores,
    empirical_coverage,
    set_labels,
)


def test_quantile_is_the_ceil_n_plus_one_order_statistic() -> None:
    scores = np.arange(1, 10) / 10  # 0.1 .. 0.9, n = 9
    assert conformal_quantile(scores, 0.9) == pytest.approx(0.9)  # k = ceil(10 * 0.9) = 9
    assert conformal_quantile(scores, 0.5) == pytest.approx(0.5)  # k = 5
    assert conformal_quantile(scores, 0.95) == math.inf  # k = 10 > n: no finite threshold
    assert conformal_quantile(scores[::-1], 0.5) == pytest.approx(0.5)  # order of the input is irrelevant
    with pytest.raises(ValueError, match="coverage"):
        conformal_quantile(scores, 1.0)


def test_lac_and_aps_scores_by_hand() -> None:
    proba = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(class_scores(proba, "lac"), 1 - proba)
    # APS: mass of the classes ranked at or above each class (ties by class index).
    np.testing.assert_allclose(class_scores(proba, "aps"), [[0.5, 0.8, 1.0], [0.9, 1.0, 0.8]])
    np.testing.assert_allclose(conformity_scores(proba, np.array([1, 2]), "aps"), [0.8, 0.8])


def test_sets_labels_and_uncertain() -> None:
    cal = SplitConformal.fit(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), np.array([0, 1, 0]))
    assert cal.scores.tolist() == pytest.approx([0.1, 0.3, 0.4])
    proba = np.array([[0.95, 0.05], [0.65, 0.35], [0.5, 0.5], [0.1, 0.9]])
    members = cal.predict_sets(proba, 0.5)  # k = ceil(4 * 0.5) = 2: threshold 0.3, keep p >= 0.7
    assert members.tolist() == [[True, False], [False, False], [False, False], [False, True]]
    sets, labels = set_labels(cal.predict_sets(proba, 0.7), ["a", "b"], proba)  # threshold 0.4: p >= 0.6
    assert sets == [["a"], ["a"], [], ["b"]] and labels == ["a", "a", "uncertain", "b"]
    sets, labels = set_labels(np.array([[True, True]]), ["a", "b"], np.array([[0.2, 0.8]]))
    assert sets == [["b", "a"]] and labels == ["uncertain"]  # most probable first
    assert cal.predict_sets(proba, 0.8).all()  # above n / (n + 1) = 0.75 every label is in every set
    assert cal.max_finite_coverage() == 0.75


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_coverage_holds_on_exchangeable_data(method: str) -> None:
    """Split conformal: 1 - alpha <= P(y in set) <= 1 - alpha + 1 / (n + 1), averaged over many draws."""
    rng = np.random.default_rng(3)
    n_cal, n_test, draws, n_classes = 50, 200, 200, 4
    coverages = []
    for _ in range(draws):
        logits = rng.normal(size=(n_cal + n_test, n_classes)) * 1.5
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = (proba.cumsum(axis=1) > rng.random((n_cal + n_test, 1))).argmax(axis=1)
        cal = SplitConformal.fit(proba[:n_cal], y[:n_cal], method)
        coverages.append(empirical_coverage(cal.predict_sets(proba[n_cal:], 0.9), y[n_cal:]))
    assert 0.9 - 0.01 <= np.mean(coverages) <= 0.9 + 1 / (n_cal + 1) + 0.01


def test_state_round_trips_through_a_weights_only_payload() -> None:
    cal = SplitConformal.fit(np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]), np.array([0, 1, 0]), "aps")
    back = SplitConformal.from_dict(checkpoint.loads(checkpoint.dumps({"c": cal.to_dict()}))["c"])
    assert back.method == "aps" and back.scores.tolist() == cal.scores.tolist()
    with pytest.raises(ValueError, match="conformal method"):
        SplitConformal.from_dict({**cal.to_dict(), "method": "raps"})
