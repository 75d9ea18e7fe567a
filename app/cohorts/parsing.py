"""Parse uploaded expression matrices and label tables; store matrices in one canonical form.

Expression formats, chosen by the file name's extension: CSV, TSV (``.txt`` is tab-separated) and their
gzip variants, Parquet, GCT 1.2/1.3 (``.gct``, ``.gct.gz``; a ``.txt`` starting with ``#1.2`` or ``#1.3``
is read as GCT too) and AnnData ``.h5ad`` (see :mod:`app.cohorts.h5ad`). Delimited text and Parquet hold
samples as rows (the default) or genes as rows (featureCounts, salmon/tximport and GEO shapes), detected
from the id column's name and values or given by the caller; GCT holds genes as rows and ``.h5ad``
samples (obs) as rows.

Every user error raises :class:`app.errors.InvalidInput` with a message naming the file and, where
possible, the sample, gene, column and value at fault. Gene names may repeat here: duplicates are a
question of gene-id harmonisation (:mod:`models.genes`), decided after reading. The canonical store is an
Arrow IPC (Feather v2) file with a ``sample_id`` string column followed by one float32 column per gene.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import itertools
import math
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from app.cohorts.names import (
    CONTROL,
    MAX_LABEL_COLUMNS,
    NO_CONTROL,
    brief,
    check_names,
    clip,
    listing,
)
from app.db.orm import NAME_LENGTH
from app.errors import InvalidInput
from models.gene_table import resolve_genes
from models.genes import summarise_gene_ids

EXPRESSION_EXTENSIONS = (
    ".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz", ".parquet", ".gct", ".gct.gz", ".h5ad"
)
LABEL_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
SAMPLE_ID_COLUMN = "sample_id"

SAMPLES_AS_ROWS = "samples_as_rows"
GENES_AS_ROWS = "genes_as_rows"
ORIENTATIONS = ("auto", SAMPLES_AS_ROWS, GENES_AS_ROWS)

# Names of an id column (compared lower-case, a leading '#' dropped) that say what the rows are.
GENE_COLUMN_NAMES = frozenset(
    ("gene", "genes", "gene_id", "gene_ids", "geneid", "gene_name", "gene_symbol", "genesymbol", "symbol")
    + ("ensembl", "ensembl_id", "ensembl_gene_id", "gene_stable_id", "hgnc_symbol", "entrez", "entrez_id")
    + ("entrezgene", "entrez_gene_id", "probe", "probe_id", "probeset", "probeset_id", "probe_set_id", "id_ref")
    + ("feature", "feature_id", "features", "target_id", "transcript_id", "tracking_id", "gene_or_transcript")
)
SAMPLE_COLUMN_NAMES = frozenset(
    ("sample", "samples", "sample_id", "sampleid", "sample_name", "sample_ids", "barcode", "barcodes", "cell")
    + ("cell_id", "obs", "obs_names", "patient", "patient_id", "case_id", "submitter_id", "run", "specimen")
)
# Gene annotation columns right after the gene id in genes-as-rows files (featureCounts' Chr..Length,
# GCT-like Description, a symbol beside an Ensembl id): not samples, so skipped and reported.
ANNOTATION_COLUMN_NAMES = frozenset(
    ("chr", "chrom", "chromosome", "start", "end", "strand", "length", "effectivelength", "effective_length")
    + ("description", "name", "gene_name", "gene_symbol", "symbol", "gene_type", "gene_biotype", "biotype")
)
_STRONG_GENE_IDS = ("ensembl", "probe")  # id kinds no sample naming scheme imitates

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
# pandas' default missing-value markers: label cells holding one of these become NaN, and an expression
# cell holding one is reported as a missing value.
_MISSING_TOKENS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN")
    + ("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)
# The float syntax Arrow's CSV converter accepts, used to locate bad cells after a failed parse.
_NUMBER_PATTERN = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)$"
_BLOCK_SIZE = 16 << 20  # bytes of text per parsed batch, at least: a row must fit in one
_MAX_BLOCK_SIZE = 64 << 20  # more rows per batch cost memory; fewer cost a per-column overhead per batch
_SLICE_COLUMNS = 500  # Parquet columns read at once (see _ParquetSlices)
_SCAN_CELLS = 4_000_000  # cells per batch when looking for the first bad cell
_SNIFF_ROWS = 200  # data rows whose first field is read to detect the orientation
_MIN_SYMBOL_ROWS = 20  # gene symbols as row ids turn a file only from this many rows: never a short sample sheet
_SNIFF_CHARS = 4 << 20  # ... or fewer, when rows are this long
# The longest line read while sniffing: a header of as many names as the limits allow (plus the id and
# annotation columns), each of at most NAME_LENGTH characters, all quoted with every character a doubled
# quote; a data row's fields are shorter. 100,000 names: 40 M characters.
_EXTRA_COLUMNS = 64  # id and gene-annotation columns beside the samples or genes
_FIELD_CHARS = 2 * NAME_LENGTH + 3
_UNLIMITED_COLUMNS = 100_000  # the columns a line is sized for when no limit is given (the settings' default)
# A label table is read in Arrow batches and refused once past these, whatever its compressed size: rows
# beyond the matrix's samples cannot all be labelled samples, and its text is turned into Python strings.
_MAX_LABEL_BYTES = 256 << 20  # parsed text
_MAX_LABEL_LINE = 4 << 20  # characters of one line (a header of some thousand phenotype columns is < 1 M)
_PARQUET_VALUE_BYTES = 64  # per row of a value column chunk: a number, even as text, takes fewer
_PARQUET_CHUNK_SLACK = 1 << 20  # per column chunk besides its rows: page headers, statistics
_MAX_GCT_COLUMN_META = 1_000  # GCT 1.3 column-metadata lines: a few in practice, each as long as the header
_WRITE_CELLS = 64_000_000  # cells per record batch of the store: bounds the transposed copy (256 MB)
# Control characters (tabs in a CSV field, NUL, terminal escapes) in an id or name: NUL breaks PostgreSQL
# text columns, escapes mislead whoever reads a listing in a terminal.
_STORE_METADATA = {b"exprssl.format": b"expression-matrix/1"}
_CHECKSUM_MAGIC = b"exprssl-expression-matrix/1\x00"


@dataclass(frozen=True)
class ExpressionMatrix:
    """Samples x genes expression values with their sample ids and gene names, in order."""

    values: np.ndarray  # float32, shape (n_samples, n_genes), C-contiguous
    sample_ids: list[str]
    genes: list[str]

    def __post_init__(self) -> None:
        if self.values.dtype != np.float32 or self.values.ndim != 2 or not self.values.flags.c_contiguous:
            raise ValueError("values must be a C-contiguous 2-D float32 array")
        if self.values.shape != (len(self.sample_ids), len(self.genes)):
            raise ValueError(
                f"values have shape {self.values.shape} but there are {len(self.sample_ids)} sample ids "
                f"and {len(self.genes)} genes"
            )


@dataclass(frozen=True)
class ParsedExpression:
    """A matrix as read from an upload, with how it was read.

    ``annotations`` holds per-sample text columns found in the file itself (GCT 1.3 column metadata, the
    obs table of an ``.h5ad``), indexed by sample id like :func:`read_labels` output; None if there are none.
    """

    matrix: ExpressionMatrix
    file_format: str  # csv | tsv | parquet | gct | h5ad
    orientation: str  # samples_as_rows | genes_as_rows
    orientation_detected: bool
    skipped_columns: list[str] = field(default_factory=list)
    annotations: pd.DataFrame | None = None


@dataclass(frozen=True)
class _Delimited:
    delimiter: str
    gzipped: bool


@dataclass(frozen=True)
class _Shape:
    """Where the values of a delimited file are, and what its rows and columns are."""

    orientation: str
    n_fields: int  # fields per line
    values_at: list[int]  # positions of the value columns
    names: list[str]  # their header names: genes or samples
    skip_rows: int  # lines before the first data row
    skipped: list[str] = field(default_factory=list)
    block_size: int = 16 << 20  # bytes of text per parsed batch; a row must fit in one

    @property
    def row_kind(self) -> str:
        return "sample" if self.orientation == SAMPLES_AS_ROWS else "gene"

    @property
    def column_kind(self) -> str:
        return "gene" if self.orientation == SAMPLES_AS_ROWS else "sample"


@dataclass(frozen=True)
class SizeLimits:
    """The most samples, genes and values (samples x genes) an upload may hold, checked as soon as a reader
    knows a count, before the matrix is allocated (a small compressed file can declare an enormous one)."""

    samples: int | None = None
    genes: int | None = None
    cells: int | None = None

    def check(self, filename: str, *, samples: int | None = None, genes: int | None = None,
              partial: bool = False) -> None:
        """Refuse counts over the limits (422 naming the setting); ``partial``: the count is still growing."""
        for what, count, most, setting in (
            ("samples", samples, self.samples, "EXPRSSL_MAX_UPLOAD_SAMPLES"),
            ("genes", genes, self.genes, "EXPRSSL_MAX_UPLOAD_GENES"),
        ):
            if count is not None and most is not None and count > most:
                counted = f"more than {most:,}" if partial else f"{count:,}"
                raise InvalidInput(f"{filename}: {counted} {what}; this server accepts at most {most:,} ({setting})")
        if samples is not None and genes is not None and self.cells is not None and samples * genes > self.cells:
            counted = "more than " if partial else ""
            raise InvalidInput(
                f"{filename}: {counted}{samples:,} samples x {genes:,} genes = {samples * genes:,} values; this "
                f"server accepts at most {self.cells:,} in one cohort (EXPRSSL_MAX_UPLOAD_CELLS)"
            )

    def check_shape(self, filename: str, orientation: str, *, rows: int | None = None, columns: int | None = None,
                    partial: bool = False) -> None:
        """:meth:`check` for a file's rows and columns in ``orientation``."""
        if orientation == SAMPLES_AS_ROWS:
            self.check(filename, samples=rows, genes=columns, partial=partial)
        else:
            self.check(filename, samples=columns, genes=rows, partial=partial)


