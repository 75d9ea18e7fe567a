"""Human gene table and a resolver from any gene identifier to one canonical key.

The table ships inside the package (``models/data/human_genes.tsv.gz``, built by
``scripts/build_gene_table.py`` from org.Hs.eg.db; provenance in ``models/data/GENES_PROVENANCE.md``) and is
loaded once, lazily, by :func:`default_table`. Its :attr:`GeneTable.version` names the snapshot and belongs
with every cohort, encoder and prediction whose genes it matched.

Canonical key: the NCBI gene id as a decimal string (``"7157"``) where one exists, else the Ensembl gene id
without version (``"ENSG00000..."``). Names that resolve to no single gene keep a key of their own (the
normalised name; probe-set ids verbatim) so they still match the same name elsewhere.

Rules (:data:`RULES`; their patterns do not overlap, except that a symbol or alias is looked up first):

- ``symbol``: a current official symbol, case-insensitive. A symbol carried by several genes is ambiguous.
- ``alias``: a previous symbol or synonym that points to one gene; one that points to several is ambiguous.
  A current symbol always wins over another gene's alias.
- ``ensembl`` / ``ensembl_par_y``: ``ENSG...`` with or without version suffix; GENCODE's ``_PAR_Y`` copies of
  pseudo-autosomal genes get the key of the gene itself (they are the same NCBI gene). ``ensembl_only``: an
  Ensembl gene without NCBI gene here, keyed by its Ensembl id.
- ``ncbi_id``: a decimal NCBI gene id of the table.
- ``tcga``: TCGA's ``SYMBOL|ENTREZ`` (``?|100133144`` when the symbol is missing): the id decides, the symbol
  is used only when the id is not in the table.
- ``loc_id``: NCBI's interim ``LOC<gene id>`` symbol of a gene since renamed (``LOC643733`` -> CASP4LP).
- ``excel_date``: spreadsheet-mangled symbols (``1-Mar``, ``2-Sep``, ``1-Dec``, ``Mar-1``, ``01-Sep``,
  ``2006/09/02``: Zeeberg et al. 2004; Ziemann et al. 2016), mapped to the genes HGNC renamed for that reason
  (MARCHF*, SEPTIN*, DELEC1); applied only when the rest of the file is symbols.
- ``probe``: microarray probe-set ids (``1007_s_at``, ``ILMN_1343291``) keep their name and match only it.
- ``ambiguous`` (with candidates) and ``unresolved``: no single gene; never guessed.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from models.genes import (
    GENE_ID_PATTERNS,
    GENE_ID_SHARE,
    AlignmentReport,
    align_to_panel,
    distinct_ensembl_genes,
    gene_id_kind,
    normalise_gene_id,
)

TABLE_FILE = "human_genes.tsv.gz"
RULES = (
    "symbol",
    "alias",
    "ensembl",
    "ensembl_par_y",
    "ensembl_only",
    "ncbi_id",
    "tcga",
    "loc_id",
    "excel_date",
    "probe",
    "ambiguous",
    "unresolved",
)
UNMATCHED_RULES = frozenset({"ambiguous", "unresolved"})

_ENSEMBL_GENE = re.compile(r"^(ENSG\d{6,})(?:\.\d+)?(_PAR_Y)?$")
_TCGA = re.compile(r"^([^|]*)\|(\d{1,9})$")
_DIGITS = re.compile(r"^\d{1,9}$")
_LOC = re.compile(r"^LOC(\d{1,9})$")
_PROBE = GENE_ID_PATTERNS["probe"]
_MONTH_NUMBER = {"3": "MAR", "03": "MAR", "9": "SEP", "09": "SEP", "12": "DEC"}
_DATE_DAY_MONTH = re.compile(r"^0?(\d{1,2})-(MAR|SEP|DEC)(?:-\d{2}|-\d{4})?$")
_DATE_MONTH_DAY = re.compile(r"^(MAR|SEP|DEC)-0?(\d{1,2})$")
_DATE_ISO = re.compile(r"^\d{4}[/-](0?3|0?9|12)[/-]0?(\d{1,2})$")
# Old symbols a mangled date stood for, and what HGNC renamed them to (2020) so that spreadsheets leave them alone.
_EXCEL_OLD = {"MAR": ("MARCH",), "SEP": ("SEPT", "SEP"), "DEC": ("DEC",)}
_EXCEL_NEW = {"MAR": "MARCHF", "SEP": "SEPTIN", "DEC": "DELEC"}


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one gene identifier resolved.

    Attributes:
        name: The identifier as given.
        key: Canonical key: NCBI gene id (decimal string) or Ensembl gene id; for unmatched names the
            normalised name (probe-set ids verbatim), so the same name still matches itself.
        symbol: Current official symbol of the gene, or None when the key names no table gene.
        rule: Which rule resolved it, one of :data:`RULES`.
        candidates: For ``ambiguous``: the keys of the genes the name could denote, ascending.
    """

    name: str
    key: str
    symbol: str | None
    rule: str
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        """True when the name denotes several genes."""
        return self.rule == "ambiguous"

    @property
    def resolved(self) -> bool:
        """True when the name denotes one gene (or a probe set / Ensembl-only gene by its own id)."""
        return self.rule not in UNMATCHED_RULES


