from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.evaluation import (
    classification_metrics,
    label_fraction_subset,
    majority_baseline_accuracy,
    split_train_test,
)

# Hand-made 3-class example. Predictions (argmax) are a,a,b | b,c | c, so the confusion matrix is
# [[2,1,0],[0,1,1],[0,0,1]]; recalls 2/3, 1/2, 1; precisions 1, 1/2, 1/2; F1 0.8, 0.5, 2/3.
# AUROC one-vs-rest: a 1.0; b: positives (.6,.3) vs negatives (.2,.3,.5,.2) -> (4 + 2.5) / 8 = 0.8125; c 1.0.
Y = np.array([0, 0, 0, 1, 1, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.2, 0.6, 0.2],
        [0.1, 0.3, 0.6],
        [0.1, 0.2, 0.7],
    ]
)


def test_metrics_on_hand_made_example() -> None:
    m = classification_metrics(Y, P, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["auroc"] == pytest.approx((1.0 + 0.8125 + 1.0) / 3) and m["auroc_classes"] == 3
    assert m["per_class"]["a"] == {"support": 3, "recall": pytest.approx(2 / 3), "precision": 1.0}
    assert m["per_class"]["c"] == {"support": 1, "recall": 1.0, "precision": 0.5}
    assert m["n_samples"] == 6
    assert json.loads(json.dumps(m))["confusion_matrix"] == m["confusion_matrix"]
    assert classification_metrics(np.array(["a", "a", "a", "b", "b", "c"]), P, ["a", "b", "c"]) == m


def test_metrics_binary_uses_column_one() -> None:
    proba1 = np.array([0.1, 0.6, 0.4, 0.9])
    m = classification_metrics(np.array([0, 0, 1, 1]), np.stack([1 - proba1, proba1], axis=1), ["neg", "pos"])
    assert m["auroc"] == pytest.approx(0.75)  # .4>.1, .4<.6, .9>.1, .9>.6
    assert m["accuracy"] == 0.5


def test_metrics_with_class_absent_from_y_true() -> None:
    m = classification_metrics(np.array([0, 0, 1]), P[[0, 2, 3]], ["a", "b", "c"])
    # AUROC over the classes the test holds: a (.7, .3 over .2) and b (.6 over .2, .5) both rank perfectly.
    assert m["auroc"] == 1.0 and m["auroc_classes"] == 2
    assert classification_metrics(np.array([0, 0, 0]), P[[0, 1, 2]], ["a", "b", "c"])["auroc"] is None
    assert classification_metrics(np.array([1, 1]), np.array([[0.3, 0.7], [0.6, 0.4]]), ["n", "p"])["auroc"] is None
    assert m["per_class"]["c"] == {"support": 0, "recall": None, "precision": None}
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(Y, P[:, :2], ["a", "b", "c"])


def _grouped(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(40), 5)  # 40 patients x 5 samples
    y = np.repeat(rng.integers(0, 2, size=40), 5)  # label constant within a patient
    return y, groups


def test_split_with_groups_never_shares_a_group() -> None:
    y, groups = _grouped()
    for seed in range(5):
        train, test = split_train_test(y, groups, test_size=0.2, seed=seed)
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 200 and len(set(train) | set(test)) == 200
        assert 0.1 <= len(test) / 200 <= 0.3
        assert set(y[test]) == {0, 1}  # stratified
    a, b = split_train_test(y, groups, seed=3), split_train_test(y, groups, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("test_size", [0.1, 0.2, 0.3, 0.33, 0.4, 0.6, 0.8, 0.9])
def test_split_with_groups_holds_out_the_share_asked_for(test_size: float) -> None:
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(100), 2)  # 100 patients x 2 samples
    y = np.repeat(rng.integers(0, 3, size=100), 2)
    for seed in range(3):
        train, test = split_train_test(y, groups, test_size=test_size, seed=seed)
        assert not set(groups[train]) & set(groups[test]) and len(train) + len(test) == 200
        assert abs(len(test) / 200 - test_size) <= 0.015, (test_size, seed, len(test))  # was 0.5 for 0.4-0.9
        assert set(y[test]) == set(y[train]) == {0, 1, 2}


def test_split_with_few_groups_holds_out_whole_groups() -> None:
    y, groups = np.array([0, 1] * 4), np.repeat(np.arange(4), 2)  # 4 groups: a quarter is the least
    train, test = split_train_test(y, groups, test_size=0.05, seed=0)
    assert len(test) == 2 and not set(groups[train]) & set(groups[test])


def test_split_with_groups_needs_two_groups() -> None:
    with pytest.raises(ValueError, match="at least 2 groups, got 1"):
        split_train_test(np.array([0, 1, 0, 1]), np.array(["p1"] * 4))


def test_split_without_groups_is_stratified_or_falls_back() -> None:
    y = np.array([0] * 50 + [1] * 50)
    train, test = split_train_test(y, None, test_size=0.2, seed=0)
    assert len(test) == 20 and (y[test] == 1).sum() == 10
    y_rare = np.array([0] * 30 + [1] * 9 + [2])  # class 2 has one member: unstratified
    train, test = split_train_test(y_rare, None, test_size=0.25, seed=0)
    assert len(test) == 10 and len(train) == 30
    with pytest.raises(ValueError, match="test_size"):
        split_train_test(y, None, test_size=1.0)


def test_label_fraction_subsets_are_nested_and_per_class() -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 7)
    fractions = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.7, 1.0]
    subsets = [set(label_fraction_subset(y, f, seed=4).tolist()) for f in fractions]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert smaller <= larger
    for f, subset in zip(fractions, subsets, strict=True):
        counts = np.bincount(y[sorted(subset)], minlength=3)
        expected = [max(1, math.ceil(round(f * n, 9))) for n in (50, 30, 7)]
        assert counts.tolist() == expected, f
    assert subsets[-1] == set(range(87))
    assert label_fraction_subset(y, 0.1, seed=4).tolist() != label_fraction_subset(y, 0.1, seed=5).tolist()
    assert np.bincount(y[label_fraction_subset(y, 0.7, seed=0)]).tolist() == [35, 21, 5]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        label_fraction_subset(np.array([0, 1]), fraction)


def test_majority_baseline_accuracy() -> None:
    assert majority_baseline_accuracy(np.array(["x", "y", "y", "y"])) == 0.75
    with pytest.raises(ValueError):
        majority_baseline_accuracy(np.array([]))