NO_LIMITS = SizeLimits()


# ---------------------------------------------------------------------------------------------------------
# Public API


def read_expression(path: Path, filename: str, *, orientation: str = "auto") -> ExpressionMatrix:
    """Read an expression matrix whose format is given by ``filename``'s extension; see :func:`parse_expression`."""
    return parse_expression(path, filename, orientation=orientation).matrix


def parse_expression(
    path: Path, filename: str, *, orientation: str = "auto", limits: SizeLimits = NO_LIMITS
) -> ParsedExpression:
    """Read an expression matrix as samples x genes, whatever its format and orientation.

    ``orientation`` is ``auto`` (samples as rows unless the id column's name or values say genes),
    ``samples_as_rows`` or ``genes_as_rows``. A file holding more than ``limits`` is refused as soon as
    its reader can count, before the matrix is built.
    """
    if orientation not in ORIENTATIONS:
        raise InvalidInput(f"orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)}")
    name = filename.lower()
    if name.endswith(".parquet"):
        return _read_parquet_matrix(path, filename, orientation, limits)
    if name.endswith(".h5ad"):
        from app.cohorts import h5ad

        return h5ad.read_h5ad(path, filename, orientation=orientation, limits=limits)
    if name.endswith(".h5ad.gz"):
        raise InvalidInput(f"{filename}: a gzip-compressed .h5ad cannot be read; upload the .h5ad itself")
    if name.endswith((".gct", ".gct.gz")):
        return _read_gct(path, filename, _Delimited("\t", name.endswith(".gz")), orientation, limits)
    layout = _delimited_layout(filename)
    if layout is None:
        raise InvalidInput(
            f"{filename}: unsupported file type; accepted extensions: {', '.join(EXPRESSION_EXTENSIONS)}"
        )
    if layout.delimiter == "\t" and _starts_like_gct(path, layout):
        return _read_gct(path, filename, layout, orientation, limits)
    return _read_delimited_matrix(path, filename, layout, orientation, limits)


def read_labels(path: Path, filename: str, *, max_rows: int | None = None) -> pd.DataFrame:
    """Read a label table: sample ids first, then phenotype columns kept as strings (NaN if missing).

    More than ``max_rows`` data rows (the matrix's samples: each labelled sample must be one of them) or
    more than ``_MAX_LABEL_BYTES`` of text are refused as soon as they are read.
    """
    layout = _delimited_layout(filename)
    if layout is None:
        raise InvalidInput(
            f"{filename}: unsupported file type for labels; accepted extensions: {', '.join(LABEL_EXTENSIONS)}"
        )
    header = _sniff(path, filename, layout, rows=0, comments=False, line_cap=_MAX_LABEL_LINE).header
    if len(header) < 2:
        raise InvalidInput(
            f"{filename}: no phenotype column; the header has only the sample-id column"
            + _delimiter_hint(header[0], layout)
        )
    columns = header[1:]
    if len(columns) > MAX_LABEL_COLUMNS:
        raise InvalidInput(f"{filename}: {len(columns):,} phenotype columns; at most {MAX_LABEL_COLUMNS:,} are read")
    check_names(columns, filename, kind="column")
    table = _read_label_table(path, filename, layout, len(header), max_rows)
    if table.num_rows == 0:
        raise InvalidInput(f"{filename}: no data rows below the header")
    sample_ids = _row_ids(table.column(0), filename, kind="sample")
    data = {name: _label_values(table.column(i + 1)) for i, name in enumerate(columns)}
    index = pd.Index(sample_ids, dtype=object, name=SAMPLE_ID_COLUMN)
    return pd.DataFrame(data, index=index, dtype=object)


def check_labels(labels: pd.DataFrame, sample_ids: Sequence[str], *, group_column: str | None) -> None:
    """Check that every labelled sample is in the matrix and that ``group_column`` is a label column."""
    if group_column is not None and group_column not in labels.columns:
        available = ", ".join(repr(str(c)) for c in labels.columns)
        raise InvalidInput(f"group column {group_column!r} is not a column of the labels; columns: {available}")
    known = set(sample_ids)
    unknown = [repr(str(s)) for s in labels.index if s not in known]  # quoted: "'S0 '" is not "'S0'"
    if unknown:
        raise InvalidInput(
            f"{len(unknown)} labelled sample id(s) are not in the expression matrix: {listing(unknown)}"
        )


def detect_orientation(id_name: str, column_names: Sequence[str], first_ids: Sequence[str]) -> str:
    """Guess whether rows are samples or genes from the id column's name, the other names and the first ids.

    Genes as rows when the id column is named like a gene column (``gene_id``, ``Geneid``, ``symbol``,
    ``probe_id`` ...) or its values are Ensembl or probe ids, in both cases only if the other column
    names are not themselves Ensembl or probe ids; also when at least half of 20 or more first ids are
    current gene symbols (by the gene table) and almost no column name is a gene id of any kind, as in a
    table written by pandas or R with an unnamed id column. Samples as rows otherwise.
    """
    label = id_name.strip().lstrip("#").strip().lower()
    if label in SAMPLE_COLUMN_NAMES:
        return SAMPLES_AS_ROWS
    columns_are_genes = summarise_gene_ids(list(column_names[:2000])).id_type in _STRONG_GENE_IDS
    if columns_are_genes:
        return SAMPLES_AS_ROWS
    if label in GENE_COLUMN_NAMES or summarise_gene_ids(list(first_ids)).id_type in _STRONG_GENE_IDS:
        return GENES_AS_ROWS
    if len(first_ids) >= _MIN_SYMBOL_ROWS and _symbol_share(first_ids) >= 0.5 and not _any_gene_ids(column_names):
        return GENES_AS_ROWS
    return SAMPLES_AS_ROWS


def _symbol_share(names: Sequence[str]) -> float:
    """Share of ``names`` that are current gene symbols: not previous symbols or aliases, which short sample
    codes (``s1``, ``P2``) often are, nor numeric ids, which sample numbers imitate."""
    return sum(r.rule == "symbol" for r in resolve_genes(list(names))) / len(names)


def _any_gene_ids(names: Sequence[str]) -> bool:
    """Whether more than a few of ``names`` resolve as genes by any rule (symbols, aliases, NCBI ids ...)."""
    sample = list(names[:2000])
    return sum(r.resolved for r in resolve_genes(sample)) > 0.05 * len(sample)


def matrix_checksum(matrix: ExpressionMatrix) -> str:
    """Return the sha256 hex digest of the canonical form of ``matrix``.

    The digest covers, in order: the ASCII magic ``exprssl-expression-matrix/1`` and a NUL byte; the
    number of samples and of genes as little-endian uint64; the values as little-endian float32 in C
    order; then each sample id followed by each gene name, each as its UTF-8 byte length (little-endian
    uint64) then its UTF-8 bytes. The values are hashed in place, without a copy.
    """
    n_samples, n_genes = matrix.values.shape
    digest = hashlib.sha256(_CHECKSUM_MAGIC)
    digest.update(struct.pack("<QQ", n_samples, n_genes))
    digest.update(np.ascontiguousarray(matrix.values, dtype="<f4").data)
    for text in (*matrix.sample_ids, *matrix.genes):
        encoded = text.encode("utf-8")
        digest.update(struct.pack("<Q", len(encoded)))
        digest.update(encoded)
    return digest.hexdigest()


