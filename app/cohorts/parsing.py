"""Parse uploaded expression matrices and label tables; store matrices in one canonical form.

Uploads are samples x genes: CSV, TSV (``.txt`` is tab-separated), their gzip variants, or Parquet.
Every user error raises :class:`app.errors.InvalidInput` with a message naming the file and, where
possible, the sample, gene, column and value at fault. The canonical store is an Arrow IPC (Feather v2)
file with a ``sample_id`` string column followed by one float32 column per gene.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from app.errors import InvalidInput

EXPRESSION_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz", ".parquet")
LABEL_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
SAMPLE_ID_COLUMN = "sample_id"

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
# pandas' default missing-value markers: label cells holding one of these become NaN, and an expression
# cell holding one is reported as a missing value.
_MISSING_TOKENS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN")
    + ("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)
# The float syntax Arrow's CSV converter accepts, used to locate bad cells after a failed parse.
_NUMBER_PATTERN = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)$"
_BLOCK_SIZE = 16 << 20  # one CSV row must fit in a block: 16 MiB allows about a million genes
_SCAN_CELLS = 4_000_000  # cells per batch when looking for the first bad cell
_LISTED = 10  # names listed in a message before "and N more"
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
class _Delimited:
    delimiter: str
    gzipped: bool


# ---------------------------------------------------------------------------------------------------------
# Public API


def read_expression(path: Path, filename: str) -> ExpressionMatrix:
    """Read a samples x genes matrix whose format is given by ``filename``'s extension."""
    if filename.lower().endswith(".parquet"):
        return _read_parquet_matrix(path, filename)
    layout = _delimited_layout(filename)
    if layout is None:
        raise InvalidInput(
            f"{filename}: unsupported file type; accepted extensions: {', '.join(EXPRESSION_EXTENSIONS)}"
        )
    return _read_delimited_matrix(path, filename, layout)


def read_labels(path: Path, filename: str) -> pd.DataFrame:
    """Read a label table: sample ids first, then phenotype columns kept as strings (NaN if missing)."""
    layout = _delimited_layout(filename)
    if layout is None:
        raise InvalidInput(
            f"{filename}: unsupported file type for labels; accepted extensions: {', '.join(LABEL_EXTENSIONS)}"
        )
    header = _read_header(path, filename, layout)
    if len(header) < 2:
        raise InvalidInput(
            f"{filename}: no phenotype column; the header has only the sample-id column"
            + _delimiter_hint(header[0], layout)
        )
    columns = header[1:]
    _check_names(columns, filename, kind="column")
    table = _read_label_table(path, filename, layout, len(header))
    if table.num_rows == 0:
        raise InvalidInput(f"{filename}: no data rows below the header")
    sample_ids = _sample_ids(table.column(0), filename)
    data = {name: _label_values(table.column(i + 1)) for i, name in enumerate(columns)}
    index = pd.Index(sample_ids, dtype=object, name=SAMPLE_ID_COLUMN)
    return pd.DataFrame(data, index=index, dtype=object)


def check_labels(labels: pd.DataFrame, sample_ids: Sequence[str], *, group_column: str | None) -> None:
    """Check that every labelled sample is in the matrix and that ``group_column`` is a label column."""
    if group_column is not None and group_column not in labels.columns:
        available = ", ".join(repr(str(c)) for c in labels.columns)
        raise InvalidInput(f"group column {group_column!r} is not a column of the labels; columns: {available}")
    known = set(sample_ids)
    unknown = [str(s) for s in labels.index if s not in known]
    if unknown:
        raise InvalidInput(
            f"{len(unknown)} labelled sample id(s) are not in the expression matrix: {_listing(unknown)}"
        )