def _split(joined: str) -> list[str]:
    """Values of a "|"-joined table field (none for an empty field)."""
    return joined.split("|") if joined else []


def _sorted_keys(ids: Iterable[str]) -> tuple[str, ...]:
    """Keys in ascending numeric order (NCBI ids), then lexical (Ensembl ids)."""
    return tuple(sorted(set(ids), key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)))


def _frozen(keys: list[str]) -> tuple[str, ...]:
    """Immutable, sorted and unique keys (most names have one, which needs no sorting)."""
    return (keys[0],) if len(keys) == 1 else _sorted_keys(keys)


class GeneTable:
    """Lookup tables from names to NCBI gene keys.

    Args:
        rows: ``(entrez_id, symbol, aliases, ensembl_ids)`` per NCBI gene; ids as decimal strings.
        version: Snapshot the rows come from, e.g. ``"org.Hs.eg.db 3.16.0 (NCBI 2022-09-12, Ensembl 2022-06-28)"``.
    """

    def __init__(self, rows: Iterable[tuple[str, str, Sequence[str], Sequence[str]]], version: str) -> None:
        self.version = version
        self.symbols: dict[str, str] = {}  # key -> current symbol
        by_symbol: dict[str, list[str]] = defaultdict(list)
        by_alias: dict[str, list[str]] = defaultdict(list)
        by_ensembl: dict[str, list[str]] = defaultdict(list)
        for key, symbol, aliases, ensembl_ids in rows:
            self.symbols[key] = symbol
            by_symbol[symbol.upper()].append(key)
            for alias in aliases:
                by_alias[alias.upper()].append(key)
            for ens in ensembl_ids:
                by_ensembl[ens.upper()].append(key)
        # One dict for symbol-shaped names: a current symbol hides every alias spelled like it.
        self._names: dict[str, tuple[str, tuple[str, ...]]] = {
            name: ("alias", _frozen(keys)) for name, keys in by_alias.items()
        }
        self._names.update({name: ("symbol", _frozen(keys)) for name, keys in by_symbol.items()})
        self._ensembl = {ens: _frozen(keys) for ens, keys in by_ensembl.items()}
        # Aliases spelled like another gene's current symbol: hidden by it, but kept to explain a missing gene.
        self._hidden_aliases = {name: _frozen(keys) for name, keys in by_alias.items() if name in by_symbol}

    @classmethod
    def load(cls, path: Path | None = None) -> GeneTable:
        """Read the shipped table (or another file in its layout, see ``GENES_PROVENANCE.md``).

        Args:
            path: A ``human_genes.tsv.gz``; None reads the copy inside the package.

        Returns:
            The table.
        """
        if path is None:
            with resources.as_file(resources.files("models") / "data" / TABLE_FILE) as shipped:
                return cls.load(shipped)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        return cls.parse(text.splitlines())

    @classmethod
    def parse(cls, lines: Sequence[str]) -> GeneTable:
        """Build a table from the lines of a ``human_genes.tsv`` file (``#`` header lines, column header, rows)."""
        version = "unknown"
        rows = []
        for line in lines:
            if line.startswith("#"):
                field, _, value = line[1:].strip().partition("\t")
                version = value.strip() if field.strip() == "version" else version
            elif line and not line.startswith("entrez_id\t"):
                key, symbol, aliases, ensembl_ids = line.split("\t")
                rows.append((key, symbol, _split(aliases), _split(ensembl_ids)))
        return cls(rows, version)

    def __len__(self) -> int:
        return len(self.symbols)

    def symbol(self, key: str) -> str | None:
        """Current symbol of the gene with canonical key ``key`` (None when it is not a table gene)."""
        return self.symbols.get(key)

    @functools.cached_property
    def _names_by_key(self) -> dict[str, list[str]]:
        """Every upper-case name (symbol, alias, Ensembl id) that denotes each key, alone or among others;
        built on first use (it only explains missing genes)."""
        index: dict[str, list[str]] = defaultdict(list)
        named = ((name, keys) for name, (_, keys) in self._names.items())
        for name, keys in itertools.chain(named, self._hidden_aliases.items(), self._ensembl.items()):
            for key in keys:
                index[key].append(name)
        return dict(index)

    def names_of(self, key: str) -> list[str]:
        """The upper-case names (symbol, aliases, Ensembl ids) that may denote the gene with key ``key``."""
        return self._names_by_key.get(key, [])

    def _one(self, name: str, key: str, rule: str) -> Resolution:
        return Resolution(name, key, self.symbols.get(key), rule)

    def _by_keys(self, name: str, keys: tuple[str, ...], rule: str, fallback: str) -> Resolution:
        """One key -> resolved by ``rule``; several -> ambiguous, keyed by ``fallback``."""
        if len(keys) == 1:
            return self._one(name, keys[0], rule)
        return Resolution(name, fallback, None, "ambiguous", keys)

    def _by_name(self, name: str, upper: str) -> Resolution | None:
        """Symbol or alias rule, or None when ``upper`` is neither."""
        hit = self._names.get(upper)
        return None if hit is None else self._by_keys(name, hit[1], hit[0], upper)

    def _ensembl_gene(self, name: str, match: re.Match[str]) -> Resolution:
        ens = match.group(1)
        keys = self._ensembl.get(ens)
        if keys is None:
            return Resolution(name, ens, None, "ensembl_only")
        return self._by_keys(name, keys, "ensembl_par_y" if match.group(2) else "ensembl", ens)

    def _tcga(self, name: str, match: re.Match[str]) -> Resolution:
        symbol, entrez = match.group(1).strip(), str(int(match.group(2)))
        if entrez in self.symbols:
            return self._one(name, entrez, "tcga")
        by_symbol = self._by_name(name, symbol.upper()) if symbol and symbol != "?" else None
        if by_symbol is not None and by_symbol.resolved:
            return Resolution(name, by_symbol.key, by_symbol.symbol, "tcga")
        return Resolution(name, entrez, None, "unresolved")

    def resolve_one(self, name: str, *, excel_dates: bool = False) -> Resolution:
        """Resolve one identifier without file context (see :func:`resolve_genes` for the rules).

        Args:
            name: A gene identifier as found in a file.
            excel_dates: Read spreadsheet dates (``1-Mar``) as the symbols they destroyed.

        Returns:
            Its :class:`Resolution`.
        """
        name = str(name)
        text = name.strip()
        upper = text.upper()
        by_name = self._by_name(name, upper)
        if by_name is not None:
            return by_name
        if (match := _ENSEMBL_GENE.match(upper)) is not None:
            return self._ensembl_gene(name, match)
        if _DIGITS.match(text):
            key = str(int(text))
            return self._one(name, key, "ncbi_id") if key in self.symbols else Resolution(name, key, None, "unresolved")
        if (match := _TCGA.match(text)) is not None:
            return self._tcga(name, match)
        if _PROBE.match(text):
            return Resolution(name, text, None, "probe")
        if (match := _LOC.match(upper)) is not None and (key := str(int(match.group(1)))) in self.symbols:
            return self._one(name, key, "loc_id")
        if excel_dates and (excel := self._excel_date(name, upper)) is not None:
            return excel
        return Resolution(name, normalise_gene_id(text), None, "unresolved")

    def _excel_date(self, name: str, upper: str) -> Resolution | None:
        """The gene a spreadsheet date stood for, or None when ``upper`` is no such date."""
        parsed = parse_excel_date(upper)
        if parsed is None:
            return None
        month, day = parsed
        renamed = self._names.get(f"{_EXCEL_NEW[month]}{day}")
        if renamed is not None and renamed[0] == "symbol" and len(renamed[1]) == 1:
            return self._one(name, renamed[1][0], "excel_date")
        for old in _EXCEL_OLD[month]:
            hit = self._by_name(name, f"{old}{day}")
            if hit is not None and hit.resolved:
                return self._one(name, hit.key, "excel_date")
        return None

    def resolve(self, names: Sequence[str], *, excel_dates: bool | None = None) -> list[Resolution]:
        """Resolve a file's gene identifiers (see :func:`resolve_genes`)."""
        if excel_dates is None:
            excel_dates = looks_like_symbol_file(names)
        return [self.resolve_one(n, excel_dates=excel_dates) for n in names]

    def keys(self, names: Sequence[str], /) -> list[str]:
        """Canonical keys of ``names``: a :class:`models.genes.GeneIdResolver`."""
        return [r.key for r in self.resolve(names)]