def write_matrix(matrix: ExpressionMatrix, path: Path) -> None:
    """Write ``matrix`` to ``path`` as uncompressed Arrow IPC (Feather v2).

    Rows go out in record batches of about ``_WRITE_CELLS`` cells, each transposed on its own, so the
    write needs one batch's worth of memory besides the matrix, not a second matrix.
    """
    n_samples, n_genes = matrix.values.shape
    schema = pa.schema(
        [pa.field(SAMPLE_ID_COLUMN, pa.string(), nullable=False)]
        + [pa.field(gene, pa.float32(), nullable=False) for gene in matrix.genes],
        metadata=_STORE_METADATA,
    )
    rows = max(1, _WRITE_CELLS // max(1, n_genes))
    options = pa.ipc.IpcWriteOptions(compression=None)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
        for start in range(0, max(n_samples, 1), rows):
            block = matrix.values[start : start + rows]
            by_gene = np.ascontiguousarray(block.T)  # each row is one gene's values for this batch
            width = by_gene.shape[1]
            buffer = pa.py_buffer(by_gene)
            arrays = [pa.array(matrix.sample_ids[start : start + rows], type=pa.string())]
            arrays.extend(
                pa.Array.from_buffers(pa.float32(), width, [None, buffer.slice(j * width * 4, width * 4)])
                for j in range(n_genes)
            )
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            del arrays, buffer, by_gene


def read_matrix(path: Path) -> ExpressionMatrix:
    """Read a matrix written by :func:`write_matrix`; values come back bit-identical."""
    table = feather.read_table(str(path), memory_map=True)
    schema = table.schema
    if (schema.metadata or {}).get(b"exprssl.format") != _STORE_METADATA[b"exprssl.format"]:
        raise ValueError(f"{path} is not an exprssl expression-matrix store")
    if len(schema) == 0 or schema.field(0).name != SAMPLE_ID_COLUMN or schema.field(0).type != pa.string():
        raise ValueError(f"{path}: the first column must be the string column {SAMPLE_ID_COLUMN!r}")
    if any(schema.field(i).type != pa.float32() for i in range(1, len(schema))):
        raise ValueError(f"{path}: every gene column must be float32")
    values = _to_matrix(table.columns[1:], table.num_rows)  # copies, so nothing refers to the mapping
    return ExpressionMatrix(values=values, sample_ids=table.column(0).to_pylist(), genes=schema.names[1:])


# ---------------------------------------------------------------------------------------------------------
# Orientation


def _resolve_orientation(
    requested: str, id_name: str, column_names: Sequence[str], first_ids: Sequence[str]
) -> tuple[str, bool]:
    """The orientation to read with, and whether it was detected rather than given."""
    if requested != "auto":
        return requested, False
    return detect_orientation(id_name, column_names, first_ids), True


def _annotation_prefix(names: Sequence[str]) -> int:
    """How many of ``names`` (the columns after a gene-id column) are gene annotations, not samples."""
    count = 0
    for name in names:
        if name.strip().lower() not in ANNOTATION_COLUMN_NAMES:
            break
        count += 1
    return count


def _shape_for(header: list[str], orientation: str, skip_rows: int, block_size: int = _BLOCK_SIZE) -> _Shape:
    skip = _annotation_prefix(header[1:]) if orientation == GENES_AS_ROWS else 0
    skip = min(skip, len(header) - 2)  # a file with only annotation-named columns keeps its last as a sample
    values_at = list(range(1 + skip, len(header)))
    return _Shape(
        orientation=orientation,
        n_fields=len(header),
        values_at=values_at,
        names=[header[i] for i in values_at],
        skip_rows=skip_rows,
        skipped=header[1 : 1 + skip],
        block_size=block_size,
    )


# ---------------------------------------------------------------------------------------------------------
# Delimited text


def _delimited_layout(filename: str) -> _Delimited | None:
    name = filename.lower()
    gzipped = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    for extension, delimiter in _DELIMITERS.items():
        if stem.endswith(extension):
            return _Delimited(delimiter=delimiter, gzipped=gzipped)
    return None


def _open_text(path: Path, layout: _Delimited) -> io.TextIOBase:
    opener = gzip.open if layout.gzipped else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")  # type: ignore[return-value]


@dataclass(frozen=True)
class _Head:
    comments: int  # comment lines before the header
    header: list[str]
    first_ids: list[str]  # the first field of the first data rows
    longest_row: int  # characters of the longest line seen, the header included


def _line_cap(limits: SizeLimits) -> int:
    """Characters of the longest line a file within ``limits`` can hold (see ``_FIELD_CHARS``)."""
    columns = max(limits.samples or _UNLIMITED_COLUMNS, limits.genes or _UNLIMITED_COLUMNS)
    return (columns + _EXTRA_COLUMNS) * _FIELD_CHARS


def _sniff(
    path: Path, filename: str, layout: _Delimited, *, rows: int = _SNIFF_ROWS, comments: bool = True,
    limits: SizeLimits = NO_LIMITS, line_cap: int | None = None,
) -> _Head:
    """Leading comment lines (``#`` lines without a delimiter, as featureCounts writes; only when
    ``comments``), the header's fields, and the first field of up to ``rows`` data rows. A line longer
    than a file within ``limits`` can hold (or than ``line_cap``) is refused before it is read whole."""
    first: list[str] = []
    longest = 0
    cap = line_cap or _line_cap(limits)
    try:
        with _open_text(path, layout) as handle:
            lines = _bounded_lines(handle, filename, cap)
            n_comments = 0
            line = next(lines, "")
            while comments and line.startswith("#") and layout.delimiter not in line:
                n_comments += 1
                line = next(lines, "")
            _check_field_count(line, filename, layout.delimiter, limits)
            header = _header_record(line, filename, layout.delimiter, n_comments + 1)
            reader = csv.reader(lines, delimiter=layout.delimiter)
            longest = len(line)
            try:
                chars = 0
                while len(first) < rows and chars < _SNIFF_CHARS and (row := next(reader, None)) is not None:
                    first.append(row[0] if row else "")
                    width = sum(len(f) for f in row) + len(row)
                    chars, longest = chars + width, max(longest, width)
            except (UnicodeDecodeError, csv.Error, OSError, EOFError):
                pass  # the full read reports bad data rows with their position
    except UnicodeDecodeError as exc:  # decoded ahead of the line being read: find the line
        found = _not_utf8(path, filename, layout, cap, comments=comments)
        raise InvalidInput(found or f"{filename}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, csv.Error) as exc:
        raise InvalidInput(f"{filename}: could not read the header: {brief(exc)}") from None
    if not header:
        raise InvalidInput(
            f"{filename} is empty or its first line is blank; the first line must be a header naming the "
            "sample-id column and then the columns"
        )
    return _Head(n_comments, header, first, longest)


def _check_field_count(line: str, filename: str, delimiter: str, limits: SizeLimits) -> None:
    """Refuse a header of more columns than ``limits`` allow (beside the id and annotation columns) before it
    is split: ten million names would take gigabytes as Python strings and Arrow columns."""
    if limits.samples is None and limits.genes is None:
        return
    most = max(limits.samples or 0, limits.genes or 0) + _EXTRA_COLUMNS
    if line.count(delimiter) < most:  # an upper bound on the fields: quoted fields may hold delimiters
        return
    fields = _field_pattern(delimiter)
    # The pattern also matches the empty end of the line: one match more than there are fields.
    counted = line.count(delimiter) + 1 if '"' not in line else sum(
        1 for _ in itertools.islice(fields.finditer(line), most + 2)
    ) - 1
    if counted > most:
        raise InvalidInput(
            f"{filename}: the header has more than {most:,} columns; this server accepts at most "
            f"{max(limits.samples or 0, limits.genes or 0):,} samples or genes (EXPRSSL_MAX_UPLOAD_SAMPLES, "
            "EXPRSSL_MAX_UPLOAD_GENES)"
        )


@functools.cache
def _field_pattern(delimiter: str) -> re.Pattern[str]:
    """One field of a line as the csv module reads it: quoted (doubled quotes inside), or not."""
    d = re.escape(delimiter)
    return re.compile(f'(?:"(?:[^"]|"")*"[^{d}\r\n]*|[^{d}\r\n]*)(?:{d}|\r?\n|$)')



def _bounded_lines(handle: io.TextIOBase, filename: str, cap: int) -> Iterator[str]:
    """The lines of ``handle``, each read with at most ``cap`` characters; a longer one is refused (a small
    gzip can hold gigabytes without a line break)."""
    number = 0
    while line := handle.readline(cap + 1):
        number += 1
        if len(line) > cap:
            raise InvalidInput(
                f"{filename}: line {number:,} is longer than {cap:,} characters, more than a file within this "
                "server's limits (EXPRSSL_MAX_UPLOAD_SAMPLES, EXPRSSL_MAX_UPLOAD_GENES) can hold"
            )
        yield line


def _header_record(line: str, filename: str, delimiter: str, number: int) -> list[str] | None:
    """The header's fields, read from its one line ``number``; refuse a header whose quoted name runs on
    past the line's end: its record would go on over lines that were never counted (see
    :func:`_check_field_count`), and a name may not hold a line break anyway."""
    header = next(csv.reader([line], delimiter=delimiter), None)
    # A line ends at its first line break, so a name holding one was still open there.
    if header and header[-1].endswith(("\r", "\n")):
        raise InvalidInput(
            f"{filename}: the header (line {number:,}) ends inside a quoted name; {NO_CONTROL}"
        )
    return header


def _starts_like_gct(path: Path, layout: _Delimited) -> bool:
    try:
        with _open_text(path, layout) as handle:
            return handle.read(4) in ("#1.2", "#1.3")
    except (OSError, EOFError, UnicodeDecodeError):
        return False


def _delimiter_hint(field: str, layout: _Delimited) -> str:
    expected = "tab" if layout.delimiter == "\t" else "comma"
    for symbol, name in (("\t", "tab"), (",", "comma"), (";", "semicolon")):
        if symbol != layout.delimiter and symbol in field:
            return f" (the file looks {name}-separated, but its extension calls for {expected}-separated)"
    return ""


def _open_stream(path: Path, layout: _Delimited) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if layout.gzipped else None)


def _csv_options(
    layout: _Delimited,
    n_columns: int,
    types: Callable[[int], pa.DataType],
    *,
    include: Sequence[int] | None = None,
    skip_rows: int = 1,
    block_size: int = _BLOCK_SIZE,
    on_invalid_row: Callable[[pacsv.InvalidRow], str] | None = None,
    use_threads: bool = True,
) -> dict[str, object]:
    """Arrow CSV options: the header is skipped and columns are named by position, so odd names are safe."""
    names = [f"c{i}" for i in range(n_columns)]
    return {
        "read_options": pacsv.ReadOptions(
            column_names=names, skip_rows=skip_rows, block_size=block_size, use_threads=use_threads
        ),
        "parse_options": pacsv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=on_invalid_row),
        "convert_options": pacsv.ConvertOptions(
            column_types={name: types(i) for i, name in enumerate(names)},
            include_columns=None if include is None else [names[i] for i in include],
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }


def _read_delimited_matrix(
    path: Path, filename: str, layout: _Delimited, orientation: str, limits: SizeLimits
) -> ParsedExpression:
    head = _sniff(path, filename, layout, limits=limits)
    header = head.header
    if len(header) < 2:
        columns = "sample" if orientation == GENES_AS_ROWS else "gene"
        raise InvalidInput(
            f"{filename}: no {columns} columns; the header has only the {_id_kind(orientation)} column"
            + _delimiter_hint(header[0], layout)
        )
    resolved, detected = _resolve_orientation(orientation, header[0], header[1:], head.first_ids)
    shape = _shape_for(header, resolved, head.comments + 1, _block_size(head.longest_row))
    matrix = _read_text_values(path, filename, layout, shape, limits)
    file_format = "csv" if layout.delimiter == "," else "tsv"
    return ParsedExpression(matrix, file_format, resolved, detected, shape.skipped)


def _id_kind(orientation: str) -> str:
    return "gene-id" if orientation == GENES_AS_ROWS else "sample-id"


def _block_size(longest_row: int) -> int:
    """Text per batch: a few hundred rows of a wide file, so each batch makes one dense block of values."""
    return max(min(max(_BLOCK_SIZE, 256 * longest_row), _MAX_BLOCK_SIZE), 4 * longest_row)


def _read_text_values(
    path: Path, filename: str, layout: _Delimited, shape: _Shape, limits: SizeLimits
) -> ExpressionMatrix:
    """Read the id column and the value columns of ``shape`` as float32, batch by batch, into the matrix.

    Each batch of rows becomes one dense float32 block at once, so memory holds the blocks (one matrix)
    and a batch or two of Arrow data, never a whole Arrow table beside the matrix.
    """
    check_names(shape.names, filename, kind=shape.column_kind, at=shape.values_at)
    include = [0, *shape.values_at]
    options = _csv_options(
        layout, shape.n_fields, lambda i: pa.string() if i == 0 else pa.float32(), include=include,
        skip_rows=shape.skip_rows, block_size=shape.block_size,
    )
    limits.check_shape(filename, shape.orientation, columns=len(shape.names))
    blocks = _Blocks(shape.orientation, len(shape.names))
    try:
        with _open_stream(path, layout) as stream:
            for batch in pacsv.open_csv(stream, **options):
                if not blocks.add(batch.column(0), batch.columns[1:]):
                    break
                limits.check_shape(
                    filename, shape.orientation, rows=blocks.n_rows, columns=len(shape.names), partial=True
                )
    except (pa.ArrowException, OSError, EOFError) as exc:
        blocks.clear()
        _raise_first_delimited_error(path, filename, layout, shape, exc)
    if not blocks.finite:
        blocks.clear()
        _raise_first_delimited_error(path, filename, layout, shape, None)
    if blocks.n_rows == 0:
        raise InvalidInput(f"{filename}: no data rows below the header")
    ids = _row_ids(blocks.ids(), filename, kind=shape.row_kind)
    values = blocks.matrix()
    if shape.orientation == SAMPLES_AS_ROWS:
        return ExpressionMatrix(values=values, sample_ids=ids, genes=shape.names)
    return ExpressionMatrix(values=values, sample_ids=shape.names, genes=ids)


class _Blocks:
    """Batches of rows as dense float32 blocks, assembled into one C-contiguous samples x genes matrix.

    A samples-as-rows batch of k rows becomes a (k, n_genes) block; a genes-as-rows batch of k genes a
    (n_samples, k) block. Blocks are numpy arrays large enough to be returned to the system as soon as
    they are copied into the matrix, so assembling needs about one matrix plus one block.
    """

    def __init__(self, orientation: str, n_columns: int) -> None:
        self.orientation, self.n_columns = orientation, n_columns
        self.blocks: list[np.ndarray] = []
        self.id_chunks: list[pa.Array] = []
        self.n_rows = 0
        self.finite = True

    def add(self, ids: pa.Array, columns: Sequence[pa.Array]) -> bool:
        """Add a batch of float32 columns without nulls; False once a value is NaN or infinite."""
        k = len(ids)
        if k == 0:
            return True
        flat = pa.concat_arrays(list(columns)).to_numpy(zero_copy_only=False)  # column-major (n_columns, k)
        if self.orientation == SAMPLES_AS_ROWS:
            block = np.ascontiguousarray(flat.reshape(self.n_columns, k).T)
        else:
            block = np.array(flat.reshape(self.n_columns, k))  # rows are samples already
        del flat
        return self.add_block(ids, block)

    def add_block(self, ids: pa.Array | pa.ChunkedArray, block: np.ndarray) -> bool:
        """Add a ready block: (k, n_columns) for samples as rows, (n_columns, k) for genes as rows."""
        self.finite = self.finite and _all_finite(block)
        self.blocks.append(block)
        self.id_chunks.extend(ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids])
        self.n_rows += len(ids)
        return self.finite

    def ids(self) -> pa.ChunkedArray:
        return pa.chunked_array(self.id_chunks, type=pa.string())

    def clear(self) -> None:
        self.blocks.clear()
        self.id_chunks.clear()

    def matrix(self) -> np.ndarray:
        if self.orientation == SAMPLES_AS_ROWS:
            shape = (self.n_rows, self.n_columns)
        else:
            shape = (self.n_columns, self.n_rows)
        if len(self.blocks) == 1 and self.blocks[0].flags.c_contiguous:
            return self.blocks.pop()
        values = np.empty(shape, dtype=np.float32)
        start = 0
        while self.blocks:
            block = self.blocks.pop(0)
            if self.orientation == SAMPLES_AS_ROWS:
                values[start : start + block.shape[0]] = block
                start += block.shape[0]
            else:
                values[:, start : start + block.shape[1]] = block
                start += block.shape[1]
            del block
        return values


