"""Gene identifiers: normalisation, id-type detection, duplicate harmonisation, and alignment to a gene panel.

Matching goes through a :class:`GeneIdResolver`, a function from identifiers to match keys. The default,
:func:`normalise_gene_ids`, drops Ensembl version suffixes and upper-cases symbols; a resolver backed by a
gene table (symbols, previous symbols, aliases, Ensembl and NCBI ids mapped to one key) can replace it
without changing any caller.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

_ENSEMBL = re.compile(r"^(ENS[A-Z]*[GTP]\d+)(\.\d+)?$", re.IGNORECASE)
_REPORT_LIMIT = 50
_ROW_BLOCK_CELLS = 4_000_000  # bounds the temporaries of column merges

# Identifier kinds, tried in this order; the first pattern an id matches is its kind.
GENE_ID_PATTERNS: dict[str, re.Pattern[str]] = {
    "ensembl": re.compile(r"^ENS[A-Z]*[GT]\d{6,}(\.\d+)?(_PAR_Y)?$", re.IGNORECASE),
    "entrez": re.compile(r"^\d{1,9}$"),
    "probe": re.compile(
        r"^(AFFX-)?[\w.-]*_(s_|x_|i_|f_|r_|g_|b_)?at$|^ILMN_\d+$|^A_\d+_P\d+$", re.IGNORECASE
    ),
    # LRG_<n> (Locus Reference Genomic records) are shaped like symbols but are none: no gene table maps them.
    "symbol": re.compile(r"^(?!(?i:LRG)_\d)[A-Za-z][A-Za-z0-9._@/-]*$"),
}
GENE_ID_SHARE = 0.9  # an id type is named when at least this share of the ids follow it


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


def normalise_gene_ids(names: Sequence[str]) -> list[str]:
    """The default :class:`GeneIdResolver`: :func:`normalise_gene_id` applied to each name."""
    return [normalise_gene_id(n) for n in names]


class GeneIdResolver(Protocol):
    """Maps gene identifiers to match keys; names with the same key denote the same gene.

    Must be deterministic and idempotent (a key resolves to itself), and return one key per name.
    """

    def __call__(self, names: Sequence[str], /) -> list[str]: ...


def gene_id_kind(name: str) -> str:
    """Kind of one identifier: ensembl, entrez, probe, symbol, or other (see ``GENE_ID_PATTERNS``)."""
    text = str(name).strip()
    for kind, pattern in GENE_ID_PATTERNS.items():
        if pattern.match(text):
            return kind
    return "other"


@dataclass(frozen=True)
class GeneIdSummary:
    """What a list of gene identifiers looks like.

    Attributes:
        id_type: The kind at least ``GENE_ID_SHARE`` of the ids follow (ensembl, entrez, probe, symbol),
            else "other".
        share: Fraction of ids of kind ``id_type`` (of the most common kind when ``id_type`` is "other").
        kinds: Number of ids of each kind, most common first.
        n_versioned: Ensembl ids that carry a version suffix (``ENSG00000141510.16``).
        examples: Up to three ids of each kind, as spelled in the input.
    """

    id_type: str
    share: float
    kinds: dict[str, int]
    n_versioned: int
    examples: dict[str, list[str]]

    def to_dict(self) -> dict:
        return asdict(self)


def summarise_gene_ids(genes: Sequence[str]) -> GeneIdSummary:
    """Count identifier kinds and name the dominant one."""
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    versioned = 0
    for name in genes:
        kind = gene_id_kind(name)
        counts[kind] = counts.get(kind, 0) + 1
        if len(shown := examples.setdefault(kind, [])) < 3:
            shown.append(str(name))
        if kind == "ensembl" and "." in str(name):
            versioned += 1
    ranked = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    top, n_top = next(iter(ranked.items()), ("other", 0))
    share = n_top / len(genes) if len(genes) else 0.0
    id_type = top if share >= GENE_ID_SHARE and top != "other" else "other"
    return GeneIdSummary(id_type, round(share, 4), ranked, versioned, examples)


def detect_gene_id_type(genes: Sequence[str]) -> str:
    """The id type of :func:`summarise_gene_ids`."""
    return summarise_gene_ids(genes).id_type


@dataclass(frozen=True)
class GeneHarmonisation:
    """Columns of a matrix grouped by match key (see :func:`harmonise_genes`).

    Attributes:
        names: One name per output column, in first-appearance order: the original name where the key
            has one column, the key itself where several columns share it.
        keys: The match key of each output column.
        groups: Input column positions of each output column.
        duplicates: For each key shared by several input columns, their original names, in order.
    """

    names: list[str]
    keys: list[str]
    groups: list[list[int]]
    duplicates: dict[str, list[str]]

    @property
    def n_input(self) -> int:
        return sum(len(g) for g in self.groups)

    def merge(self, values: np.ndarray, how: str = "sum") -> np.ndarray:
        """Sum (or average, ``how="mean"``) the columns of ``values`` (n_samples, n_input) that share a key.

        Returns ``values`` itself when no key is shared, else a new C-contiguous float32 array of shape
        (n_samples, len(names)); row blocks bound the temporaries to a few MB besides the result.
        """
        if values.ndim != 2 or values.shape[1] != self.n_input:
            raise ValueError(f"values must have {self.n_input} columns, got shape {values.shape}")
        if how not in ("sum", "mean"):
            raise ValueError(f"how must be 'sum' or 'mean', got {how!r}")
        if not self.duplicates:
            return values
        first = np.array([g[0] for g in self.groups], dtype=np.int64)
        extra_src = np.array([j for g in self.groups for j in g[1:]], dtype=np.int64)
        extra_dst = np.array([k for k, g in enumerate(self.groups) for _ in g[1:]], dtype=np.int64)
        sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        out = np.empty((values.shape[0], len(self.groups)), dtype=np.float32)
        rows = max(1, _ROW_BLOCK_CELLS // max(1, values.shape[1]))
        for start in range(0, values.shape[0], rows):
            block = values[start : start + rows]
            merged = block[:, first].astype(np.float64)  # sums in float64, stored as float32
            np.add.at(merged.T, extra_dst, block[:, extra_src].T)  # merged.T[j] is column j
            out[start : start + rows] = merged / sizes if how == "mean" else merged
        return out


def harmonise_genes(genes: Sequence[str], resolver: GeneIdResolver = normalise_gene_ids) -> GeneHarmonisation:
    """Group gene names by the key ``resolver`` gives them (version suffixes, case and, with a table-backed
    resolver, synonyms no longer make two names of one gene look different)."""
    return harmonise_keys(genes, resolver(genes))


def harmonise_keys(genes: Sequence[str], keys: Sequence[str]) -> GeneHarmonisation:
    """Group gene names by their match keys, one key per name (see :func:`harmonise_genes`)."""
    if len(keys) != len(genes):
        raise ValueError(f"the resolver returned {len(keys)} keys for {len(genes)} names")
    position: dict[str, int] = {}
    groups: list[list[int]] = []
    for j, key in enumerate(keys):
        k = position.setdefault(key, len(groups))
        if k == len(groups):
            groups.append([])
        groups[k].append(j)
    ordered = list(position)
    duplicates = {ordered[k]: [str(genes[j]) for j in g] for k, g in enumerate(groups) if len(g) > 1}
    names = [ordered[k] if len(g) > 1 else str(genes[g[0]]) for k, g in enumerate(groups)]
    return GeneHarmonisation(names=names, keys=ordered, groups=groups, duplicates=duplicates)


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
        n_matched_directly: Found panel genes whose input name is the panel's once normalised (version
            suffix, case).
        n_matched_by_conversion: Found panel genes matched under another name with the same key (a symbol
            for an Ensembl id, a previous symbol for the current one).
        conversions: Up to the first 50 of those, as ``{"input": name, "panel": name}``.
        missing_reasons: For listed ``missing`` genes the input does name, why none of its names was taken
            (``{"panel": name, "input": [names], "reason": text}``; filled by
            :func:`models.gene_table.align_by_gene_key`).
    """

    n_panel: int
    n_found: int
    n_missing: int
    n_extra: int
    coverage: float
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    n_matched_directly: int = 0
    n_matched_by_conversion: int = 0
    conversions: list[dict[str, str]] = field(default_factory=list)
    missing_reasons: list[dict[str, object]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the report as plain JSON-serialisable python types."""
        return asdict(self)

    @property
    def coverage_percent(self) -> str:
        """``coverage`` as a percentage with one decimal, rounded down (in integers): 9,999 of 20,000 genes read
        "49.9%", never "50.0%", so a coverage refused or warned below a level never reads as the level."""
        return f"{self.n_found * 1000 // self.n_panel / 10:.1f}%" if self.n_panel else "0.0%"


def level_percent(level: float) -> str:
    """A coverage level (a share) as the percentage it is set to: 0.5 -> "50%", 0.505 -> "50.5%"."""
    return f"{round(level * 100, 6):g}%"


def _duplicates(normalised: Sequence[str], original: Sequence[str]) -> dict[str, list[str]]:
    """Group original names by normalised id, keeping only ids seen more than once."""
    groups: dict[str, list[str]] = {}
    for norm, orig in zip(normalised, original, strict=True):
        groups.setdefault(norm, []).append(str(orig))
    return {k: v for k, v in groups.items() if len(v) > 1}


def duplicate_gene_ids(genes: Sequence[str]) -> dict[str, list[str]]:
    """Names that denote one gene once normalised (:func:`normalise_gene_id`: Ensembl version, case), grouped
    by that id; empty when every name is its own gene."""
    return _duplicates(normalise_gene_ids(genes), genes)


class PanelError(ValueError):
    """A model's own gene panel holds names that normalise to the same id (the model is at fault, not the input)."""


def _index_keys(keys: Sequence[str], genes: Sequence[str], what: str) -> dict[str, int]:
    """Map key -> column index; raise ValueError (PanelError for the panel) naming the names that share a key."""
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        dups = _duplicates(keys, genes)
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in list(dups.items())[:10])
        error = PanelError if what == "panel" else ValueError
        raise error(f"{len(dups)} {what} gene id(s) are duplicated after normalisation: {shown}")
    return index


