"""Honest evaluation: metrics, group-aware splits and nested label-fraction subsets."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split


def whole_number_indices(y: np.ndarray) -> np.ndarray | None:
    """``y`` as int64 indices when it holds integers, or floats that are all whole numbers (as pandas gives
    integer columns with a missing value); None otherwise."""
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    return None


def _label_indices(y_true: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Class indices ``(N,)`` from integer indices (whole-number floats too) or from labels spelled as in
    ``classes``."""
    y = np.asarray(y_true)
    indices = whole_number_indices(y)
    if indices is not None:
        return indices
    lookup = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in y} - set(lookup))
    if unknown:
        raise ValueError(f"y_true holds labels not in classes: {unknown[:10]}")
    return np.array([lookup[str(v)] for v in y], dtype=np.int64)


def _macro_ovr_auroc(y: np.ndarray, proba: np.ndarray) -> tuple[float | None, int]:
    """One-vs-rest macro AUROC over the classes ``y`` holds both in and out of, and how many those are;
    ``(None, n)`` when fewer than two (a class with no test sample has no AUROC, but the others still do)."""
    n_classes = proba.shape[1]
    counts = np.bincount(y, minlength=n_classes)
    scored = [k for k in range(n_classes) if 0 < counts[k] < y.size]
    if len(scored) < 2:
        return None, len(scored)
    if n_classes == 2:
        return float(roc_auc_score(y, proba[:, 1])), 2
    return float(np.mean([roc_auc_score(y == k, proba[:, k]) for k in scored])), len(scored)


def _per_class(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Support, recall and precision per class from a confusion matrix (None where undefined)."""
    support, predicted, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    return {
        str(c): {
            "support": int(support[k]),
            "recall": float(hits[k] / support[k]) if support[k] else None,
            "precision": float(hits[k] / predicted[k]) if predicted[k] else None,
        }
        for k, c in enumerate(classes)
    }


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, one-vs-rest macro AUROC, confusion matrix, per-class figures.

    Predictions are ``argmax(proba)``. Balanced accuracy is the mean recall over classes present in
    ``y_true``; macro-F1 averages over classes present in ``y_true`` or the predictions; AUROC averages
    one-vs-rest over the classes present in ``y_true`` (``auroc_classes`` of them; None below two; binary:
    ``proba[:, 1]`` scores class 1).

    Args:
        y_true: Class indices ``(N,)``, integers or whole-number floats (or labels spelled as in ``classes``).
        proba: Class probabilities ``(N, C)``, columns ordered as ``classes``.
        classes: Class names, length C.

    Returns:
        A JSON-serialisable dict: accuracy, balanced_accuracy, macro_f1, auroc, auroc_classes,
        confusion_matrix (rows = true, columns = predicted), per_class, n_samples.
    """
    y = _label_indices(y_true, classes)
    p = np.asarray(proba, dtype=np.float64)
    n_classes = len(classes)
    if p.ndim != 2 or p.shape != (y.shape[0], n_classes):
        raise ValueError(f"proba must have shape ({y.shape[0]}, {n_classes}), got {p.shape}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true indices must be in [0, {n_classes})")
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=np.arange(n_classes))
    recalls = [r["recall"] for r in _per_class(cm, classes).values() if r["recall"] is not None]
    present = np.union1d(y, pred)
    auroc, auroc_classes = _macro_ovr_auroc(y, p)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "auroc": auroc,
        "auroc_classes": auroc_classes,
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": _per_class(cm, classes),
        "n_samples": int(y.size),
    }