def _raise_first_delimited_error(
    path: Path, filename: str, layout: _Delimited, shape: _Shape, cause: Exception | None
) -> NoReturn:
    """Re-read the file as text, batch by batch, and raise for its first malformed row or bad cell."""
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    include = [0, *shape.values_at]
    options = _csv_options(
        layout, shape.n_fields, lambda i: pa.string(), include=include, skip_rows=shape.skip_rows,
        block_size=shape.block_size, on_invalid_row=on_invalid_row, use_threads=False,
    )
    try:
        with _open_stream(path, layout) as stream:
            reader = pacsv.open_csv(stream, **options)
            _raise_first_bad_cell(_rebatched(reader, len(include)), filename, shape)
    except (pa.ArrowException, OSError, EOFError) as exc:
        if invalid:
            raise InvalidInput(_invalid_row_message(invalid[0], filename, layout, shape)) from None
        cause = cause or exc  # the first parse's message says more than the text re-read's
    if cause is None:
        raise InvalidInput(f"{filename}: the values could not be read as float32 numbers")
    long_line = _first_line_over(path, layout, shape.block_size) if "straddl" in str(cause) else None
    if long_line is not None:
        raise InvalidInput(
            f"{filename}: line {long_line:,} (data row {long_line - shape.skip_rows:,}) is longer than "
            f"{shape.block_size:,} bytes, the most one row may take here (about 4 times the longest of the "
            "first rows)"
        )
    raise InvalidInput(f"{filename}: could not parse the file: {brief(cause)}") from None


