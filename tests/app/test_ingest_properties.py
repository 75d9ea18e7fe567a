"""Property-based tests of every reader (hypothesis).

Random matrices round-trip through each format and orientation bit for bit. Random malformed input
(garbage bytes, ragged rows, non-numeric cells, empty files, duplicate ids, broken GCT headers, damaged
.h5ad files) only ever raises InvalidInput, never another exception; through the API the same cases get a
4xx with a message, never a 5xx.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cohorts.parsing import ANNOTATION_COLUMN_NAMES, ExpressionMatrix, parse_expression
from app.errors import InvalidInput
from models.genes import normalise_gene_id

FIXTURES = Path(__file__).resolve().parent / "data"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(FAST, max_examples=25)
API = settings(
    max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- random matrices ---------------------------------------------------------------------------------------

_ID_ALPHABET = st.characters(
    codec="utf-8", categories=("L", "N"), include_characters="-_.:", exclude_characters="\x00"
)
names = st.text(_ID_ALPHABET, min_size=1, max_size=10).filter(
    lambda s: s.strip() == s and s.lower() not in ANNOTATION_COLUMN_NAMES and not s.startswith("#")
)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def matrices(draw: st.DrawFn, *, max_samples: int = 6, max_genes: int = 6) -> ExpressionMatrix:
    n_samples = draw(st.integers(1, max_samples))
    n_genes = draw(st.integers(1, max_genes))
    sample_ids = draw(st.lists(names, min_size=n_samples, max_size=n_samples, unique=True))
    genes = draw(st.lists(names, min_size=n_genes, max_size=n_genes, unique_by=str.upper))
    cells = draw(st.lists(finite32, min_size=n_samples * n_genes, max_size=n_samples * n_genes))
    values = np.asarray(cells, dtype=np.float32).reshape(n_samples, n_genes)
    return ExpressionMatrix(np.ascontiguousarray(values), sample_ids, genes)


def _text(value: np.float32) -> str:
    return str(np.float32(value))  # the shortest text that reads back as the same float32


def delimited(matrix: ExpressionMatrix, *, delimiter: str, genes_as_rows: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    if genes_as_rows:
        writer.writerow(["gene_id", *matrix.sample_ids])
        for j, gene in enumerate(matrix.genes):
            writer.writerow([gene, *(_text(v) for v in matrix.values[:, j])])
    else:
        writer.writerow(["sample_id", *matrix.genes])
        for i, sample in enumerate(matrix.sample_ids):
            writer.writerow([sample, *(_text(v) for v in matrix.values[i])])
    return out.getvalue()


def gct(matrix: ExpressionMatrix, *, version: str) -> str:
    lines = []
    if version == "1.2":
        lines += ["#1.2", f"{len(matrix.genes)}\t{len(matrix.sample_ids)}"]
        lines += ["\t".join(["Name", "Description", *matrix.sample_ids])]
        meta: list[str] = ["na"]
    else:
        lines += ["#1.3", f"{len(matrix.genes)}\t{len(matrix.sample_ids)}\t1\t1"]
        lines += ["\t".join(["id", "kind", *matrix.sample_ids])]
        lines += ["\t".join(["batch", "na", *("b1" for _ in matrix.sample_ids)])]
        meta = ["coding"]
    for j, gene in enumerate(matrix.genes):
        lines.append("\t".join([gene, *meta, *(_text(v) for v in matrix.values[:, j])]))
    return "\n".join(lines) + "\n"


def write_h5ad(path: Path, matrix: ExpressionMatrix, layout: str) -> None:
    """An AnnData file as anndata >= 0.7 lays it out (see the fixtures written by anndata itself)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        if layout == "dense":
            f.create_dataset("X", data=matrix.values)
        else:
            sparse = sp.csr_matrix(matrix.values) if layout == "csr" else sp.csc_matrix(matrix.values)
            group = f.create_group("X")
            group.attrs.update({"encoding-type": f"{layout}_matrix", "encoding-version": "0.1.0",
                                "shape": np.array(matrix.values.shape)})
            for key in ("data", "indices", "indptr"):
                group.create_dataset(key, data=getattr(sparse, key))
        for part, ids in (("obs", matrix.sample_ids), ("var", matrix.genes)):
            group = f.create_group(part)
            group.attrs.update({"_index": "_index", "encoding-type": "dataframe", "encoding-version": "0.2.0",
                                "column-order": np.array([], dtype="S1")})
            group.create_dataset("_index", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())


