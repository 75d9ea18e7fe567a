"""Out-of-distribution scores relative to a predictor's training samples.

The score is the class-conditional Mahalanobis distance of Lee, Lee, Lee & Shin ("A Simple Unified Framework
for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018): class means ``mu_k`` and
one covariance ``Sigma`` shared by all classes, estimated on class-centred training features and shrunk
towards a scaled identity (Ledoit & Wolf 2004, or OAS, Chen et al. 2010) because the training samples are
few beside the dimension::

    T2(f) = min_k (f - mu_k)^T Sigma^{-1} (f - mu_k)

Features are the encoder's representation (``space="embedding"``, ``score = T2 / d``), or, for predictors
without an encoder, the standardised expression (``space="expression"``, G genes). There the covariance is
that of probabilistic PCA (Tipping & Bishop, J. R. Stat. Soc. B 61, 1999): the shrunk covariance on the
first ``k`` principal components plus an isotropic variance ``sigma2`` on the ``G - k`` others, estimated
from the training samples' squared residual off the principal subspace (the Q statistic of PCA process
monitoring). The Mahalanobis distance under that covariance splits into two terms::

    score = (T2 + Q / sigma2) / G,   sigma2 = mean_train(Q) / (G - k)

A sample of an unseen tissue, another platform or a failed library often lies off the subspace the training
samples span, which T2 on the components alone cannot see (bench/ood.py measures both).

Linear algebra runs in torch (float64, on the CPU), so it follows the worker's ``torch_threads``; the
shrinkage estimators are those of ``sklearn.covariance.LedoitWolf`` and ``OAS`` (``assume_centered``),
checked against them in the tests.

Scores become percentiles of the training samples' own scores, each computed out-of-fold (the sample's
fold held out of the means, covariance and projection), so that a new in-distribution sample's percentile
is close to uniform and a flag above the 99th percentile fires for about 1 % of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

SPACES = ("embedding", "expression")
SHRINKAGE = ("ledoit_wolf", "oas")
DEFAULT_COMPONENTS = 20
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class _Core:
    """Means, precision and the optional projection fitted on one set of samples."""

    means: np.ndarray  # (K, d)
    precision: np.ndarray  # (d, d)
    center: np.ndarray | None  # (F,)
    components: np.ndarray | None  # (d, F), orthonormal rows
    residual_scale: float | None  # sigma2: residual variance per discarded dimension; None without it
    shrinkage: float

    @cached_property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Means, precision and each mean's ``mu^T P mu`` as float64 tensors, made once per loaded scorer (a
        prediction request pays for the scoring only)."""
        means, precision = _t(self.means), _t(self.precision)
        return means, precision, ((means @ precision) * means).sum(dim=1)

    @cached_property
    def projection(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.components is None:
            return None
        assert self.center is not None
        return _t(self.center), _t(self.components).T

    def project(self, f: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return f
        center, axes = self.projection
        return (f - center) @ axes

    def score(self, features: np.ndarray) -> np.ndarray:
        """Combined score ``(N,)`` of features ``(N, F)``."""
        f = _t(features)
        z = self.project(f)
        means, precision, mean_norms = self._tensors
        zp = z @ precision
        distances = (zp * z).sum(dim=1, keepdim=True) - 2.0 * zp @ means.T + mean_norms[None, :]
        t2 = distances.min(dim=1).values.clamp_min(0.0)
        if self.residual_scale is None:
            return (t2 / z.shape[1]).numpy()
        return ((t2 + _residual(f, z, self) / self.residual_scale) / f.shape[1]).numpy()


def _t(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``a`` as a float64 CPU tensor."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64)
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _residual(f: torch.Tensor, z: torch.Tensor, core: _Core) -> torch.Tensor:
    """Squared distance of each sample from the principal subspace (the Q statistic)."""
    assert core.projection is not None
    centred = f - core.projection[0]
    return ((centred**2).sum(dim=1) - (z**2).sum(dim=1)).clamp_min(0.0)


def _principal_axes(f: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(F,)`` and the top ``k`` principal axes ``(k, F)`` (orthonormal rows) of the training features.

    With fewer samples than features the axes come from the ``N x N`` Gram matrix (``X = U S V^T``, so
    ``X X^T = U S^2 U^T`` and ``V = X^T U / S``), far cheaper than an SVD of ``X`` for ``G`` in the
    thousands.
    """
    center = f.mean(dim=0)
    x = f - center
    if x.shape[0] < x.shape[1]:
        eigenvalues, u = torch.linalg.eigh(x @ x.T)
        top = torch.argsort(eigenvalues, descending=True)[:n_components]
        singular = eigenvalues[top].clamp_min(1e-12).sqrt()
        axes = (x.T @ u[:, top] / singular).T
    else:
        eigenvalues, v = torch.linalg.eigh(x.T @ x)
        top = torch.argsort(eigenvalues, descending=True)[:n_components]
        axes = v[:, top].T
    return center, axes


def shrunk_covariance(x: torch.Tensor, method: str = "ledoit_wolf") -> tuple[torch.Tensor, float]:
    """Shrunk covariance of centred samples ``x`` ``(N, D)`` and its shrinkage coefficient.

    ``(1 - s) S + s (tr(S) / D) I`` with ``S = x^T x / N`` and ``s`` from Ledoit & Wolf (2004) or the
    oracle approximating shrinkage of Chen, Wiesel, Eldar & Hero (2010), as sklearn computes them.
    """
    n, d = x.shape
    emp = x.T @ x / n
    mu = float(torch.trace(emp)) / d
    if method == "ledoit_wolf":
        x2 = x**2
        beta_ = float((x2.T @ x2).sum()) / n
        delta_ = float(((x.T @ x) ** 2).sum()) / n**2
        beta = (beta_ - delta_) / (d * n)
        delta = (delta_ - 2.0 * mu * float(x2.sum()) / n + d * mu**2) / d
        shrinkage = 0.0 if beta == 0 else min(beta, delta) / delta
    elif method == "oas":
        alpha = float((emp**2).mean())
        denominator = (n + 1) * (alpha - mu**2 / d)
        shrinkage = 1.0 if denominator == 0 else min((alpha + mu**2) / denominator, 1.0)
    else:
        raise ValueError(f"shrinkage must be one of {SHRINKAGE}, got {method!r}")
    identity = torch.eye(d, dtype=emp.dtype)
    if not mu > 0:  # every sample at its class mean: nothing to estimate, unit variance keeps scores finite
        return identity, 1.0
    # A ridge of 1e-9 of the mean variance keeps the inverse finite when shrinkage is 0 and S is singular.
    return (1.0 - shrinkage) * emp + (shrinkage + 1e-9) * mu * identity, float(shrinkage)


def _fit_core(f: torch.Tensor, y: np.ndarray, n_components: int | None, residual: bool, shrinkage: str) -> _Core:
    center = components = None
    if n_components is not None:
        center, components = _principal_axes(f, n_components)
    core = _Core(np.zeros((0, 0)), np.zeros((0, 0)), None if center is None else center.numpy(),
                 None if components is None else components.numpy(), None, 0.0)
    z = core.project(f)
    _, index = np.unique(y, return_inverse=True)
    idx = torch.from_numpy(index.astype(np.int64))
    n_classes = int(index.max()) + 1
    sums = torch.zeros((n_classes, z.shape[1]), dtype=torch.float64).index_add_(0, idx, z)
    means = sums / torch.bincount(idx, minlength=n_classes).to(torch.float64)[:, None]
    covariance, coefficient = shrunk_covariance(z - means[idx], shrinkage)
    scale = None
    if residual and components is not None and components.shape[0] < f.shape[1]:  # else nothing is discarded
        discarded = f.shape[1] - components.shape[0]
        scale = max(float(_residual(f, z, core).mean()) / discarded, 1e-12)
    precision = torch.linalg.inv(covariance)
    return _Core(means.numpy(), ((precision + precision.T) / 2).numpy(), core.center, core.components, scale,
                 coefficient)


def _folds(y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds when every class can fill them, else plain shuffled folds."""
    _, counts = np.unique(y, return_counts=True)
    splitter: StratifiedKFold | KFold
    if counts.min() >= n_folds:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(y.size), y))


@dataclass(frozen=True)
class MahalanobisOOD:
    """A fitted out-of-distribution scorer with its reference distribution.

    Attributes:
        space: ``"embedding"`` or ``"expression"`` (what the features are).
        core: Means, shared precision and optional PCA projection.
        reference: Sorted out-of-fold scores of the training samples ``(M,)``.
    """

    space: str
    core: _Core
    reference: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.core.means.shape[1])

    def score(self, features: np.ndarray) -> np.ndarray:
        """OOD scores ``(N,)`` of features ``(N, F)`` (embeddings, or standardised expression); higher is
        further from every training class."""
        return self.core.score(features)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Share (in %) of the training samples' out-of-fold scores strictly below each score ``(N,)``."""
        below = np.searchsorted(self.reference, np.asarray(scores, dtype=np.float64), side="left")
        return 100.0 * below / max(self.reference.size, 1)

    def summary(self) -> dict[str, Any]:
        """Plain description for the registry and the model card."""
        return {
            "space": self.space,
            "dim": self.dim,
            "n_classes": int(self.core.means.shape[0]),
            "pca": self.core.components is not None,
            "residual": self.core.residual_scale is not None,
            "shrinkage": self.core.shrinkage,
            "n_reference": int(self.reference.size),
        }

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values (safe for ``torch.load(weights_only=True)``)."""
        c = self.core

        def tensor(a: np.ndarray | None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))

        return {
            "space": self.space,
            "means": tensor(c.means),
            "precision": tensor(c.precision),
            "center": tensor(c.center),
            "components": tensor(c.components),
            "residual_scale": c.residual_scale,
            "shrinkage": c.shrinkage,
            "reference": tensor(self.reference),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MahalanobisOOD:
        """Rebuild from :meth:`to_dict` output; raise ValueError on inconsistent shapes."""

        def array(key: str, optional: bool = False) -> np.ndarray | None:
            value = d.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"OOD state field {key!r} must be a tensor")
            return value.numpy().astype(np.float64)

        means, precision, reference = array("means"), array("precision"), array("reference")
        center, components = array("center", True), array("components", True)
        assert means is not None and precision is not None and reference is not None
        dim = means.shape[1] if means.ndim == 2 else -1
        if precision.shape != (dim, dim) or reference.ndim != 1:
            raise ValueError("OOD state has inconsistent shapes")
        if (center is None) != (components is None) or (
            components is not None and center is not None and components.shape != (dim, center.shape[0])
        ):
            raise ValueError("OOD projection has inconsistent shapes")
        scale = d.get("residual_scale")
        core = _Core(means, precision, center, components, None if scale is None else float(scale),
                     float(d.get("shrinkage", 0.0)))
        space = str(d.get("space"))
        if space not in SPACES:
            raise ValueError(f"OOD space must be one of {SPACES}, got {space!r}")
        return cls(space, core, np.sort(reference))


def fit_mahalanobis(
    features: np.ndarray,
    y: np.ndarray,
    *,
    space: str = "embedding",
    n_components: int | None = None,
    residual: bool = False,
    shrinkage: str = "ledoit_wolf",
    n_folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> MahalanobisOOD:
    """Fit the class-conditional Mahalanobis scorer and its out-of-fold reference scores.

    Args:
        features: Training features ``(N, F)``: encoder representations, or standardised expression.
        y: Class indices ``(N,)``.
        space: What the features are, recorded for the card (``"embedding"`` or ``"expression"``).
        n_components: Project on this many principal components first (capped at ``N_fold - 1`` and F);
            None keeps the features as they are.
        residual: Add the residual off the principal subspace, as probabilistic PCA's isotropic part (needs
            ``n_components``).
        shrinkage: ``"ledoit_wolf"`` or ``"oas"``.
        n_folds: Folds of the out-of-fold reference scores (at most N // 2).
        seed: Fold assignment.

    Returns:
        The scorer, fitted on all samples, with every sample's out-of-fold score as reference.
    """
    f = _t(features)
    labels = np.asarray(y)
    if f.ndim != 2 or labels.shape != (f.shape[0],):
        raise ValueError(f"features must be (N, F) with y (N,), got {tuple(f.shape)} and {labels.shape}")
    if f.shape[0] < 4 or not bool(torch.isfinite(f).all()):
        raise ValueError(f"need at least 4 finite training samples, got {f.shape[0]}")
    if space not in SPACES or shrinkage not in SHRINKAGE:
        raise ValueError(f"space must be one of {SPACES} and shrinkage one of {SHRINKAGE}")
    if residual and n_components is None:
        raise ValueError("the residual term needs a principal-component projection (n_components)")
    folds = _folds(labels, min(n_folds, f.shape[0] // 2), seed)
    k = None
    if n_components is not None:
        smallest = min(train.size for train, _ in folds)
        k = max(1, min(int(n_components), smallest - 1, f.shape[1]))
    reference = np.empty(f.shape[0])
    for train, held in folds:
        core = _fit_core(f[torch.from_numpy(train)], labels[train], k, residual, shrinkage)
        reference[held] = core.score(f[torch.from_numpy(held)].numpy())
    return MahalanobisOOD(space, _fit_core(f, labels, k, residual, shrinkage), np.sort(reference))


def gene_drift(
    z: np.ndarray, observed: np.ndarray, genes: list[str], *, top: int = 20
) -> tuple[list[dict[str, Any]], int, float]:
    """Genes whose distribution in a batch moved most from the reference, by standardised mean difference.

    With ``z = (x - mean_ref) / std_ref`` per gene (``Preprocessor.transform`` output), the standardised
    mean difference of gene ``g`` is the batch mean of ``z_g`` over the samples where ``g`` was observed.

    Args:
        z: Preprocessed batch ``(N, G)``.
        observed: Boolean ``(N, G)``: the value was present in the input (not imputed).
        genes: Panel gene ids, length G.
        top: Number of genes returned.

    Returns:
        ``(top_genes, n_genes_compared, mean_abs_smd)``: ``top_genes`` are ``{"gene", "smd"}`` dicts with the
        largest ``|smd|`` first, over genes observed in at least one sample.
    """
    mask = np.asarray(observed, dtype=bool)
    if mask.size and mask.all():  # the usual case, every panel gene sent: the same sums without the masking
        compared = np.ones(mask.shape[1], dtype=bool)
        smd = np.asarray(z).sum(axis=0).astype(np.float64) / mask.shape[0]
    else:
        counts = mask.sum(axis=0)
        compared = counts > 0
        smd = np.where(compared, np.where(mask, z, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
    if not compared.any():
        return [], 0, 0.0
    candidates = np.flatnonzero(compared)
    order = candidates[np.argsort(-np.abs(smd[candidates]), kind="stable")[:top]]
    ranked = [{"gene": str(genes[j]), "smd": float(smd[j]), "index": int(j)} for j in order]
    return ranked, int(compared.sum()), float(np.abs(smd[candidates]).mean())