def match_keys(
    genes: Sequence[str],
    panel: Sequence[str],
    resolver: GeneIdResolver = normalise_gene_ids,
    *,
    refuse_synonyms: bool = False,
) -> tuple[list[str], list[str]]:
    """Keys the input's and the panel's names are matched on: the resolver's, except that a key several
    names share on either side (a panel made before synonyms were merged) falls back to the normalised
    names on both sides, so those names still match themselves.

    With ``refuse_synonyms``, two input names of one panel gene (a symbol and its previous symbol, say) are
    a ValueError naming them instead: one of them would be used and the other dropped unseen. Distinct Ensembl
    genes of one NCBI gene (:func:`distinct_ensembl_genes`) are not refused: they match their own ids only.
    """
    gene_keys, panel_keys = list(resolver(genes)), list(resolver(panel))
    if len(gene_keys) != len(genes) or len(panel_keys) != len(panel):
        raise ValueError("the resolver must return one key per name")
    if refuse_synonyms:
        _refuse_synonyms(genes, gene_keys, set(panel_keys))
    shared = {k for keys in (gene_keys, panel_keys) for k, n in Counter(keys).items() if n > 1}
    if shared:
        gene_keys = [normalise_gene_id(g) if k in shared else k for g, k in zip(genes, gene_keys, strict=True)]
        panel_keys = [normalise_gene_id(p) if k in shared else k for p, k in zip(panel, panel_keys, strict=True)]
    return gene_keys, panel_keys