def _not_utf8(path: Path, filename: str, layout: _Delimited, cap: int, *, comments: bool = False) -> str | None:
    """A message naming the first line that is not UTF-8 text, read line by line in binary; None if none is.

    With ``comments``, leading comment lines (as :func:`_sniff` reads them) come before the header, and
    data rows are numbered from the line after it."""
    header_at = 0  # the header's line number, once it is read
    for number, line in enumerate(_binary_lines(path, layout, 4 * cap), start=1):
        if not header_at and not (comments and _is_comment(line, layout, number)):
            header_at = number
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                f"{filename}: {_line_role(number, header_at)} is not UTF-8 text ({exc.reason} at byte "
                f"{exc.start + 1} of the line: {line[max(0, exc.start - 20) : exc.start + 20]!r}); save "
                "the file as UTF-8"
            )
    return None


def _binary_lines(path: Path, layout: _Delimited, most: int) -> Iterator[bytes]:
    """The file's lines in binary, each read with at most ``most`` bytes (a longer one comes in pieces), so
    that no line is ever read whole; they end where the file can no longer be read (a truncated gzip)."""
    opener = gzip.open if layout.gzipped else open
    try:
        with opener(path, "rb") as handle:
            while line := handle.readline(most):
                yield line
    except (OSError, EOFError):
        return


def _is_comment(line: bytes, layout: _Delimited, number: int) -> bool:
    """A comment line before the header, as :func:`_sniff` reads it: '#' first and no delimiter."""
    if number == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark _open_text drops
    return line.startswith(b"#") and layout.delimiter.encode() not in line


def _line_role(number: int, header_at: int) -> str:
    if not header_at:
        return f"line {number:,} (a comment line before the header)"
    if number == header_at:
        return "the header" if number == 1 else f"line {number:,} (the header)"
    return f"line {number:,} (data row {number - header_at:,})"


def _first_line_over(path: Path, layout: _Delimited, most: int) -> int | None:
    """The number of the first line longer than ``most`` bytes, reading no line whole; None if none is."""
    for number, line in enumerate(_binary_lines(path, layout, most + 1), start=1):
        if len(line) > most:
            return number
    return None


def _rebatched(batches: Iterable[pa.RecordBatch], n_columns: int) -> Iterable[pa.RecordBatch]:
    rows = max(1, _SCAN_CELLS // n_columns)
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _invalid_row_message(row: pacsv.InvalidRow, filename: str, layout: _Delimited, shape: _Shape) -> str:
    first_field = next(csv.reader([row.text], delimiter=layout.delimiter), [""])[0] if row.text else ""
    where = (
        f"the row for {shape.row_kind} {first_field!r}" if first_field.strip() else f"the row {clip(row.text)!r}"
    )
    message = f"{filename}: {where} has {row.actual_columns} fields but the header has {row.expected_columns}"
    if row.actual_columns == row.expected_columns + 1:
        message += (
            f"; the header must start with a name for the {_id_kind(shape.orientation)} column, such as "
            f"{'gene_id' if shape.orientation == GENES_AS_ROWS else 'sample_id'!r} "
            "(R's write.table needs col.names=NA)"
        )
    return message


def _read_label_table(path: Path, filename: str, layout: _Delimited, n_columns: int, max_rows: int | None) -> pa.Table:
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    options = _csv_options(layout, n_columns, lambda i: pa.string(), on_invalid_row=on_invalid_row, use_threads=False)
    shape = _Shape(SAMPLES_AS_ROWS, n_columns, [], [], 1)
    batches: list[pa.RecordBatch] = []
    n_rows = n_bytes = 0
    try:
        with _open_stream(path, layout) as stream:
            reader = pacsv.open_csv(stream, **options)
            for batch in reader:
                batches.append(batch)
                n_rows, n_bytes = n_rows + batch.num_rows, n_bytes + batch.nbytes
                _check_label_size(filename, n_rows, n_bytes, max_rows)
            return pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowException, OSError, EOFError) as exc:
        batches.clear()
        if invalid:
            raise InvalidInput(_invalid_row_message(invalid[0], filename, layout, shape)) from None
        not_utf8 = _not_utf8(path, filename, layout, _MAX_LABEL_LINE) if "UTF8" in str(exc) else None
        raise InvalidInput(not_utf8 or f"{filename}: could not parse the file: {brief(exc)}") from None


def _check_label_size(filename: str, n_rows: int, n_bytes: int, max_rows: int | None) -> None:
    if max_rows is not None and n_rows > max_rows:
        raise InvalidInput(
            f"{filename}: more than {max_rows:,} data rows, but the expression matrix has {max_rows:,} samples; "
            "each row must label one of them"
        )
    if n_bytes > _MAX_LABEL_BYTES:
        raise InvalidInput(f"{filename}: more than {_MAX_LABEL_BYTES:,} bytes of label text; this server reads no more")


def _label_values(column: pa.ChunkedArray) -> np.ndarray:
    """Strings without surrounding spaces (``"kidney "`` is ``"kidney"``, ``" P1"`` the group ``"P1"``) as an
    object array, with nulls, blank cells and pandas' missing-value markers as NaN."""
    trimmed = pc.utf8_trim_whitespace(column)
    missing = pc.fill_null(pc.is_in(trimmed, value_set=pa.array(sorted(_MISSING_TOKENS))), True)
    values = np.asarray(trimmed.to_pylist(), dtype=object)
    values[np.asarray(missing)] = np.nan
    return values


def text_annotations(sample_ids: Sequence[str], columns: Mapping[str, Sequence[str | None]]) -> pd.DataFrame | None:
    """Per-sample text columns as a label table, read as a labels file's cells are (:func:`_label_values`);
    None if there are none."""
    if not columns:
        return None
    data = {name: _label_values(pa.chunked_array([pa.array(list(values), pa.string())]))
            for name, values in columns.items()}
    index = pd.Index(list(sample_ids), dtype=object, name=SAMPLE_ID_COLUMN)
    return pd.DataFrame(data, index=index, dtype=object)


# ---------------------------------------------------------------------------------------------------------
# GCT (GenePattern): genes as rows


def _read_gct(
    path: Path, filename: str, layout: _Delimited, orientation: str, limits: SizeLimits
) -> ParsedExpression:
    """GCT 1.2 (``Name``, ``Description``, samples) and 1.3 (id, row metadata, samples; column metadata
    lines before the data)."""
    if orientation == SAMPLES_AS_ROWS:
        raise InvalidInput(f"{filename}: GCT files hold genes as rows; orientation 'samples_as_rows' does not apply")
    version, header, column_meta, n_rows, n_row_meta = _read_gct_head(path, filename, layout, limits)
    n_samples = len(header) - 1 - n_row_meta
    shape = _Shape(
        orientation=GENES_AS_ROWS,
        n_fields=len(header),
        values_at=list(range(1 + n_row_meta, len(header))),
        names=header[1 + n_row_meta :],
        skip_rows=3 + len(column_meta),
        skipped=header[1 : 1 + n_row_meta],
    )
    limits.check(filename, genes=n_rows)  # as the header declares
    matrix = _read_text_values(path, filename, layout, shape, limits)
    if len(matrix.genes) != n_rows:
        raise InvalidInput(
            f"{filename}: the GCT {version} header declares {n_rows} rows but the file has {len(matrix.genes)}"
        )
    annotations = text_annotations(matrix.sample_ids, {name: cells[-n_samples:] for name, cells in column_meta})
    return ParsedExpression(matrix, "gct", GENES_AS_ROWS, orientation == "auto", shape.skipped, annotations)


