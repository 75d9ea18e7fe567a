"""What a fitted predictor carries beside its weights so that its outputs can be trusted.

* a temperature (:mod:`models.calibration`) fitted on a calibration split the head never trained on;
* that split's split-conformal scores (:mod:`models.conformal`), so each request picks its coverage;
* an out-of-distribution scorer (:mod:`models.ood`) on the encoder's representation, or, for predictors
  without an encoder (logistic regression), on principal components of the standardised expression.

Conformal scores use the *uncalibrated* probabilities: the temperature is fitted on the calibration split
too, and a score function that depended on that split would void the exchangeability the guarantee rests
on. Within a sample temperature scaling keeps the order of the classes, so a set is always the top classes
of the calibrated probabilities as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from models.calibration import (
    DEFAULT_BINS,
    PRIOR_STRENGTH,
    apply_temperature,
    calibration_report,
    fit_temperature,
)
from models.classifiers import EncoderClassifier
from models.conformal import DEFAULT_METHOD, SplitConformal, empirical_coverage
from models.evaluation import split_train_test
from models.ood import DEFAULT_COMPONENTS, MahalanobisOOD, fit_mahalanobis

DEFAULT_COVERAGE = 0.9
DEFAULT_OOD_PERCENTILE = 99.0
REPORTED_COVERAGES = (0.8, 0.9, 0.95)
MIN_CONFORMAL_SAMPLES = 2
CALIBRATION_SHARE = 0.2
MIN_CALIBRATION_POOL = 20


def calibration_split(
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    share: float = CALIBRATION_SHARE,
    seed: int = 0,
    min_pool: int = MIN_CALIBRATION_POOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training pool into the samples a head may train on and a held-out calibration split.

    The split is group-aware and stratified like the test split (:func:`models.evaluation.split_train_test`
    with ``share`` as its test size): no patient is on both sides. Classes with a single sample in the pool
    stay on the fitting side. A pool smaller than ``min_pool`` (or one that cannot be split) gives no
    calibration split: temperature 1 and no prediction sets.

    Args:
        y: Labels of the training pool ``(N,)``.
        groups: Optional group ids ``(N,)``.
        share: Approximate share of the pool (or of its groups) held out for calibration.
        seed: Random seed.
        min_pool: Smallest pool that gives up a calibration split.

    Returns:
        ``(fit_idx, calibration_idx)`` into ``y``, sorted; ``calibration_idx`` may be empty.
    """
    y = np.asarray(y)
    everything = np.arange(y.size, dtype=np.int64)
    if y.size < min_pool:
        return everything, np.zeros(0, dtype=np.int64)
    # A class with one sample in the pool stays with the head (with its whole group), so that the head still
    # learns it and the rest of the pool can be split stratified.
    classes, counts = np.unique(y, return_counts=True)
    lonely = np.isin(y, classes[counts < 2])
    if groups is not None and lonely.any():
        lonely = np.isin(groups, np.asarray(groups)[lonely])
    candidates = everything[~lonely]
    try:
        fit, cal = split_train_test(
            y[candidates], None if groups is None else np.asarray(groups)[candidates], test_size=share, seed=seed
        )
    except ValueError:
        return everything, np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate([candidates[fit], everything[lonely]])), candidates[cal]


class ProbabilisticClassifier(Protocol):
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


def ood_space(model: ProbabilisticClassifier) -> str:
    """``"embedding"`` for an encoder-based classifier, else ``"expression"``."""
    return "embedding" if isinstance(model, EncoderClassifier) else "expression"