def matrix_checksum(matrix: ExpressionMatrix) -> str:
    """Return the sha256 hex digest of the canonical form of ``matrix``.

    The digest covers, in order: the ASCII magic ``exprssl-expression-matrix/1`` and a NUL byte; the
    number of samples and of genes as little-endian uint64; the values as little-endian float32 in C
    order; then each sample id followed by each gene name, each as its UTF-8 byte length (little-endian
    uint64) then its UTF-8 bytes.
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
    """Write ``matrix`` to ``path`` as uncompressed Arrow IPC (Feather v2)."""
    by_gene = np.ascontiguousarray(matrix.values.T)  # each row is one gene's contiguous column
    arrays = [pa.array(matrix.sample_ids, type=pa.string())]
    arrays.extend(pa.array(column, type=pa.float32()) for column in by_gene)
    schema = pa.schema(
        [pa.field(SAMPLE_ID_COLUMN, pa.string(), nullable=False)]
        + [pa.field(gene, pa.float32(), nullable=False) for gene in matrix.genes],
        metadata=_STORE_METADATA,
    )
    feather.write_feather(pa.Table.from_arrays(arrays, schema=schema), str(path), compression="uncompressed")


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
# Delimited text


def _delimited_layout(filename: str) -> _Delimited | None:
    name = filename.lower()
    gzipped = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    for extension, delimiter in _DELIMITERS.items():
        if stem.endswith(extension):
            return _Delimited(delimiter=delimiter, gzipped=gzipped)
    return None


def _read_header(path: Path, filename: str, layout: _Delimited) -> list[str]:
    """Return the first line's fields; the first names the sample-id column."""
    opener = gzip.open if layout.gzipped else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter=layout.delimiter), None)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{filename}: the header is not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, csv.Error) as exc:
        raise InvalidInput(f"{filename}: could not read the header: {_brief(exc)}") from None
    if not header:
        raise InvalidInput(
            f"{filename} is empty or its first line is blank; the first line must be a header naming the "
            "sample-id column and then the columns"
        )
    return header


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
    on_invalid_row: Callable[[pacsv.InvalidRow], str] | None = None,
    use_threads: bool = True,
) -> dict[str, object]:
    """Arrow CSV options: the header is skipped and columns are named by position, so odd names are safe."""
    names = [f"c{i}" for i in range(n_columns)]
    return {
        "read_options": pacsv.ReadOptions(
            column_names=names, skip_rows=1, block_size=_BLOCK_SIZE, use_threads=use_threads
        ),
        "parse_options": pacsv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=on_invalid_row),
        "convert_options": pacsv.ConvertOptions(
            column_types={name: types(i) for i, name in enumerate(names)},
            null_values=[],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }


def _read_delimited_matrix(path: Path, filename: str, layout: _Delimited) -> ExpressionMatrix:
    header = _read_header(path, filename, layout)
    if len(header) < 2:
        raise InvalidInput(
            f"{filename}: no gene columns; the header has only the sample-id column"
            + _delimiter_hint(header[0], layout)
        )
    genes = header[1:]
    _check_names(genes, filename, kind="gene")
    options = _csv_options(layout, len(header), lambda i: pa.string() if i == 0 else pa.float32())
    try:
        with _open_stream(path, layout) as stream:
            table = pacsv.read_csv(stream, **options)
    except (pa.ArrowException, OSError) as exc:
        _raise_first_delimited_error(path, filename, layout, genes, exc)
    if table.num_rows == 0:
        raise InvalidInput(f"{filename}: no data rows below the header")
    sample_ids = _sample_ids(table.column(0), filename)
    columns, n_rows = table.columns[1:], table.num_rows
    del table
    values = _to_matrix(columns, n_rows)
    if not _all_finite(values):
        _raise_first_delimited_error(path, filename, layout, genes, None)
    return ExpressionMatrix(values=values, sample_ids=sample_ids, genes=genes)


def _raise_first_delimited_error(
    path: Path, filename: str, layout: _Delimited, genes: list[str], cause: Exception | None
) -> NoReturn:
    """Re-read the file as text, batch by batch, and raise for its first malformed row or bad cell."""
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    options = _csv_options(
        layout, len(genes) + 1, lambda i: pa.string(), on_invalid_row=on_invalid_row, use_threads=False
    )
    try:
        with _open_stream(path, layout) as stream:
            reader = pacsv.open_csv(stream, **options)
            _raise_first_bad_cell(_rebatched(reader, len(genes) + 1), filename, genes)
    except (pa.ArrowException, OSError) as exc:
        if invalid:
            raise InvalidInput(_invalid_row_message(invalid[0], filename, layout)) from None
        cause = cause or exc  # the first parse's message says more than the text re-read's
    if cause is None:
        raise InvalidInput(f"{filename}: the values could not be read as float32 numbers")
    raise InvalidInput(f"{filename}: could not parse the file: {_brief(cause)}") from None


