"""Gene identifier normalisation and alignment of expression matrices to a gene panel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

_ENSEMBL = re.compile(r"^(ENS[A-Z]*[GTP]\d+)(\.\d+)?$", re.IGNORECASE)
_REPORT_LIMIT = 50


def normalise_gene_id(name: str) -> str:
    """Normalise a gene identifier for matching.

    Ensembl ids (``ENSG00000141510.16``, ``ENST...``, ``ENSMUSG...``) lose their version suffix; every
    identifier is stripped of surrounding whitespace and upper-cased (gene symbols are matched
    case-insensitively).

    Args:
        name: Gene identifier as found in an uploaded matrix or a panel.

    Returns:
        The normalised identifier.
    """
    cleaned = str(name).strip().upper()
    match = _ENSEMBL.match(cleaned)
    return match.group(1) if match else cleaned


@dataclass
class AlignmentReport:
    """How an input gene list maps onto a panel.

    Attributes:
        n_panel: Number of panel genes.
        n_found: Panel genes present in the input.
        n_missing: Panel genes absent from the input (imputed downstream).
        n_extra: Input genes not in the panel (dropped).
        coverage: ``n_found / n_panel`` (0.0 for an empty panel).
        missing: Up to the first 50 missing panel genes, as spelled in the panel.
        extra: Up to the first 50 extra input genes, as spelled in the input.
    """

    n_panel: int
    n_found: int
    n_missing: int
    n_extra: int
    coverage: float
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the report as plain JSON-serialisable python types."""
        return asdict(self)


def _duplicates(normalised: Sequence[str], original: Sequence[str]) -> dict[str, list[str]]:
    """Group original names by normalised id, keeping only ids seen more than once."""
    groups: dict[str, list[str]] = {}
    for norm, orig in zip(normalised, original, strict=True):
        groups.setdefault(norm, []).append(str(orig))
    return {k: v for k, v in groups.items() if len(v) > 1}


def _index_genes(genes: Sequence[str], what: str) -> dict[str, int]:
    """Map normalised id -> column index; raise ValueError naming duplicated ids."""
    normalised = [normalise_gene_id(g) for g in genes]
    index = {g: i for i, g in enumerate(normalised)}
    if len(index) != len(normalised):
        dups = _duplicates(normalised, genes)
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in list(dups.items())[:10])
        raise ValueError(f"{len(dups)} {what} gene id(s) are duplicated after normalisation: {shown}")
    return index


def align_to_panel(
    values: np.ndarray, genes: Sequence[str], panel: Sequence[str]
) -> tuple[np.ndarray, AlignmentReport]:
    """Reorder the columns of an expression matrix to a gene panel.

    Identifiers on both sides are matched after :func:`normalise_gene_id`. Panel genes absent from the
    input become NaN columns (imputed later by :meth:`models.preprocessing.Preprocessor.transform`);
    input genes not in the panel are dropped.

    Args:
        values: Expression matrix, shape ``(n_samples, len(genes))``.
        genes: Column identifiers of ``values``.
        panel: Target gene panel (ordered).

    Returns:
        ``(aligned, report)`` with ``aligned`` float32 of shape ``(n_samples, len(panel))``.

    Raises:
        ValueError: If shapes disagree or two input (or panel) genes normalise to the same id.
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(genes):
        raise ValueError(f"values must have shape (n_samples, {len(genes)}) to match genes, got {values.shape}")
    source = _index_genes(genes, "input")
    target = [normalise_gene_id(g) for g in panel]
    _index_genes(panel, "panel")
    src_idx = np.array([source.get(g, -1) for g in target], dtype=np.int64)
    found = src_idx >= 0
    aligned = np.full((values.shape[0], len(panel)), np.nan, dtype=np.float32)
    aligned[:, found] = values[:, src_idx[found]].astype(np.float32, copy=False)
    panel_set = set(target)
    extra = [str(g) for g in genes if normalise_gene_id(g) not in panel_set]
    missing = [str(p) for p, ok in zip(panel, found, strict=True) if not ok]
    n_found = int(found.sum())
    report = AlignmentReport(
        n_panel=len(panel),
        n_found=n_found,
        n_missing=len(panel) - n_found,
        n_extra=len(extra),
        coverage=float(n_found / len(panel)) if len(panel) else 0.0,
        missing=missing[:_REPORT_LIMIT],
        extra=extra[:_REPORT_LIMIT],
    )
    return aligned, report