def _read_gct_head(
    path: Path, filename: str, layout: _Delimited, limits: SizeLimits
) -> tuple[str, list[str], list[tuple[str, list[str]]], int, int]:
    """(version, header fields, column-metadata rows as (name, cells), declared gene rows, row-metadata count).

    The header and column-metadata lines are read with at most the characters and fields the dimensions
    line allows, each refused as soon as it is read (a small gzip can hold millions of fields)."""
    try:
        with _open_text(path, layout) as handle:
            lines_read = _bounded_lines(handle, filename, _line_cap(limits))
            lines = [next(lines_read, "").rstrip("\r\n") for _ in range(2)]
            version = lines[0].strip()
            if version not in ("#1.2", "#1.3"):
                raise InvalidInput(f"{filename}: a GCT file starts with '#1.2' or '#1.3', not {clip(lines[0])!r}")
            dims = _gct_dimensions(lines[1], version, filename)
            n_rows, n_columns = dims[0], dims[1]
            n_row_meta, n_column_meta = (dims[2], dims[3]) if version == "#1.3" else (1, 0)
            limits.check(filename, samples=n_columns)  # as the dimensions line declares
            _check_gct_meta_counts(filename, n_row_meta, n_column_meta)
            expected = 1 + n_row_meta + n_columns
            header = _gct_fields(handle, filename, 3, expected) or [""]
            if len(header) != expected:
                raise InvalidInput(
                    f"{filename}: the GCT {version[1:]} header line has {len(header)} fields but the dimensions "
                    f"line declares {expected} (id, {n_row_meta} row-metadata column(s), {n_columns} samples)"
                )
            meta = _gct_meta_lines(handle, filename, n_column_meta, expected)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{filename}: the GCT header is not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"{filename}: could not read the GCT header: {brief(exc)}") from None
    return version[1:], header, [(cells[0], cells) for cells in meta], n_rows, n_row_meta


def _gct_meta_lines(handle: io.TextIOBase, filename: str, n_column_meta: int, expected: int) -> list[list[str]]:
    """The column-metadata lines, at most ``_MAX_LABEL_BYTES`` characters in all, as a labels file: each line
    is bounded by the declared columns, but a thousand such lines need not fit in memory."""
    meta, total = [], 0
    for i in range(n_column_meta):
        cells = _gct_meta_line(handle, filename, i, n_column_meta, expected)
        total += sum(len(cell) for cell in cells)
        if total > _MAX_LABEL_BYTES:
            raise InvalidInput(
                f"{filename}: the GCT column metadata passes {_MAX_LABEL_BYTES:,} characters at its line {i + 1:,}; "
                "at most that many are read, as of a labels file"
            )
        meta.append(cells)
    return meta


def _check_gct_meta_counts(filename: str, n_row_meta: int, n_column_meta: int) -> None:
    """Refuse more row-metadata columns than the id and annotation columns a header may hold, and more
    column-metadata lines than ``_MAX_GCT_COLUMN_META``: both size the lines read next."""
    if n_row_meta > _EXTRA_COLUMNS:
        raise InvalidInput(
            f"{filename}: the GCT 1.3 dimensions line declares {n_row_meta:,} row-metadata columns; at most "
            f"{_EXTRA_COLUMNS} are accepted"
        )
    if n_column_meta > _MAX_GCT_COLUMN_META:
        raise InvalidInput(
            f"{filename}: the GCT 1.3 dimensions line declares {n_column_meta:,} column-metadata lines; "
            f"at most {_MAX_GCT_COLUMN_META:,} are accepted"
        )


def _gct_fields(handle: io.TextIOBase, filename: str, number: int, expected: int) -> list[str] | None:
    """The fields of GCT line ``number`` (3: the header, then column metadata); None at the end of the file.

    The line is read with at most ``expected`` fields of ``_FIELD_CHARS`` characters each, and its fields
    are counted before it is split: one more than ``expected`` is refused, naming the line; fewer are left
    to the caller, which says what the line is."""
    cap = expected * _FIELD_CHARS
    line = handle.readline(cap + 1)
    if not line:
        return None
    if len(line) > cap:
        raise InvalidInput(
            f"{filename}: line {number:,} is longer than {cap:,} characters, more than the {expected:,} fields "
            "the GCT dimensions line declares can hold"
        )
    line = line.rstrip("\r\n")
    if line.count("\t") >= expected:
        raise InvalidInput(
            f"{filename}: line {number:,} has more than {expected:,} fields, the number the GCT dimensions "
            "line declares"
        )
    return line.split("\t")


def _gct_meta_line(
    handle: io.TextIOBase, filename: str, index: int, declared: int, expected: int
) -> list[str]:
    number = 4 + index
    cells = _gct_fields(handle, filename, number, expected)
    if cells is None:
        raise InvalidInput(
            f"{filename}: the file ends after {index} of the {declared:,} column-metadata lines its dimensions "
            "line declares"
        )
    if len(cells) != expected:
        raise InvalidInput(f"{filename}: GCT column-metadata line {number} has {len(cells)} fields, not {expected}")
    return cells


def _gct_dimensions(line: str, version: str, filename: str) -> list[int]:
    fields = line.rstrip("\t").split("\t")  # spreadsheets pad lines with tabs
    wanted = 4 if version == "#1.3" else 2
    try:
        dims = [int(f) for f in fields] if len(fields) == wanted else []
    except ValueError:
        dims = []
    if len(dims) != wanted or any(d < 0 for d in dims) or (wanted == 4 and dims[2] < 0):
        what = "rows, columns, row-metadata and column-metadata counts" if wanted == 4 else "rows and columns"
        raise InvalidInput(f"{filename}: GCT {version[1:]} line 2 must give the {what}; found {clip(line)!r}")
    if dims[1] < 1:
        raise InvalidInput(f"{filename}: the GCT header declares no sample columns")
    return dims


# ---------------------------------------------------------------------------------------------------------
# Parquet