def parse_excel_date(name: str) -> tuple[str, int] | None:
    """``(month, day)`` of a spreadsheet date that may be a mangled gene symbol, else None.

    Args:
        name: An identifier, e.g. ``"1-Mar"``, ``"Mar-1"``, ``"02-Sep"``, ``"1-Dec-2004"``, ``"2006/09/02"``.

    Returns:
        ``("MAR" | "SEP" | "DEC", day)`` or None.
    """
    upper = name.strip().upper()
    if (m := _DATE_DAY_MONTH.match(upper)) is not None:
        month, day = m.group(2), int(m.group(1))
    elif (m := _DATE_MONTH_DAY.match(upper)) is not None:
        month, day = m.group(1), int(m.group(2))
    elif (m := _DATE_ISO.match(upper)) is not None:
        month, day = _MONTH_NUMBER[m.group(1)], int(m.group(2))
    else:
        return None
    return (month, day) if 1 <= day <= 31 else None


def looks_like_symbol_file(names: Sequence[str]) -> bool:
    """Whether spreadsheet dates among ``names`` should be read as mangled symbols.

    True when some name is such a date and at least ``GENE_ID_SHARE`` (90 %) of the other names are
    symbols by :func:`models.genes.gene_id_kind` (a date among Ensembl ids, probe sets or NCBI ids stays a date).
    """
    dates = sum(("-" in str(n) or "/" in str(n)) and parse_excel_date(str(n)) is not None for n in names)
    others = len(names) - dates
    if dates == 0 or others == 0:
        return False
    symbols = sum(gene_id_kind(n) == "symbol" for n in names)
    return symbols / others >= GENE_ID_SHARE