def _rebatched(batches: Iterable[pa.RecordBatch], n_columns: int) -> Iterable[pa.RecordBatch]:
    rows = max(1, _SCAN_CELLS // n_columns)
    for batch in batches:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _invalid_row_message(row: pacsv.InvalidRow, filename: str, layout: _Delimited) -> str:
    first_field = next(csv.reader([row.text], delimiter=layout.delimiter), [""])[0] if row.text else ""
    where = f"the row for sample {first_field!r}" if first_field.strip() else f"the row {_clip(row.text)!r}"
    message = f"{filename}: {where} has {row.actual_columns} fields but the header has {row.expected_columns}"
    if row.actual_columns == row.expected_columns + 1:
        message += (
            "; the header must start with a name for the sample-id column, such as 'sample_id' "
            "(R's write.table needs col.names=NA)"
        )
    return message


def _read_label_table(path: Path, filename: str, layout: _Delimited, n_columns: int) -> pa.Table:
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    options = _csv_options(layout, n_columns, lambda i: pa.string(), on_invalid_row=on_invalid_row, use_threads=False)
    try:
        with _open_stream(path, layout) as stream:
            return pacsv.read_csv(stream, **options)
    except (pa.ArrowException, OSError) as exc:
        if invalid:
            raise InvalidInput(_invalid_row_message(invalid[0], filename, layout)) from None
        raise InvalidInput(f"{filename}: could not parse the file: {_brief(exc)}") from None


def _label_values(column: pa.ChunkedArray) -> np.ndarray:
    """Strings as an object array, with pandas' missing-value markers (and blank cells) as NaN."""
    missing = pc.is_in(pc.utf8_trim_whitespace(column), value_set=pa.array(sorted(_MISSING_TOKENS)))
    values = np.asarray(column.to_pylist(), dtype=object)
    values[np.asarray(missing)] = np.nan
    return values


# ---------------------------------------------------------------------------------------------------------
# Parquet


def _read_parquet_matrix(path: Path, filename: str) -> ExpressionMatrix:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{filename}: could not read the Parquet file: {_brief(exc)}") from None
    id_position = _parquet_id_position(table, filename)
    gene_positions = [i for i in range(table.num_columns) if i != id_position]
    if not gene_positions:
        raise InvalidInput(f"{filename}: no gene columns; the file holds only the sample-id column")
    names = table.schema.names  # builds a new list on every access
    genes = [names[i] for i in gene_positions]
    _check_names(genes, filename, kind="gene")
    if table.num_rows == 0:
        raise InvalidInput(f"{filename}: no data rows")
    id_field = table.schema.field(id_position)
    if not (
        pa.types.is_string(id_field.type)
        or pa.types.is_large_string(id_field.type)
        or pa.types.is_integer(id_field.type)
    ):
        raise InvalidInput(
            f"{filename}: the sample-id column {id_field.name!r} holds {id_field.type}, not sample ids; "
            "store the ids as the first column or as the index, as strings"
        )
    ids = pc.cast(table.column(id_position), pa.string())
    sample_ids = _sample_ids(ids, filename)
    gene_columns = [table.column(i) for i in gene_positions]
    for gene, column in zip(genes, gene_columns, strict=True):
        if not _is_numeric_or_text(column.type):
            raise InvalidInput(f"{filename}: gene column {gene!r} has type {column.type}; expected numbers")
    converted = _parquet_float32(gene_columns)
    if converted is None or any(column.null_count for column in converted):
        _raise_first_parquet_error(ids, gene_columns, filename, genes)
    values = _to_matrix(converted, table.num_rows)
    if not _all_finite(values):
        _raise_first_parquet_error(ids, gene_columns, filename, genes)
    return ExpressionMatrix(values=values, sample_ids=sample_ids, genes=genes)


def _parquet_id_position(table: pa.Table, filename: str) -> int:
    """Where the sample ids are: the stored pandas index if there is one, else the first column."""
    metadata = table.schema.pandas_metadata or {}
    stored = [name for name in metadata.get("index_columns", []) if isinstance(name, str)]
    if len(stored) > 1:
        raise InvalidInput(f"{filename}: the table has a multi-level index {stored}; expected one sample-id index")
    if stored and table.schema.get_field_index(stored[0]) >= 0:
        position = table.schema.get_field_index(stored[0])
        # An unnamed integer index is a leftover row number, not a sample id.
        leftover = stored[0].startswith("__index_level_") and pa.types.is_integer(table.schema[position].type)
        if not leftover:
            return position
    if table.num_columns == 0:
        raise InvalidInput(f"{filename}: the table has no columns")
    return 0


def _is_numeric_or_text(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    )


def _parquet_float32(columns: list[pa.ChunkedArray]) -> list[pa.ChunkedArray] | None:
    """Cast every column to float32; None if a text column holds something that is not a number."""
    converted = []
    for column in columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column = pc.cast(pc.utf8_trim(column, characters=" \t"), pa.float32())
            except pa.ArrowInvalid:
                return None
        converted.append(pc.cast(column, pa.float32(), safe=False))
    return converted


def _raise_first_parquet_error(
    ids: pa.ChunkedArray, columns: list[pa.ChunkedArray], filename: str, genes: list[str]
) -> NoReturn:
    as_text = pa.Table.from_arrays(
        [ids, *(pc.cast(column, pa.string()) for column in columns)],
        names=[f"c{i}" for i in range(len(columns) + 1)],
    )
    batches = as_text.to_batches(max_chunksize=max(1, _SCAN_CELLS // as_text.num_columns))
    try:
        _raise_first_bad_cell(batches, filename, genes)
    except pa.ArrowException as exc:
        raise InvalidInput(f"{filename}: the values could not be read as numbers: {_brief(exc)}") from None
    raise InvalidInput(f"{filename}: the values could not be read as float32 numbers")


# ---------------------------------------------------------------------------------------------------------
# Shared checks


def _check_names(names: list[str], filename: str, *, kind: str) -> None:
    """Refuse empty and duplicate column names; ``names`` start at the file's second column."""
    empty = [str(i + 2) for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise InvalidInput(f"{filename}: {kind} name missing in column(s) {_listing(empty)} of the header")
    duplicated = [name for name, count in Counter(names).items() if count > 1]
    if duplicated:
        raise InvalidInput(f"{filename}: duplicate {kind} name(s): {_listing([repr(n) for n in duplicated])}")


def _sample_ids(column: pa.ChunkedArray, filename: str) -> list[str]:
    """The ids as Python strings; refuse missing, blank and duplicate ids."""
    ids = column.to_pylist()
    blank = [str(i + 1) for i, sample in enumerate(ids) if sample is None or not sample.strip()]
    if blank:
        raise InvalidInput(f"{filename}: sample id missing in data row(s) {_listing(blank)}")
    duplicated = [sample for sample, count in Counter(ids).items() if count > 1]
    if duplicated:
        raise InvalidInput(f"{filename}: duplicate sample id(s): {_listing([repr(s) for s in duplicated])}")
    return ids


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


def _raise_first_bad_cell(batches: Iterable[pa.RecordBatch], filename: str, genes: list[str]) -> None:
    """Raise for the first cell, in reading order, that is not a finite float32; return if there is none.

    Each batch holds the sample ids then one text column per gene.
    """
    offset = 0
    for batch in batches:
        found = _first_bad_cell(batch.columns[1:], batch.num_rows)
        if found is not None:
            row, column, raw = found
            sample = batch.column(0)[row].as_py()
            raise InvalidInput(
                f"{filename}: sample {sample!r} (data row {offset + row + 1}), gene {genes[column]!r}: "
                f"{_describe_bad_value(raw)}; every expression value must be a finite number"
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
        return f"missing value {_clip(raw)!r}"
    try:
        number = float(text)
    except ValueError:
        return f"non-numeric value {_clip(raw)!r}"
    if math.isnan(number):
        return f"missing value {_clip(raw)!r} (NaN)"
    if math.isinf(number):
        return f"infinite value {_clip(raw)!r}"
    if abs(number) > float(np.finfo(np.float32).max):
        return f"value {_clip(raw)!r} is outside the float32 range"
    return f"non-numeric value {_clip(raw)!r}"


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown} and {len(items) - _LISTED} more"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return _clip(text.splitlines()[0] if text else type(exc).__name__, 300)