def distinct_ensembl_genes(names: Sequence[str]) -> bool:
    """Whether ``names`` (several names sharing one key) are distinct Ensembl gene ids: alternate haplotypes
    and patches of one NCBI gene (the MHC copies of EHMT2, say) or a ``_PAR_Y`` copy. Each is its own Ensembl
    gene with its own values, not the gene sent twice; they are kept apart, each keyed by its own id."""
    ids = [normalise_gene_id(n) for n in names]
    return len(ids) > 1 and len(set(ids)) == len(ids) and all(gene_id_kind(n) == "ensembl" for n in names)


def _refuse_synonyms(genes: Sequence[str], keys: Sequence[str], panel_keys: set[str]) -> None:
    """Raise naming the first two input names of one panel gene, unless they are :func:`distinct_ensembl_genes`
    (those fall back to their own ids in :func:`match_keys`, as a stored cohort's do)."""
    groups: dict[str, list[str]] = {}
    for name, key in zip(genes, keys, strict=True):
        if key in panel_keys:
            groups.setdefault(key, []).append(str(name))
    for key, names in groups.items():
        if len(names) > 1 and not distinct_ensembl_genes(names):
            raise ValueError(f"{names[0]!r} and {names[1]!r} name the same gene (key {key}); send it once")


def _same_names(genes: Sequence[str], panel: Sequence[str]) -> bool:
    """Whether ``genes`` is ``panel``, name for name in the same order, without repeated names."""
    return len(genes) == len(panel) and list(genes) == list(panel) and len(set(panel)) == len(panel)