_LOCK = threading.Lock()
_DEFAULT: GeneTable | None = None


def default_table() -> GeneTable:
    """The shipped table, loaded on first use and cached for the process."""
    global _DEFAULT
    if _DEFAULT is None:
        with _LOCK:
            if _DEFAULT is None:
                _DEFAULT = GeneTable.load()
    return _DEFAULT


def gene_table_version() -> str:
    """Version of the shipped table, e.g. ``"org.Hs.eg.db 3.16.0 (NCBI 2022-09-12, Ensembl 2022-06-28)"``."""
    return default_table().version


def resolve_genes(
    names: Sequence[str], *, table: GeneTable | None = None, excel_dates: bool | None = None
) -> list[Resolution]:
    """Resolve a file's gene identifiers to canonical keys, one :class:`Resolution` per name.

    Args:
        names: Column names of one file (the whole list gives the context for spreadsheet dates).
        table: The gene table; None uses :func:`default_table`.
        excel_dates: Read ``1-Mar``-style dates as mangled symbols; None decides from the file
            (:func:`looks_like_symbol_file`).

    Returns:
        Resolutions in input order.
    """
    return (table or default_table()).resolve(names, excel_dates=excel_dates)


def resolve_gene_keys(names: Sequence[str], /) -> list[str]:
    """Canonical keys with the shipped table: a drop-in :class:`models.genes.GeneIdResolver`."""
    return default_table().keys(names)


