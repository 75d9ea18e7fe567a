"""Split-conformal prediction sets for classifiers.

A non-conformity score ``s(x, y)`` is computed for every sample of a calibration split the classifier never
saw; for a new sample the set holds every class ``k`` with ``s(x, k) <= q``, where ``q`` is the
``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the ``n`` calibration scores. For exchangeable data
the set contains the true class with probability at least ``1 - alpha``, and at most
``1 - alpha + 1 / (n + 1)`` when scores have no ties (Vovk, Gammerman & Shafer 2005; Lei et al. 2018;
Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", 2021). The guarantee is marginal
(on average over samples), not per class.

Scores:

* ``"lac"``: least ambiguous set-valued classifier, ``s(x, y) = 1 - p_y(x)`` (Sadinle, Lei & Wasserman,
  "Least Ambiguous Set-Valued Classifiers With Bounded Error Levels", JASA 114(525), 2019). Smallest
  average set size; a set may be empty when no class is probable enough (itself a warning sign).
* ``"aps"``: adaptive prediction sets, ``s(x, y) = sum of p_k(x) over classes ranked at or above y``
  (Romano, Sesia & Candès, "Classification with Valid and Adaptive Coverage", NeurIPS 2020), here without
  the randomisation term, so sets are deterministic and coverage is slightly conservative.

The calibration scores are stored, not the quantile, so each request chooses its coverage ``1 - alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

METHODS = ("lac", "aps")
DEFAULT_METHOD = "lac"
UNCERTAIN = "uncertain"


def _check(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (n_samples, n_classes >= 2), got {p.shape}")
    return p


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"conformal method must be one of {METHODS}, got {method!r}")
    return method


def class_scores(proba: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Non-conformity score of every (sample, class) pair.

    Args:
        proba: Class probabilities ``(N, C)``.
        method: ``"lac"`` or ``"aps"``.

    Returns:
        float64 ``(N, C)``: ``1 - p`` (LAC) or the probability mass of the classes ranked at or above each
        class (APS; ties in probability rank by class index).
    """
    p = _check(proba)
    if _check_method(method) == "lac":
        return 1.0 - p
    order = np.argsort(-p, axis=1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    scores = np.empty_like(p)
    np.put_along_axis(scores, order, cumulative, axis=1)
    return scores


def conformity_scores(proba: np.ndarray, y: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Scores of the true classes ``s(x_i, y_i)`` ``(N,)`` (calibration split)."""
    labels = np.asarray(y).astype(np.int64)
    scores = class_scores(proba, method)
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"y must have shape ({scores.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"y must hold class indices in [0, {scores.shape[1]})")
    return scores[np.arange(labels.size), labels]


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal threshold ``q`` for a target coverage ``1 - alpha``.

    ``q`` is the ``k``-th smallest of the ``n`` scores with ``k = ceil((n + 1) * coverage)``; when
    ``k > n`` no finite threshold gives the guarantee and ``inf`` (every class in every set) is returned.
    """
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    # The epsilon keeps e.g. (9 + 1) * 0.9 = 9.000000000000002 from rounding up to 10.
    k = math.ceil((s.size + 1) * coverage - 1e-9)
    return float(s[k - 1]) if 1 <= k <= s.size else math.inf


@dataclass(frozen=True)
class SplitConformal:
    """Calibration scores of a classifier, ready to build prediction sets at any coverage.

    Attributes:
        method: ``"lac"`` or ``"aps"``.
        scores: Sorted calibration scores of the true classes, float64 ``(n,)``.
    """

    method: str
    scores: np.ndarray

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray, method: str = DEFAULT_METHOD) -> SplitConformal:
        """Score a calibration split: ``proba`` ``(n, C)`` of samples the classifier never trained on."""
        return cls(_check_method(method), np.sort(conformity_scores(proba, y, method)))

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def max_finite_coverage(self) -> float:
        """Coverages above ``n / (n + 1)`` give sets holding every class."""
        return self.n / (self.n + 1)

    def threshold(self, coverage: float) -> float:
        return conformal_quantile(self.scores, coverage)

    def predict_sets(self, proba: np.ndarray, coverage: float) -> np.ndarray:
        """Boolean membership ``(N, C)``: class ``k`` is in sample ``i``'s set when ``s(x_i, k) <= q``."""
        return class_scores(proba, self.method) <= self.threshold(coverage)

    def to_dict(self) -> dict[str, Any]:
        """Plain values and a tensor (safe for ``torch.load(weights_only=True)``)."""
        return {"method": self.method, "scores": torch.from_numpy(self.scores.astype(np.float64))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitConformal:
        scores = d.get("scores")
        if not isinstance(scores, torch.Tensor) or scores.ndim != 1:
            raise ValueError("conformal state must hold a 1-d tensor of scores")
        values = scores.numpy().astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError("conformal scores must be finite")
        return cls(_check_method(str(d.get("method"))), np.sort(values))


def set_labels(
    members: np.ndarray, classes: list[str], proba: np.ndarray | None = None
) -> tuple[list[list[str]], list[str]]:
    """Class names of each prediction set, and the single label where a set has exactly one member.

    Args:
        members: Boolean set membership ``(N, C)``.
        classes: Class names, length C.
        proba: Optional probabilities ``(N, C)``: each set then lists its labels most probable first.

    Returns:
        ``(sets, labels)``: ``labels[i]`` is the set's only class, else ``"uncertain"`` (empty or several
        classes), as the classic expression classifiers abstained (Golub et al. 1999).
    """
    m = np.asarray(members, dtype=bool)
    if proba is None:
        order = np.broadcast_to(np.arange(m.shape[1]), m.shape)
    else:
        order = np.argsort(-np.asarray(proba), axis=1, kind="stable")
    ranked = np.take_along_axis(m, order, axis=1)
    names = np.asarray(classes, dtype=object)
    sets = [[str(c) for c in names[o[r]]] for o, r in zip(order, ranked, strict=True)]
    return sets, [s[0] if len(s) == 1 else UNCERTAIN for s in sets]


def empirical_coverage(members: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose set holds the true class."""
    labels = np.asarray(y).astype(np.int64)
    return float(np.asarray(members, dtype=bool)[np.arange(labels.size), labels].mean())