@dataclass(frozen=True)
class Format:
    name: str  # file name given to the reader
    write: Callable[[ExpressionMatrix, Path], None]
    exact_zero_sign: bool = True  # sparse storage loses the sign of -0.0


def _write_text(text_of: Callable[[ExpressionMatrix], str], gz: bool) -> Callable[[ExpressionMatrix, Path], None]:
    def write(matrix: ExpressionMatrix, path: Path) -> None:
        data = text_of(matrix).encode()
        path.write_bytes(gzip.compress(data, 1) if gz else data)

    return write


def _write_parquet(genes_as_rows: bool) -> Callable[[ExpressionMatrix, Path], None]:
    def write(matrix: ExpressionMatrix, path: Path) -> None:
        if genes_as_rows:
            columns = {"gene_id": matrix.genes} | {s: matrix.values[i] for i, s in enumerate(matrix.sample_ids)}
        else:
            columns = {"sample_id": matrix.sample_ids} | {g: matrix.values[:, j] for j, g in enumerate(matrix.genes)}
        pq.write_table(pa.table(columns), path)

    return write


FORMATS = [
    Format("m.csv", _write_text(lambda m: delimited(m, delimiter=",", genes_as_rows=False), False)),
    Format("m.csv", _write_text(lambda m: delimited(m, delimiter=",", genes_as_rows=True), False)),
    Format("m.tsv.gz", _write_text(lambda m: delimited(m, delimiter="\t", genes_as_rows=False), True)),
    Format("m.txt.gz", _write_text(lambda m: delimited(m, delimiter="\t", genes_as_rows=True), True)),
    Format("m.parquet", _write_parquet(False)),
    Format("m.parquet", _write_parquet(True)),
    Format("m.gct", _write_text(lambda m: gct(m, version="1.2"), False)),
    Format("m.gct.gz", _write_text(lambda m: gct(m, version="1.3"), True)),
    Format("m.h5ad", lambda m, p: write_h5ad(p, m, "dense")),
    Format("m.h5ad", lambda m, p: write_h5ad(p, m, "csr"), exact_zero_sign=False),
    Format("m.h5ad", lambda m, p: write_h5ad(p, m, "csc"), exact_zero_sign=False),
]
FORMAT_IDS = [
    "csv-rows", "csv-columns", "tsv.gz-rows", "txt.gz-columns", "parquet-rows", "parquet-columns",
    "gct-1.2", "gct-1.3.gz", "h5ad-dense", "h5ad-csr", "h5ad-csc",
]


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_random_matrices_round_trip(tmp_path_factory: pytest.TempPathFactory, fmt: Format) -> None:
    folder = tmp_path_factory.mktemp("roundtrip")

    @ROUND_TRIP
    @given(matrix=matrices())
    def round_trip(matrix: ExpressionMatrix) -> None:
        if not fmt.exact_zero_sign:
            matrix = ExpressionMatrix(matrix.values + np.float32(0.0), matrix.sample_ids, matrix.genes)
        path = folder / fmt.name
        fmt.write(matrix, path)

        back = parse_expression(path, fmt.name).matrix

        assert back.values.tobytes() == matrix.values.tobytes()
        assert back.sample_ids == matrix.sample_ids
        assert back.genes == matrix.genes

    round_trip()


# --- malformed input ---------------------------------------------------------------------------------------