def align_by_gene_key(
    values: np.ndarray, genes: Sequence[str], panel: Sequence[str], *, refuse_synonyms: bool = False
) -> tuple[np.ndarray, AlignmentReport]:
    """:func:`models.genes.align_to_panel` matching names by the shipped table's keys, so that symbols,
    previous symbols, Ensembl and NCBI ids of one gene meet: the alignment every fit, pretraining,
    evaluation and prediction uses. The report says why listed missing genes the input does name were not
    taken (:func:`missing_reasons`)."""
    aligned, report = align_to_panel(values, genes, panel, resolver=resolve_gene_keys,
                                     refuse_synonyms=refuse_synonyms)
    if report.missing:
        report = replace(report, missing_reasons=missing_reasons(genes, report.missing))
    return aligned, report


def missing_reasons(
    genes: Sequence[str], missing: Sequence[str], *, table: GeneTable | None = None
) -> list[dict[str, object]]:
    """Why panel genes in ``missing`` took no input column although ``genes`` names them, one entry per such
    gene: ``{"panel": name, "input": [names], "reason": text}``. An input name that denotes several genes
    is not guessed; an alias spelled like another gene's symbol is that gene; several Ensembl genes of one
    gene (alternate haplotypes, patches) are kept apart. Panel genes the input does not name are left out."""
    table = table or default_table()
    wanted = {key: name for name, key in zip(missing, table.keys(missing), strict=True)}
    names: dict[str, list[str]] = defaultdict(list)  # upper-case name -> the missing genes' keys it may denote
    for key in wanted:
        for name in table.names_of(key):
            names[name].append(key)
    given: dict[str, list[str]] = defaultdict(list)  # panel key -> the input's names of it
    for gene in genes:
        for key in names.get(normalise_gene_id(gene), ()):
            given[key].append(str(gene))
    return [reason for key, named in given.items() if (reason := _why_missing(table, wanted[key], key, named))]


def _why_missing(table: GeneTable, panel_name: str, key: str, named: list[str]) -> dict[str, object] | None:
    """Why the input's ``named`` names of the panel gene ``key`` gave it no column (None if no reason holds)."""
    if distinct_ensembl_genes(named):
        why = (f"distinct Ensembl genes of {panel_name} (alternate haplotypes or patches): each is kept apart, "
               "none is taken for it")
        return {"panel": panel_name, "input": named, "reason": why}
    for resolution in table.resolve(named):
        if resolution.ambiguous:
            genes = ", ".join(table.symbol(k) or k for k in resolution.candidates)
            why = f"{resolution.name!r} denotes several genes ({genes}): an ambiguous name is not guessed"
        elif resolution.resolved and resolution.key != key:
            why = (f"{resolution.name!r} is the current symbol of {resolution.symbol}, and only an alias of "
                   f"{panel_name}: a current symbol always names its own gene")
        else:
            continue
        return {"panel": panel_name, "input": [resolution.name], "reason": why}
    return None


def summarise_resolutions(resolutions: Iterable[Resolution]) -> dict[str, int]:
    """Number of names per rule, in :data:`RULES` order (rules that never fired are left out)."""
    counts = Counter(r.rule for r in resolutions)
    return {rule: counts[rule] for rule in RULES if counts[rule]}
