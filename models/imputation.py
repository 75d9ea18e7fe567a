"""Fill in panel genes that an input lacks, from the training cohort.

All imputers work on numpy arrays on one scale, normally the model's preprocessed one (per-gene z-scores of
log-expression, :class:`models.preprocessing.Preprocessor`): ``fit`` on the training matrix ``(N, G)``, then
``transform(x, observed)`` with ``x`` of shape ``(M, G)`` aligned to the same panel and ``observed`` a boolean
mask ``(G,)`` of the genes the input has. Columns not observed are replaced (whatever they hold, NaN
included); NaN entries inside observed columns are filled with the training mean.

- :class:`MeanImputer` (the default): the training mean of each missing gene (0 on the z-score scale).
- :class:`RidgeImputer`: ridge regression from the observed genes to the missing ones over the training
  samples, solved in kernel (dual) form, ``x_m = mu_m + k(x_o) (K + lambda I)^-1 Y_m`` with the linear kernel
  ``K = X_o X_o^T`` on centred training rows; lambda chosen by exact leave-one-out error (Rifkin & Lippert,
  "Notes on regularized least squares", 2007).
- :class:`KnnImputer`: mean of the missing genes over the k training samples nearest on the observed genes
  (Troyanskaya et al., Bioinformatics 2001, KNNimpute).
- :class:`ZeroImputer`: zeros, for contrast only. Zero is the training mean on the z-score scale but far
  below it on the raw log scale: never zero-fill raw expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np

_LOO_GENES = 256  # missing genes the leave-one-out choice of lambda looks at (a seeded sample)
_DEFAULT_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _as_matrix(x: np.ndarray, what: str, n_genes: int | None = None) -> np.ndarray:
    """float64 copy of a 2-D matrix, checked against the panel size."""
    arr = np.array(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_genes), got shape {arr.shape}")
    if n_genes is not None and arr.shape[1] != n_genes:
        raise ValueError(f"{what} has {arr.shape[1]} genes but the imputer was fitted on {n_genes}")
    return arr


def _as_mask(observed: np.ndarray, n_genes: int) -> np.ndarray:
    """Boolean gene mask of length ``n_genes``."""
    mask = np.asarray(observed)
    if mask.shape != (n_genes,) or mask.dtype != np.bool_:
        raise ValueError(f"observed must be a boolean mask of shape ({n_genes},), got {mask.dtype} {mask.shape}")
    return mask


def observed_genes(x: np.ndarray) -> np.ndarray:
    """Genes with at least one finite value in ``x`` ``(M, G)``: the ``observed`` mask of an aligned input."""
    return np.asarray(np.isfinite(np.asarray(x, dtype=np.float64)).any(axis=0), dtype=bool)


class GeneImputer(Protocol):
    """Fits on a training matrix, then completes inputs that lack some genes."""

    def fit(self, train: np.ndarray) -> Self: ...

    def transform(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray: ...


class MeanImputer:
    """Missing genes take their training mean; the baseline every other imputer must beat."""

    mean_: np.ndarray

    def fit(self, train: np.ndarray) -> Self:
        """Store the per-gene mean of ``train`` ``(N, G)`` (NaN ignored; 0 for a gene never observed)."""
        arr = _as_matrix(train, "train")
        finite = np.isfinite(arr)
        counts = finite.sum(axis=0)
        self.mean_ = np.where(finite, arr, 0.0).sum(axis=0) / np.maximum(counts, 1)
        return self

    @property
    def n_genes(self) -> int:
        return int(self.mean_.shape[0])

    def _prepare(self, x: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Checked float64 copy of ``x`` whose NaN and unobserved entries hold the training mean."""
        arr = _as_matrix(x, "x", self.n_genes)
        mask = _as_mask(observed, self.n_genes)
        arr[:, ~mask] = np.nan
        return np.where(np.isfinite(arr), arr, self.mean_), mask

    def transform(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Complete ``x`` ``(M, G)``: unobserved genes (and NaN entries) get the training mean.

        Returns:
            float32 array ``(M, G)``; observed finite values are unchanged.
        """
        filled, _ = self._prepare(x, observed)
        return filled.astype(np.float32)


class ZeroImputer(MeanImputer):
    """Missing genes become 0.0 (contrast only: on the raw log scale that is far below any real value)."""

    def transform(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Complete ``x`` ``(M, G)`` with zeros in unobserved genes; NaN in observed genes also become 0."""
        arr = _as_matrix(x, "x", self.n_genes)
        mask = _as_mask(observed, self.n_genes)
        arr[:, ~mask] = 0.0
        return np.nan_to_num(arr, nan=0.0).astype(np.float32)


class RidgeImputer(MeanImputer):
    """Kernel ridge regression from observed to missing genes over the training samples.

    Args:
        alphas: Candidate ridge penalties, relative to the mean diagonal of the kernel ``K = X_o X_o^T``; the
            one with the lowest exact leave-one-out error on the training samples is used.
        max_samples: Training rows kept (a seeded sample); the solve is O(N^2 G + N^3) in their number N.
        seed: Seed of that sample and of the genes scored for the leave-one-out choice.
    """

    def __init__(self, alphas: Sequence[float] = _DEFAULT_ALPHAS, *, max_samples: int = 2000, seed: int = 0) -> None:
        if not alphas or min(alphas) <= 0:
            raise ValueError(f"alphas must be positive, got {list(alphas)}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        self.alphas = tuple(float(a) for a in alphas)
        self.max_samples = max_samples
        self.seed = seed
        self.alpha_: float | None = None

    def fit(self, train: np.ndarray) -> Self:
        """Keep the training mean and the centred training rows ``(N, G)`` (at most ``max_samples``)."""
        super().fit(train)
        arr = _as_matrix(train, "train")
        rng = np.random.default_rng(self.seed)
        if arr.shape[0] > self.max_samples:
            arr = arr[np.sort(rng.choice(arr.shape[0], self.max_samples, replace=False))]
        self.centred_ = np.where(np.isfinite(arr), arr, self.mean_) - self.mean_
        return self

    def _choose_alpha(self, eigval: np.ndarray, eigvec: np.ndarray, targets: np.ndarray) -> float:
        """Penalty with the lowest leave-one-out squared error, ``e_i = (G Y)_i / G_ii``, ``G = (K + lambda I)^-1``."""
        rng = np.random.default_rng(self.seed)
        if targets.shape[1] > _LOO_GENES:
            targets = targets[:, rng.choice(targets.shape[1], _LOO_GENES, replace=False)]
        projected = eigvec.T @ targets
        scale = max(float(eigval.mean()), 1e-12)
        errors = []
        for alpha in self.alphas:
            inv = 1.0 / (eigval + alpha * scale)
            residual = (eigvec * inv) @ projected / ((eigvec**2) @ inv)[:, None]
            errors.append(float(np.mean(residual**2)))
        return self.alphas[int(np.argmin(errors))] * scale

    def solve(self, observed: np.ndarray) -> RidgeSolution:
        """The costly part of :meth:`transform` for one set of observed genes, reusable across inputs.

        Eigendecomposition of the training kernel ``K = X_o X_o^T`` (``O(N^2 G_o + N^3)``) and the penalty
        chosen by leave-one-out; memory ``N^2`` floats.
        """
        mask = _as_mask(observed, self.n_genes)
        x_obs = self.centred_[:, mask]
        eigval, eigvec = np.linalg.eigh(x_obs @ x_obs.T)
        eigval = np.clip(eigval, 0.0, None)
        penalty = self._choose_alpha(eigval, eigvec, self.centred_[:, ~mask]) if (~mask).any() else 0.0
        return RidgeSolution(mask.copy(), eigval, eigvec, penalty)

    def transform(
        self, x: np.ndarray, observed: np.ndarray, *, solution: RidgeSolution | None = None
    ) -> np.ndarray:
        """Complete ``x`` ``(M, G)``: unobserved genes predicted from the observed ones.

        Args:
            x: Input aligned to the panel, ``(M, G)``.
            observed: Boolean mask ``(G,)`` of the genes the input has.
            solution: :meth:`solve` for the same ``observed`` (computed here when None).

        Returns:
            float32 array ``(M, G)``; observed values unchanged (NaN among them: training mean). With no
            observed gene, or none missing, the result equals :class:`MeanImputer`'s.
        """
        filled, mask = self._prepare(x, observed)
        if mask.all() or not mask.any():
            return filled.astype(np.float32)
        if solution is None:
            solution = self.solve(mask)
        elif not np.array_equal(solution.observed, mask):
            raise ValueError("the solution was computed for another set of observed genes")
        self.alpha_ = solution.penalty
        x_obs, y_mis = self.centred_[:, mask], self.centred_[:, ~mask]
        kernel = (filled[:, mask] - self.mean_[mask]) @ x_obs.T  # k(x_o), shape (M, N)
        # k (K + lambda I)^-1 Y_m, multiplied from the left: O(M N^2 + M N G_m) for M inputs.
        weights = ((kernel @ solution.eigvec) / (solution.eigval + solution.penalty)) @ solution.eigvec.T
        filled[:, ~mask] = self.mean_[~mask] + weights @ y_mis
        return filled.astype(np.float32)


@dataclass(frozen=True)
class RidgeSolution:
    """:meth:`RidgeImputer.solve` for one mask: ``K = V diag(eigval) V^T`` and the chosen penalty lambda."""

    observed: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray
    penalty: float

    @property
    def nbytes(self) -> int:
        return int(self.eigvec.nbytes + self.eigval.nbytes + self.observed.nbytes)


class KnnImputer(MeanImputer):
    """Missing genes averaged over the ``k`` training samples nearest on the observed genes (Euclidean).

    Args:
        k: Number of neighbours.
    """

    def __init__(self, k: int = 10) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def fit(self, train: np.ndarray) -> Self:
        """Keep the training mean and the training rows ``(N, G)`` (NaN filled with the mean)."""
        super().fit(train)
        arr = _as_matrix(train, "train")
        self.train_ = np.where(np.isfinite(arr), arr, self.mean_)
        return self

    def transform(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Complete ``x`` ``(M, G)``: unobserved genes get the mean of the ``k`` nearest training rows.

        Returns:
            float32 array ``(M, G)``; observed values unchanged (NaN among them: training mean).
        """
        filled, mask = self._prepare(x, observed)
        if mask.all() or not mask.any():
            return filled.astype(np.float32)
        ref = self.train_[:, mask]
        query = filled[:, mask]
        # Squared distances (M, N) without an (M, N, G) temporary.
        dist = (query**2).sum(1)[:, None] - 2.0 * query @ ref.T + (ref**2).sum(1)[None, :]
        k = min(self.k, ref.shape[0])
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        filled[:, ~mask] = self.train_[:, ~mask][nearest].mean(axis=1)
        return filled.astype(np.float32)


IMPUTERS: dict[str, type[MeanImputer]] = {
    "mean": MeanImputer,
    "ridge": RidgeImputer,
    "knn": KnnImputer,
    "zero": ZeroImputer,
}


def impute_missing_genes(x: np.ndarray, observed: np.ndarray, train: np.ndarray, *, method: str = "mean") -> np.ndarray:
    """Complete an input that lacks some panel genes, with an imputer fitted on the training matrix.

    Args:
        x: Input aligned to the panel, ``(M, G)``; unobserved columns are ignored (NaN is fine).
        observed: Boolean mask ``(G,)`` of the genes the input has.
        train: Training (pretraining) matrix on the same scale and panel, ``(N, G)``.
        method: ``"mean"`` (default), ``"ridge"``, ``"knn"`` or ``"zero"`` (contrast only), see :data:`IMPUTERS`.

    Returns:
        float32 array ``(M, G)``.
    """
    if method not in IMPUTERS:
        raise ValueError(f"unknown imputation method {method!r}; choose one of {sorted(IMPUTERS)}")
    return IMPUTERS[method]().fit(train).transform(x, observed)