EXTENSIONS = ["m.csv", "m.tsv", "m.txt", "m.csv.gz", "m.tsv.gz", "m.parquet", "m.gct", "m.gct.gz", "m.h5ad", "m.xlsx"]
words = st.text(st.characters(codec="utf-8", categories=("L",)), min_size=1, max_size=6).filter(
    lambda w: w.strip().lower() not in ("nan", "inf", "infinity", "e") and w.strip() == w
)


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(file name, content, what is wrong) for a file every reader must refuse."""
    kind = draw(st.sampled_from(["ragged", "word", "empty", "header", "duplicate_id", "non_finite", "gct", "h5ad"]))
    matrix = draw(matrices(max_samples=4, max_genes=4).filter(lambda m: len(m.sample_ids) >= 2))
    delimiter, name = draw(st.sampled_from([(",", "m.csv"), ("\t", "m.tsv")]))
    text = delimited(matrix, delimiter=delimiter, genes_as_rows=False)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    row = draw(st.integers(1, len(rows) - 1))
    column = draw(st.integers(1, len(rows[0]) - 1))
    if kind == "ragged":
        rows[row] = rows[row][:-1] if draw(st.booleans()) else [*rows[row], "1"]
    elif kind == "word":
        rows[row][column] = draw(words)
    elif kind == "non_finite":
        rows[row][column] = draw(st.sampled_from(["NaN", "nan", "inf", "-Infinity", "NA", "", "1e39", "null"]))
    elif kind == "duplicate_id":
        rows[row][0] = rows[1 if row != 1 else 2][0]
    elif kind == "empty":
        return name, b"", kind
    elif kind == "header":
        rows = rows[:1]
    elif kind == "gct":
        text = gct(matrix, version=draw(st.sampled_from(["1.2", "1.3"]))).split("\n")
        line = draw(st.integers(0, 2))
        text[line] = draw(st.sampled_from(["", "#1.4", "x\ty", "3", "1\t2\t3", "-1\t-1\t-1\t-1"]))
        return "m.gct", "\n".join(text).encode(), kind
    elif kind == "h5ad":
        content = (FIXTURES / "counts_csr.h5ad").read_bytes()
        cut = draw(st.integers(0, len(content) - 1))
        return "m.h5ad", content[:cut], kind
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return name, out.getvalue().encode(), kind


def _refused(path: Path, name: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_expression(path, name)
    return caught.value.message


@FAST
@given(case=malformed())
def test_malformed_files_raise_invalid_input(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, bytes, str]
) -> None:
    name, content, kind = case
    path = tmp_path_factory.mktemp("bad") / name
    path.write_bytes(content)

    message = _refused(path, name)

    assert name in message, message


@FAST
@given(name=st.sampled_from(EXTENSIONS), content=st.binary(max_size=300))
def test_garbage_bytes_never_raise_anything_but_invalid_input(
    tmp_path_factory: pytest.TempPathFactory, name: str, content: bytes
) -> None:
    path = tmp_path_factory.mktemp("garbage") / name
    path.write_bytes(content)
    try:
        parse_expression(path, name)
    except InvalidInput as exc:
        assert exc.message


@FAST
@given(content=st.binary(min_size=1, max_size=64), offset=st.integers(0, 29_000))
def test_damaged_h5ad_never_raises_anything_but_invalid_input(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, offset: int
) -> None:
    data = bytearray((FIXTURES / "counts_csr.h5ad").read_bytes())
    data[offset : offset + len(content)] = content
    path = tmp_path_factory.mktemp("damaged") / "d.h5ad"
    path.write_bytes(bytes(data))
    try:
        parse_expression(path, "d.h5ad")
    except InvalidInput as exc:
        assert exc.message


# --- the same through the API ------------------------------------------------------------------------------


@API
@given(case=malformed())
def test_malformed_uploads_get_a_4xx_with_a_message(client: TestClient, case: tuple[str, bytes, str]) -> None:
    name, content, _ = case

    response = client.post("/cohorts", files={"expression": (name, content)})

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]


@API
@given(matrix=matrices(max_samples=3, max_genes=4).filter(lambda m: len(m.genes) >= 2), data=st.data())
def test_duplicate_genes_after_normalisation_get_a_4xx(
    client: TestClient, matrix: ExpressionMatrix, data: st.DataObject
) -> None:
    genes = list(matrix.genes)
    copy = data.draw(st.integers(1, len(genes) - 1))
    variants = [v for v in (genes[0].lower(), genes[0].upper(), f" {genes[0]}", genes[0])
                if normalise_gene_id(v) == normalise_gene_id(genes[0])]  # Unicode case mapping is not symmetric
    genes[copy] = data.draw(st.sampled_from(variants))
    text = delimited(ExpressionMatrix(matrix.values, matrix.sample_ids, genes), delimiter=",", genes_as_rows=False)

    response = client.post("/cohorts", files={"expression": ("m.csv", text.encode())})

    assert response.status_code == 422, response.text
    assert "duplicate gene id" in response.json()["error"]["message"]


@API
@given(name=st.sampled_from(EXTENSIONS), content=st.binary(max_size=200))
def test_garbage_uploads_never_get_a_5xx(client: TestClient, name: str, content: bytes) -> None:
    response = client.post("/cohorts", files={"expression": (name, content)})

    assert response.status_code == 201 or 400 <= response.status_code < 500, response.text
    if response.status_code != 201:
        assert response.json()["error"]["message"]


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("sample_id,A\nx,1\ny,2\nx,3\n")
    assert "duplicate sample id(s): 'x'" in _refused(path, "d.csv")