def _read_parquet_matrix(path: Path, filename: str, orientation: str, limits: SizeLimits) -> ParsedExpression:
    """Read a Parquet file batch by batch (see :class:`_Blocks`); ids are the pandas index or the first column."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InvalidInput(f"{filename}: could not read the Parquet file: {brief(exc)}") from None
    id_position = _parquet_id_position(schema, filename)
    names = schema.names
    other = [i for i in range(len(names)) if i != id_position]
    id_field = schema.field(id_position)
    if not _is_id_type(id_field.type):
        stated, _ = _resolve_orientation(orientation, id_field.name, [names[i] for i in other], [])
        raise InvalidInput(
            f"{filename}: the id column {id_field.name!r} holds {id_field.type}, not "
            f"{'gene' if stated == GENES_AS_ROWS else 'sample'} ids; store the ids as the first column or as the "
            "index, as strings"
        )
    _check_parquet_footer(parquet.metadata, filename, limits, id_position)
    reader = _ParquetSlices(_with_dictionaries(path, parquet, filename), filename)
    first_ids = reader.ids(0, id_position).slice(0, _SNIFF_ROWS).to_pylist() if reader.n_groups else []
    resolved, detected = _resolve_orientation(orientation, id_field.name, [names[i] for i in other], first_ids)
    skipped: list[str] = []
    if resolved == GENES_AS_ROWS:
        skip = 0
        while skip < len(other) - 1 and names[other[skip]].strip().lower() in ANNOTATION_COLUMN_NAMES and not (
            _is_number_type(schema.field(other[skip]).type)
        ):
            skip += 1
        skipped, other = [names[i] for i in other[:skip]], other[skip:]
    shape = _Shape(resolved, len(names), other, [names[i] for i in other], 0, skipped)
    if not other:
        raise InvalidInput(f"{filename}: no {shape.column_kind} columns; the file holds only the id column")
    check_names(shape.names, filename, kind=shape.column_kind, at=other)
    for name, position in zip(shape.names, other, strict=True):
        kind = schema.field(position).type
        if not _is_numeric_or_text(kind):
            raise InvalidInput(f"{filename}: {shape.column_kind} column {name!r} has type {kind}; expected numbers")
    if parquet.metadata.num_rows == 0:
        raise InvalidInput(f"{filename}: no data rows")
    n_rows = parquet.metadata.num_rows
    limits.check_shape(filename, resolved, rows=n_rows, columns=len(other))  # as the footer declares
    values = np.empty((n_rows, len(other)) if resolved == SAMPLES_AS_ROWS else (len(other), n_rows), np.float32)
    id_chunks: list[pa.Array] = []
    for group, start, stop in reader.groups():
        target = values[start:stop] if resolved == SAMPLES_AS_ROWS else values[:, start:stop]
        if not reader.fill(target, group, other, resolved) or not _all_finite(target):
            del values, target
            _raise_first_parquet_error(reader, filename, shape, id_position)
        id_chunks.extend(reader.ids(group, id_position).chunks)
    ids = _row_ids(pa.chunked_array(id_chunks, type=pa.string()), filename, kind=shape.row_kind)
    if resolved == SAMPLES_AS_ROWS:
        matrix = ExpressionMatrix(values, ids, shape.names)
    else:
        matrix = ExpressionMatrix(values, shape.names, ids)
    return ParsedExpression(matrix, "parquet", resolved, detected, skipped)


def _check_parquet_footer(metadata: pq.FileMetaData, filename: str, limits: SizeLimits, id_position: int) -> None:
    """Refuse, before anything is decoded, a footer declaring more rows and columns than the limits allow in
    either orientation, or column chunks larger than their rows of ids or numbers can be (a compression
    bomb); the uncompressed sizes are those the footer declares."""
    # Up to _EXTRA_COLUMNS of the columns may be gene annotations (skipped, like a text file's): this screen only
    # stops files far over the limits; the exact check follows once the annotations are known.
    rows, columns = metadata.num_rows, max(metadata.num_columns - 1 - _EXTRA_COLUMNS, 0)
    in_groups = sum(metadata.row_group(group).num_rows for group in range(metadata.num_row_groups))
    if in_groups != rows:
        raise InvalidInput(
            f"{filename}: the Parquet footer declares {rows:,} rows but its row groups hold {in_groups:,}; "
            "the file is damaged"
        )
    try:
        limits.check_shape(filename, SAMPLES_AS_ROWS, rows=rows, columns=columns)
    except InvalidInput as as_samples:
        try:
            limits.check_shape(filename, GENES_AS_ROWS, rows=rows, columns=columns)
        except InvalidInput:
            raise as_samples from None
    for group in range(metadata.num_row_groups):
        chunks = metadata.row_group(group)
        for position in range(chunks.num_columns):
            per_row = 4 * NAME_LENGTH + 8 if position == id_position else _PARQUET_VALUE_BYTES
            size = chunks.column(position).total_uncompressed_size
            if size > chunks.num_rows * per_row + _PARQUET_CHUNK_SLACK:
                raise InvalidInput(
                    f"{filename}: column {position + 1} of row group {group + 1} declares {size:,} bytes for "
                    f"{chunks.num_rows:,} rows, more than ids or numbers take"
                )


def _with_dictionaries(path: Path, parquet: pq.ParquetFile, filename: str) -> pq.ParquetFile:
    """The file again, with text columns read as dictionaries: a dictionary-encoded column can repeat one
    long string a million times in a few bytes, which a plain read would decode a million times. The footer
    already read is reused, not parsed again (it lists every column)."""
    schema = parquet.schema_arrow
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    try:
        return pq.ParquetFile(path, metadata=parquet.metadata, read_dictionary=text)
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise InvalidInput(f"{filename}: could not read the Parquet file: {brief(exc)}") from None


class _ParquetSlices:
    """Reads a Parquet file one row group and a few hundred columns at a time.

    Arrow's Parquet reader keeps buffers per column being read: a whole row group of a 60,000-column file
    takes several times its data in memory (a plain ``read_table`` of a 10,000 x 60,000 file exhausts
    24 GB), while slices of ``_SLICE_COLUMNS`` columns take a few tens of MB each.
    """

    def __init__(self, parquet: pq.ParquetFile, filename: str) -> None:
        self.parquet, self.filename = parquet, filename
        self.n_groups = parquet.metadata.num_row_groups

    def read(self, group: int, columns: Sequence[int]) -> pa.Table:
        try:
            return self.parquet.reader.read_row_groups([group], column_indices=list(columns), use_threads=True)
        except (pa.ArrowException, OSError, EOFError) as exc:
            raise InvalidInput(f"{self.filename}: could not read the Parquet file: {brief(exc)}") from None

    def ids(self, group: int, position: int) -> pa.ChunkedArray:
        """One row group's ids as text; an id longer than NAME_LENGTH is refused before it is decoded."""
        column = self.read(group, [position]).column(0)
        if pa.types.is_dictionary(column.type):
            column = pa.chunked_array([self._decoded(chunk, group) for chunk in column.chunks], pa.string())
        return _text_ids(column)

    def _decoded(self, chunk: pa.DictionaryArray, group: int) -> pa.Array:
        lengths = pc.utf8_length(chunk.dictionary).to_numpy(zero_copy_only=False)
        long = np.flatnonzero(lengths > NAME_LENGTH)
        if long.size:
            used = np.flatnonzero(np.isin(chunk.indices.to_numpy(zero_copy_only=False), long))
            if used.size:
                start = sum(self.parquet.metadata.row_group(g).num_rows for g in range(group))
                raise InvalidInput(
                    f"{self.filename}: the id in data row {start + int(used[0]) + 1:,} is longer than "
                    f"{NAME_LENGTH} characters"
                )
        return pc.cast(chunk, pa.string())

    def slices(self, group: int, columns: Sequence[int]) -> Iterator[tuple[int, pa.Table]]:
        """(offset into ``columns``, table of the next slice of them) for one row group."""
        for start in range(0, len(columns), _SLICE_COLUMNS):
            yield start, self.read(group, columns[start : start + _SLICE_COLUMNS])

    def groups(self) -> Iterator[tuple[int, int, int]]:
        """(row group, first row, end row) of each row group."""
        start = 0
        for group in range(self.n_groups):
            stop = start + self.parquet.metadata.row_group(group).num_rows
            yield group, start, stop
            start = stop

    def fill(self, target: np.ndarray, group: int, columns: Sequence[int], orientation: str) -> bool:
        """Write one row group's values into ``target``: (rows, columns) for samples as rows, else
        (columns, rows). False if a cell is missing or not a number."""
        rows = self.parquet.metadata.row_group(group).num_rows
        for start, table in self.slices(group, columns):
            converted = _parquet_float32([_one_chunk(c) for c in table.columns])
            if converted is None or any(c.null_count for c in converted):
                return False
            width = len(converted)
            flat = pa.concat_arrays(converted).to_numpy(zero_copy_only=False).reshape(width, rows)
            if orientation == SAMPLES_AS_ROWS:
                target[:, start : start + width] = flat.T
            else:
                target[start : start + width] = flat
        return True


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)


def _text_ids(column: pa.Array) -> pa.Array:
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _parquet_id_position(schema: pa.Schema, filename: str) -> int:
    """Where the row ids are: the stored pandas index if there is one, else the first column."""
    metadata = schema.pandas_metadata or {}
    stored = [name for name in metadata.get("index_columns", []) if isinstance(name, str)]
    if len(stored) > 1:
        raise InvalidInput(f"{filename}: the table has a multi-level index {stored}; expected one sample-id index")
    if stored and schema.get_field_index(stored[0]) >= 0:
        position = schema.get_field_index(stored[0])
        # An unnamed integer index is a leftover row number, not a sample id.
        leftover = stored[0].startswith("__index_level_") and pa.types.is_integer(schema.field(position).type)
        if not leftover:
            return position
    if len(schema) == 0:
        raise InvalidInput(f"{filename}: the table has no columns")
    return 0


