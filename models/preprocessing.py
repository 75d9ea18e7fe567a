"""Expression preprocessing: optional log1p, then a per-gene z-score fitted on training data only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.genes import duplicate_gene_ids

_MIN_STD = 1e-6
_COUNTS_MIN_MAX = 100.0


def looks_like_counts(x: np.ndarray) -> bool:
    """Guess whether a matrix holds raw read counts.

    Args:
        x: Expression matrix, any shape; NaN entries are ignored.

    Returns:
        True when every finite value is a non-negative integer and the maximum exceeds 100 (log2
        microarray intensities, 2..14 and non-integer, give False).
    """
    arr = np.asarray(x, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return False
    return bool((finite >= 0).all() and (finite == np.round(finite)).all() and finite.max() > _COUNTS_MIN_MAX)


def require_finite(
    x: np.ndarray, what: str = "x", *, genes: Sequence[str] | None = None, row_offset: int = 0, allow_nan: bool = False
) -> None:
    """Raise ValueError naming the first (row by row) entry of a 2-D ``x`` that is NaN or infinite.

    Args:
        x: Matrix ``(N, G)``.
        what: The argument's name in the message.
        genes: Column names, to name the gene as well.
        row_offset: Added to the row reported (``x`` is a batch of a larger matrix).
        allow_nan: Accept NaN (a missing value), refuse only +-inf.
    """
    bad = np.isinf(x) if allow_nan else ~np.isfinite(x)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    gene = f" (gene {genes[col]!r})" if genes is not None else ""
    kind = "infinite or NaN" if not allow_nan else "infinite"
    raise ValueError(
        f"{what} holds {int(bad.sum())} {kind} value(s); the first is {x[row, col]} in row {row + row_offset}, "
        f"column {col}{gene}"
    )


def _as_2d_float(x: np.ndarray, genes: Sequence[str] | None = None) -> np.ndarray:
    """Return ``x`` as a float64 2-D array; NaN marks a missing value, +-inf is refused (naming the first)."""
    arr = np.array(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D matrix (n_samples, n_genes), got shape {arr.shape}")
    require_finite(arr, "x", genes=genes if genes is not None and len(genes) == arr.shape[1] else None,
                   allow_nan=True)
    return arr


def _log1p(arr: np.ndarray) -> np.ndarray:
    """log(1 + x) with negative inputs rejected (they cannot be counts)."""
    if np.nanmin(arr, initial=0.0) < 0:
        raise ValueError("log1p preprocessing requires non-negative values")
    return np.log1p(arr)


@dataclass
class Preprocessor:
    """Per-gene z-score of (optionally log1p-transformed) expression.

    ``transform(x) = (f(x) - mean) / std`` with ``f = log1p`` when ``log1p`` is set, else the identity;
    missing (NaN) entries become 0.0, i.e. the training mean (DESIGN "Gene alignment").

    Attributes:
        genes: Ordered gene panel, length G.
        log1p: Whether ``log1p`` is applied before standardising.
        mean: Per-gene mean on the transformed scale, float32 shape ``(G,)``.
        std: Per-gene standard deviation, float32 shape ``(G,)``; values below 1e-6 replaced by 1.0.
    """

    genes: list[str]
    log1p: bool
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        """Refuse a panel naming one gene twice, however the preprocessor is made (fit, loaded, built): input
        is aligned to the panel by normalised id, and a gene's two columns could not both be filled."""
        duplicates = duplicate_gene_ids(self.genes)
        if duplicates:
            shown = "; ".join(f"{k}: {', '.join(map(repr, v))}" for k, v in list(duplicates.items())[:10])
            raise ValueError(
                f"genes: {len(duplicates)} gene id(s) appear more than once once normalised (Ensembl version "
                f"suffix dropped, case ignored): {shown}"
            )

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        genes: Sequence[str],
        *,
        log1p: bool | None = None,
        fallback: Preprocessor | None = None,
    ) -> Preprocessor:
        """Fit per-gene statistics on training data.

        Args:
            x: Training matrix, shape ``(N, G)``; NaN entries are ignored, +-inf refused.
            genes: Gene ids, length G.
            log1p: Apply ``log1p`` first; ``None`` auto-detects with :func:`looks_like_counts`.
            fallback: Statistics for the genes ``x`` has no value of (a continued encoder's parent), with
                the same genes; they are on the transformed (log) scale, which both sides share whether
                or not each applies ``log1p``. Without it such genes get mean 0 and std 1.

        Returns:
            A fitted preprocessor.

        Raises:
            ValueError: On a shape mismatch, genes that repeat once normalised (``"TP53"``, ``"tp53"``), or a
                ``fallback`` of other genes.
        """
        arr = _as_2d_float(x, genes)
        if arr.shape[1] != len(genes):
            raise ValueError(f"x has {arr.shape[1]} columns but {len(genes)} genes were given")
        use_log = looks_like_counts(arr) if log1p is None else bool(log1p)
        if use_log:
            arr = _log1p(arr)
        observed = np.isfinite(arr).any(axis=0)
        filled = np.where(observed, arr, 0.0)
        mean = np.nanmean(filled, axis=0)
        std = np.nanstd(filled, axis=0)
        std = np.where(std < _MIN_STD, 1.0, std)
        if fallback is not None:
            if list(fallback.genes) != [str(g) for g in genes]:
                raise ValueError("fallback statistics must be of the same genes, in the same order")
            mean = np.where(observed, mean, fallback.mean)
            std = np.where(observed, std, fallback.std)
        return cls(
            genes=[str(g) for g in genes],
            log1p=use_log,
            mean=mean.astype(np.float32),
            std=std.astype(np.float32),
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise a matrix already aligned to ``genes``.

        Args:
            x: Matrix of shape ``(N, G)``; NaN marks missing values (imputed with 0.0 = training mean).

        Returns:
            float32 array of shape ``(N, G)``.

        Raises:
            ValueError: On a shape mismatch, or +-inf (not a missing value: the first is named), or negative
                values when ``log1p`` is set.
        """
        arr = _as_2d_float(x, self.genes)
        if arr.shape[1] != len(self.genes):
            raise ValueError(f"x has {arr.shape[1]} columns but the preprocessor has {len(self.genes)} genes")
        if self.log1p:
            arr = _log1p(arr)
        z = (arr - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Return plain python types (safe for JSON and ``torch.load(weights_only=True)``)."""
        return {
            "genes": list(self.genes),
            "log1p": bool(self.log1p),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        """Rebuild a preprocessor from :meth:`to_dict` output.

        Raises:
            ValueError: On missing keys, mismatched lengths, non-positive std or repeated genes.
        """
        missing = {"genes", "log1p", "mean", "std"} - set(d)
        if missing:
            raise ValueError(f"preprocessor state lacks key(s): {sorted(missing)}")
        genes = [str(g) for g in d["genes"]]
        mean = np.asarray(d["mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(d["std"], dtype=np.float32).reshape(-1)
        if not (len(genes) == mean.shape[0] == std.shape[0]):
            raise ValueError(
                f"preprocessor lengths differ: {len(genes)} genes, {mean.shape[0]} means, {std.shape[0]} stds"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("preprocessor mean/std must be finite and std positive")
        return cls(genes=genes, log1p=bool(d["log1p"]), mean=mean, std=std)