def ood_features(model: ProbabilisticClassifier, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Features the OOD scorer sees: the encoder's representation ``(N, hidden)`` in eval mode for an
    :class:`EncoderClassifier`, else the standardised expression ``x`` ``(N, G)`` itself."""
    arr = np.asarray(x, dtype=np.float32)
    if not isinstance(model, EncoderClassifier):
        return arr
    model.eval()
    device = next(model.parameters()).device
    parts = []
    with torch.inference_mode():
        for start in range(0, arr.shape[0], batch_size):
            batch = torch.from_numpy(arr[start : start + batch_size]).to(device)
            parts.append(model.encoder(batch).float().cpu())
    if not parts:
        return np.zeros((0, model.encoder.out_dim), dtype=np.float32)
    return torch.cat(parts).numpy()


@dataclass(frozen=True)
class SampleUncertainty:
    """Per-sample outputs of :meth:`Uncertainty.predict` (N samples, C classes)."""

    proba: np.ndarray  # calibrated probabilities (N, C)
    top: np.ndarray  # arg-max class index (N,)
    members: np.ndarray | None  # prediction-set membership (N, C); None without conformal scores
    threshold: float | None  # the conformal threshold used
    ood_score: np.ndarray | None  # (N,)
    ood_percentile: np.ndarray | None  # (N,), in [0, 100]
    ood_flag: np.ndarray | None  # (N,) bool


@dataclass(frozen=True)
class Uncertainty:
    """Temperature, conformal calibration scores and OOD scorer of one predictor.

    Attributes:
        temperature: Divides the logits (``log p``); 1.0 leaves probabilities as they are.
        conformal: Calibration scores, or None when the training pool was too small for a calibration split.
        ood: The OOD scorer, or None when too few samples were available to fit it.
    """

    temperature: float = 1.0
    conformal: SplitConformal | None = None
    ood: MahalanobisOOD | None = None

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities ``(N, C)``."""
        return apply_temperature(proba, self.temperature)

    def predict(
        self,
        model: ProbabilisticClassifier,
        x: np.ndarray,
        *,
        coverage: float = DEFAULT_COVERAGE,
        ood_percentile: float = DEFAULT_OOD_PERCENTILE,
    ) -> SampleUncertainty:
        """Calibrated probabilities, prediction sets and OOD scores of preprocessed samples ``x`` ``(N, G)``.

        Args:
            model: The predictor (``predict_proba`` on ``Preprocessor.transform`` output).
            x: Preprocessed samples.
            coverage: Target coverage ``1 - alpha`` of the prediction sets, in (0, 1).
            ood_percentile: Flag samples whose OOD percentile exceeds this, in (0, 100).
        """
        if not 0.0 < ood_percentile < 100.0:
            raise ValueError(f"ood_percentile must be in (0, 100), got {ood_percentile}")
        embedding = None
        if isinstance(model, EncoderClassifier) and self.ood is not None:  # one encoder pass serves both
            proba, embedding = model.predict_with_embedding(x)
        else:
            proba = model.predict_proba(x)
        raw = np.asarray(proba, dtype=np.float64)
        members = threshold = None
        if self.conformal is not None:
            threshold = self.conformal.threshold(coverage)
            members = self.conformal.predict_sets(raw, coverage)
        score = percentile = flag = None
        if self.ood is not None:
            score = self.ood.score(embedding if embedding is not None else ood_features(model, x))
            percentile = self.ood.percentile(score)
            flag = percentile > ood_percentile
        return SampleUncertainty(self.calibrate(raw), raw.argmax(axis=1), members, threshold, score, percentile, flag)

    def to_dict(self) -> dict[str, Any]:
        """Artifact payload entry (tensors and plain values only)."""
        return {
            "temperature": float(self.temperature),
            "conformal": None if self.conformal is None else self.conformal.to_dict(),
            "ood": None if self.ood is None else self.ood.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Uncertainty:
        """Rebuild from :meth:`to_dict`; None (an artifact older than calibration) gives the identity."""
        if d is None:
            return cls()
        temperature = float(d.get("temperature", 1.0))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        conformal = None if d.get("conformal") is None else SplitConformal.from_dict(d["conformal"])
        ood = None if d.get("ood") is None else MahalanobisOOD.from_dict(d["ood"])
        return cls(temperature, conformal, ood)


def fit_uncertainty(
    model: ProbabilisticClassifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_cal: np.ndarray,
    y_cal: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    n_components: int = DEFAULT_COMPONENTS,
    prior_strength: float = PRIOR_STRENGTH,
    with_ood: bool = True,
    seed: int = 0,
) -> Uncertainty:
    """Fit temperature and conformal scores on the calibration split, and the OOD scorer on all samples.

    Args:
        model: The fitted predictor.
        x_train: Preprocessed samples the head was trained on ``(N, G)``.
        y_train: Their class indices ``(N,)``.
        x_cal: Preprocessed calibration samples ``(M, G)``, never seen by the head (M may be 0).
        y_cal: Their class indices ``(M,)``.
        method: Conformal score, ``"lac"`` or ``"aps"``.
        n_components: Principal components of the expression-space OOD scorer (logistic regression).
        prior_strength: Weight of the temperature's prior (:func:`models.calibration.fit_temperature`).
        with_ood: Fit the OOD scorer (False leaves it out, e.g. to measure calibration alone).
        seed: Folds of the OOD reference scores.

    Returns:
        The fitted :class:`Uncertainty`; with fewer than 2 calibration samples, ``temperature=1`` and no
        conformal scores; the OOD scorer is fitted on training and calibration samples together (out-of-fold
        reference scores).
    """
    temperature, conformal = 1.0, None
    if np.asarray(y_cal).size >= MIN_CONFORMAL_SAMPLES:
        proba_cal = model.predict_proba(x_cal)
        conformal = SplitConformal.fit(proba_cal, y_cal, method)
        temperature = fit_temperature(proba_cal, y_cal, prior_strength=prior_strength)
    x_all = np.concatenate([np.asarray(x_train), np.asarray(x_cal).reshape(-1, np.asarray(x_train).shape[1])])
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_cal)]).astype(np.int64)
    ood = None
    if with_ood and y_all.size >= 4:
        space = ood_space(model)
        features = ood_features(model, x_all)
        if space == "embedding":
            ood = fit_mahalanobis(features, y_all, space=space, seed=seed)
        else:
            ood = fit_mahalanobis(features, y_all, space=space, n_components=n_components, residual=True, seed=seed)
    return Uncertainty(temperature, conformal, ood)