def _identity_report(n_panel: int) -> AlignmentReport:
    return AlignmentReport(
        n_panel=n_panel, n_found=n_panel, n_missing=0, n_extra=0, coverage=1.0 if n_panel else 0.0,
        missing=[], extra=[], n_matched_directly=n_panel, n_matched_by_conversion=0, conversions=[],
    )


def align_to_panel(
    values: np.ndarray,
    genes: Sequence[str],
    panel: Sequence[str],
    *,
    resolver: GeneIdResolver = normalise_gene_ids,
    refuse_synonyms: bool = False,
) -> tuple[np.ndarray, AlignmentReport]:
    """Reorder the columns of an expression matrix to a gene panel.

    Identifiers on both sides go through the same ``resolver`` and are matched on its keys (see
    :func:`match_keys`); the default, :func:`normalise_gene_ids`, matches after :func:`normalise_gene_id`,
    a gene-table resolver also matches symbols to Ensembl ids and previous symbols to current ones. Panel
    genes absent from the input become NaN columns (imputed later, by
    :meth:`models.preprocessing.Preprocessor.transform` with the training mean or by ``models.imputation``);
    input genes not in the panel are dropped.

    Args:
        values: Expression matrix, shape ``(n_samples, len(genes))``.
        genes: Column identifiers of ``values``.
        panel: Target gene panel (ordered).
        resolver: Maps names to match keys.
        refuse_synonyms: Refuse two input names of one panel gene (see :func:`match_keys`) instead of using
            one of them.

    Returns:
        ``(aligned, report)`` with ``aligned`` float32 of shape ``(n_samples, len(panel))``.

    Raises:
        ValueError: If shapes disagree or two input genes have the same key.
        PanelError: If two panel genes have the same key.
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(genes):
        raise ValueError(f"values must have shape (n_samples, {len(genes)}) to match genes, got {values.shape}")
    if _same_names(genes, panel):  # the usual case, a cohort like the training one: nothing to resolve
        return np.array(values, dtype=np.float32), _identity_report(len(panel))
    gene_keys, panel_keys = match_keys(genes, panel, resolver, refuse_synonyms=refuse_synonyms)
    _index_keys(panel_keys, panel, "panel")  # the model's own fault first, whatever the input
    source = _index_keys(gene_keys, genes, "input")
    src_idx = np.array([source.get(k, -1) for k in panel_keys], dtype=np.int64)
    found = src_idx >= 0
    aligned = np.full((values.shape[0], len(panel)), np.nan, dtype=np.float32)
    aligned[:, found] = values[:, src_idx[found]].astype(np.float32, copy=False)
    panel_set = set(panel_keys)
    extra = [str(g) for g, k in zip(genes, gene_keys, strict=True) if k not in panel_set]
    missing = [str(p) for p, ok in zip(panel, found, strict=True) if not ok]
    converted = [
        {"input": str(genes[j]), "panel": str(p)}
        for p, j in zip(panel, src_idx.tolist(), strict=True)
        if j >= 0 and normalise_gene_id(genes[j]) != normalise_gene_id(p)
    ]
    n_found = int(found.sum())
    report = AlignmentReport(
        n_panel=len(panel),
        n_found=n_found,
        n_missing=len(panel) - n_found,
        n_extra=len(extra),
        coverage=float(n_found / len(panel)) if len(panel) else 0.0,
        missing=missing[:_REPORT_LIMIT],
        extra=extra[:_REPORT_LIMIT],
        n_matched_directly=n_found - len(converted),
        n_matched_by_conversion=len(converted),
        conversions=converted[:_REPORT_LIMIT],
    )
    return aligned, report