def _is_id_type(kind: pa.DataType) -> bool:
    """Text or integers; also text stored dictionary-encoded (a pandas categorical), decoded when read."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)


def _is_number_type(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _is_numeric_or_text(kind: pa.DataType) -> bool:
    return (
        _is_number_type(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    )


def _parquet_float32(columns: list[pa.Array]) -> list[pa.Array] | None:
    """Cast every column to float32; None if a text column holds something that is not a number.

    A dictionary column's distinct values are converted once, then looked up, never decoded row by row.
    """
    converted: list[pa.Array] = []
    for column in columns:
        if isinstance(column, pa.DictionaryArray):
            too_long = pc.max(pc.utf8_length(column.dictionary)).as_py() or 0
            numbers = None if too_long > _PARQUET_VALUE_BYTES else _parquet_float32([column.dictionary])
            if numbers is None:
                return None
            converted.append(numbers[0].take(column.indices))
            continue
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column = pc.cast(pc.utf8_trim(column, characters=" \t"), pa.float32())
            except pa.ArrowInvalid:
                return None
        converted.append(column if column.type == pa.float32() else pc.cast(column, pa.float32(), safe=False))
    return converted


def _short_text(values: pa.Array) -> pa.Array:
    """Text longer than ``_PARQUET_VALUE_BYTES`` characters, longer than any number, cut and marked '...'."""
    cut = pc.binary_join_element_wise(pc.utf8_slice_codeunits(values, 0, _PARQUET_VALUE_BYTES), "...", "")
    return pc.if_else(pc.greater(pc.utf8_length(values), _PARQUET_VALUE_BYTES), cut, values)


def _bounded_text(column: pa.Array) -> pa.Array:
    """A value column as text, each cell cut to a number's length (a dictionary's values before decoding)."""
    if isinstance(column, pa.DictionaryArray):
        return _short_text(column.dictionary).take(column.indices)
    text = pc.cast(column, pa.string())
    return _short_text(text) if pa.types.is_string(column.type) else text


def _raise_first_parquet_error(reader: _ParquetSlices, filename: str, shape: _Shape, id_position: int) -> NoReturn:
    """Scan the file as text, slice by slice, and raise for its first missing, non-numeric or non-finite cell.

    Within a row group the first bad cell in reading order is the earliest (row, column) over its slices.
    """
    offset = 0
    for group in range(reader.n_groups):
        ids = reader.ids(group, id_position)
        found: list[tuple[int, int, str | None]] = []
        for start, table in reader.slices(group, shape.values_at):
            try:
                cell = _first_bad_cell([_bounded_text(_one_chunk(c)) for c in table.columns], len(ids))
            except pa.ArrowException as exc:
                raise InvalidInput(f"{filename}: the values could not be read as numbers: {brief(exc)}") from None
            if cell is not None:
                found.append((cell[0], start + cell[1], cell[2]))
        if found:
            row, column, raw = min(found, key=lambda cell: (cell[0], cell[1]))
            raise InvalidInput(
                f"{filename}: {shape.row_kind} {ids[row].as_py()!r} (data row {offset + row + 1}), "
                f"{shape.column_kind} {shape.names[column]!r}: {_describe_bad_value(raw)}; every expression "
                "value must be a finite number"
            )
        offset += len(ids)
    raise InvalidInput(f"{filename}: the values could not be read as float32 numbers")


# ---------------------------------------------------------------------------------------------------------
# Shared checks


def _row_ids(column: pa.ChunkedArray, filename: str, *, kind: str) -> list[str]:
    """The row ids as Python strings; refuse missing, blank and over-long ids, and duplicate sample ids."""
    _check_row_text(column, filename, kind=kind)
    ids = column.to_pylist()
    blank = [str(i + 1) for i, value in enumerate(ids) if value is None or not value.strip()]
    if blank:
        raise InvalidInput(f"{filename}: {kind} id missing in data row(s) {listing(blank)}")
    if kind == "sample":
        duplicated = [value for value, count in Counter(ids).items() if count > 1]
        if duplicated:
            raise InvalidInput(f"{filename}: duplicate sample id(s): {listing([repr(s) for s in duplicated])}")
    return ids


def _check_row_text(column: pa.ChunkedArray, filename: str, *, kind: str) -> None:
    """Refuse ids longer than NAME_LENGTH or holding a control character, naming the first such row."""
    checks = (
        (pc.greater(pc.utf8_length(column), NAME_LENGTH), f"is longer than {NAME_LENGTH} characters"),
        (pc.match_substring_regex(column, CONTROL.pattern), f"holds a control character; {NO_CONTROL}"),
    )
    for found, problem in checks:
        rows = np.flatnonzero(pc.fill_null(found, False).to_numpy())
        if rows.size:
            row = int(rows[0])
            raise InvalidInput(
                f"{filename}: the {kind} id in data row {row + 1:,} ({clip(column[row].as_py())!r}) {problem}"
            )


def _to_matrix(columns: list[pa.ChunkedArray | None], n_rows: int) -> np.ndarray:
    """Move float32 columns into one C-contiguous (rows, columns) array, a loop over columns.

    Each entry of ``columns`` is set to None once copied, so its memory can go before the copy ends.
    """
    values = np.empty((n_rows, len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        assert column is not None
        values[:, j] = column.to_numpy()
        columns[j] = None
    return values


def _all_finite(values: np.ndarray) -> bool:
    rows = max(1, _SCAN_CELLS // max(1, values.shape[1]))  # bounds the boolean temporary
    return all(np.isfinite(values[i : i + rows]).all() for i in range(0, values.shape[0], rows))


def check_finite(matrix: ExpressionMatrix, filename: str, orientation: str) -> None:
    """Refuse NaN and infinite values of a matrix read from a binary format, naming the first in file order."""
    values = matrix.values
    if _all_finite(values):
        return
    bad = np.argwhere(~np.isfinite(values))  # few, in practice: the file is refused
    if orientation == GENES_AS_ROWS:
        bad = bad[np.lexsort((bad[:, 0], bad[:, 1]))]
    row, column = (int(v) for v in bad[0])
    sample, gene = matrix.sample_ids[row], matrix.genes[column]
    where = (
        f"gene {gene!r} (data row {column + 1}), sample {sample!r}"
        if orientation == GENES_AS_ROWS
        else f"sample {sample!r} (data row {row + 1}), gene {gene!r}"
    )
    raw = str(float(values[row, column]))
    raise InvalidInput(
        f"{filename}: {where}: {_describe_bad_value(raw)}; every expression value must be a finite number"
    )


def _raise_first_bad_cell(batches: Iterable[pa.RecordBatch], filename: str, shape: _Shape) -> None:
    """Raise for the first cell, in reading order, that is not a finite float32; return if there is none.

    Each batch holds the row ids then one text column per value column of ``shape``.
    """
    offset = 0
    for batch in batches:
        found = _first_bad_cell(batch.columns[1:], batch.num_rows)
        if found is not None:
            row, column, raw = found
            row_id = batch.column(0)[row].as_py()
            raise InvalidInput(
                f"{filename}: {shape.row_kind} {row_id!r} (data row {offset + row + 1}), {shape.column_kind} "
                f"{shape.names[column]!r}: {_describe_bad_value(raw)}; every expression value must be a finite number"
            )
        offset += batch.num_rows


def _first_bad_cell(columns: list[pa.Array], n_rows: int) -> tuple[int, int, str | None] | None:
    """(row, column, raw text) of the first bad cell, row-major, with all columns checked at once."""
    if n_rows == 0 or not columns:
        return None
    flat = pa.concat_arrays(columns)  # column-major: cell (row, column) is at column * n_rows + row
    try:
        numbers = pc.cast(flat, pa.float32())  # most batches parse; nulls become NaN below
    except pa.ArrowInvalid:
        text = pc.utf8_trim(pc.fill_null(flat, ""), characters=" \t")
        numeric = pc.match_substring_regex(text, _NUMBER_PATTERN, ignore_case=True)
        # Raises ArrowInvalid if the pattern let through something Arrow refuses: callers then report
        # Arrow's own message rather than a later cell.
        numbers = pc.cast(pc.if_else(numeric, text, "nan"), pa.float32())
    bad = np.flatnonzero(~np.isfinite(numbers.to_numpy(zero_copy_only=False)))
    if bad.size == 0:
        return None
    rows, cols = bad % n_rows, bad // n_rows
    first = np.lexsort((cols, rows))[0]
    return int(rows[first]), int(cols[first]), flat[int(bad[first])].as_py()


def _describe_bad_value(raw: str | None) -> str:
    if raw is None:
        return "missing (null) value"
    text = raw.strip()
    if not text:
        return "empty cell"
    if text in _MISSING_TOKENS:
        return f"missing value {clip(raw)!r}"
    try:
        number = float(text)
    except ValueError:
        return f"non-numeric value {clip(raw)!r}"
    if math.isnan(number):
        return f"missing value {clip(raw)!r} (NaN)"
    if math.isinf(number):
        return f"infinite value {clip(raw)!r}"
    if abs(number) > float(np.finfo(np.float32).max):
        return f"value {clip(raw)!r} is outside the float32 range"
    return f"non-numeric value {clip(raw)!r}"