def report_on_test(
    state: Uncertainty,
    model: ProbabilisticClassifier,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    n_calibration: int,
    ood_percentile: float = DEFAULT_OOD_PERCENTILE,
) -> dict[str, Any]:
    """Registry summary of an :class:`Uncertainty` measured on the test split.

    Returns:
        ``{"n_calibration", "temperature", "test": calibration_report, "conformal": {...}, "ood": {...}}``;
        conformal holds the empirical coverage and mean set size at 80, 90 and 95 % on the test split, ood
        the scorer's description and the share of test samples flagged at ``ood_percentile``.
    """
    proba = np.asarray(model.predict_proba(x_test), dtype=np.float64)
    y = np.asarray(y_test).astype(np.int64)
    report: dict[str, Any] = {
        "n_calibration": int(n_calibration),
        "temperature": float(state.temperature),
        "temperature_fitted": bool(n_calibration >= MIN_CONFORMAL_SAMPLES),
        "test": calibration_report(proba, y, state.temperature, n_bins=DEFAULT_BINS),
        "conformal": None,
        "ood": None,
    }
    if state.conformal is not None:
        sets = {c: state.conformal.predict_sets(proba, c) for c in REPORTED_COVERAGES}
        report["conformal"] = {
            "method": state.conformal.method,
            "n_calibration": state.conformal.n,
            "max_finite_coverage": state.conformal.max_finite_coverage(),
            "test_coverage": {str(c): empirical_coverage(m, y) for c, m in sets.items()},
            "test_mean_set_size": {str(c): float(m.sum(axis=1).mean()) for c, m in sets.items()},
            "test_share_single_label": {str(c): float((m.sum(axis=1) == 1).mean()) for c, m in sets.items()},
        }
    if state.ood is not None:
        flagged = state.ood.percentile(state.ood.score(ood_features(model, x_test))) > ood_percentile
        report["ood"] = {**state.ood.summary(), "percentile": ood_percentile, "test_flag_rate": float(flagged.mean())}
    return report


def bootstrap_intervals(
    y_true: np.ndarray, proba: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Percentile bootstrap intervals of test accuracy and balanced accuracy (resampling test samples).

    Args:
        y_true: Class indices ``(N,)``.
        proba: Class probabilities ``(N, C)``.
        n_boot: Bootstrap replicates.
        level: Interval coverage.
        seed: Random seed.

    Returns:
        ``{"accuracy": [lo, hi], "balanced_accuracy": [lo, hi], "n_boot": ..., "level": ...}``; a replicate's
        balanced accuracy averages the recalls of the classes it contains.
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba)
    if y.size == 0:
        raise ValueError("bootstrap of zero samples is undefined")
    n_classes = p.shape[1]
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
    accuracy = correct[idx].mean(axis=1)
    cell = (np.arange(n_boot)[:, None] * n_classes + y[idx]).ravel()
    support = np.bincount(cell, minlength=n_boot * n_classes).reshape(n_boot, n_classes)
    hits = np.bincount(cell, weights=correct[idx].ravel(), minlength=n_boot * n_classes).reshape(n_boot, n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        balanced = np.nanmean(np.where(support > 0, hits / support, np.nan), axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    return {
        "accuracy": [float(v) for v in np.percentile(accuracy, [tail, 100.0 - tail])],
        "balanced_accuracy": [float(v) for v in np.percentile(balanced, [tail, 100.0 - tail])],
        "n_boot": int(n_boot),
        "level": float(level),
    }