def _check_split(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 indices; raise if a side is empty."""
    if train.size == 0 or test.size == 0:
        raise ValueError("split left the training or the test set empty")
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


MAX_GROUP_FOLDS = 20  # the test share's grain with many groups: 1/20


def _group_folds(test_size: float, n_groups: int) -> tuple[int, int]:
    """``(k, m)``: the test side is ``m`` of ``k`` group folds, ``m / k`` as near ``test_size`` as the number of
    groups allows: one of ``round(1 / test_size)`` folds (0.2: 1 of 5; 0.33: 1 of 3) or ``m`` of up to 20
    folds (0.4: 8 of 20; 0.8: 16 of 20), whichever is nearer; one fold of the two on a tie."""
    k_one = min(max(2, round(1 / test_size)), n_groups)
    k = max(2, min(n_groups, MAX_GROUP_FOLDS))
    m = min(max(1, round(test_size * k)), k - 1)
    return (k_one, 1) if abs(1 / k_one - test_size) <= abs(m / k - test_size) else (k, m)


def _group_split(y: np.ndarray, groups: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped split, stratified by StratifiedGroupKFold when it can, else GroupShuffleSplit."""
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise ValueError(f"a grouped split needs at least 2 groups, got {n_groups}")
    n_splits, n_test_folds = _group_folds(test_size, n_groups)
    idx = np.arange(y.size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            folds = [fold for _, fold in itertools.islice(cv.split(idx, y, groups), n_test_folds)]
        test = np.concatenate(folds)
        return _check_split(np.setdiff1d(idx, test), test)
    except ValueError:
        gss = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(gss.split(idx, y, groups))
        return _check_split(train, test)


def split_train_test(
    y: np.ndarray, groups: np.ndarray | None, *, test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test.

    With ``groups`` (e.g. patient ids) no group appears on both sides: the first fold of a shuffled
    ``StratifiedGroupKFold(n_splits=round(1/test_size))``, or the first ``m`` of up to 20 folds when ``m/20``
    is nearer ``test_size`` (fewer folds with fewer groups), falling back to ``GroupShuffleSplit``. Without
    groups the split is stratified by ``y``, or unstratified when a class has fewer than 2 members or the
    test set cannot hold every class.

    Args:
        y: Labels ``(N,)``.
        groups: Optional group ids ``(N,)``.
        test_size: Fraction of samples (approximately, with groups) in the test set, in (0, 1).
        seed: Random seed.

    Returns:
        ``(train_idx, test_idx)``, sorted int64 arrays.

    Raises:
        ValueError: With fewer than 2 samples, fewer than 2 groups, or a bad ``test_size``.
    """
    y = np.asarray(y)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"need at least 2 labelled samples to split, got {y.size}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups must have shape {y.shape}, got {groups.shape}")
        return _group_split(y, groups, test_size, seed)
    idx = np.arange(y.size)
    _, counts = np.unique(y, return_counts=True)
    if counts.min() >= 2:
        try:
            train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
            return _check_split(train, test)
        except ValueError:
            pass  # the test (or train) side is too small to hold every class
    train, test = train_test_split(idx, test_size=test_size, random_state=seed)
    return _check_split(train, test)


def label_fraction_subset(y: np.ndarray, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Nested per-class subsets for label-efficiency curves.

    Within each class c (in sorted order) a permutation seeded by ``seed`` is drawn and the first
    ``max(1, ceil(fraction * n_c))`` indices kept, so for one seed a smaller fraction's subset is contained
    in a larger one's.

    Args:
        y: Labels ``(N,)``.
        fraction: Fraction of each class to keep, in (0, 1].
        seed: Random seed.

    Returns:
        Sorted int64 indices into ``y``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(y):  # loop over classes, not samples
        members = rng.permutation(np.flatnonzero(y == cls))
        # The epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 from rounding up to 8.
        n_keep = max(1, math.ceil(fraction * members.size - 1e-9))
        keep.append(members[:n_keep])
    return np.sort(np.concatenate(keep)).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)


def majority_baseline_accuracy(y: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class (chance level for reports)."""
    y = np.asarray(y)
    if y.size == 0:
        raise ValueError("majority baseline of zero samples is undefined")
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / y.size)


# Early stopping on a handful of samples stops at noise (seen on the real cohorts in bench/RESULTS.md:
# 14 labels split 11/3 did far worse than 7 labels trained for the full epoch budget), so a validation
# set is carved only from a training set at least this large.
MIN_VALIDATION_POOL = 40
VALIDATION_SHARE = 0.2


def validation_split(
    y: np.ndarray, groups: np.ndarray | None, *, seed: int = 0, share: float = VALIDATION_SHARE,
    min_pool: int = MIN_VALIDATION_POOL,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Split a training set into fit and early-stopping validation indices, or None when too small.

    Args:
        y: Training labels ``(N,)``.
        groups: Optional group ids ``(N,)``; kept on one side, as in :func:`split_train_test`.
        seed: Random seed.
        share: Validation share.
        min_pool: Smallest N for which a validation set is carved.

    Returns:
        ``(fit_idx, val_idx)`` into ``y``, or None (train for the full epoch budget instead).
    """
    if np.asarray(y).size < min_pool:
        return None
    try:
        return split_train_test(y, groups, test_size=share, seed=seed)
    except ValueError:
        return None
