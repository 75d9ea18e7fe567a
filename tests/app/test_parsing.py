"""Upload parsing: real cohorts through every format, the canonical store, and each user error."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.cohorts import parsing
from app.cohorts.parsing import (
    ExpressionMatrix,
    check_labels,
    matrix_checksum,
    read_expression,
    read_labels,
    read_matrix,
    write_matrix,
)
from app.cohorts.service import harmonise
from app.errors import InvalidInput
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA


@functools.cache
def _reference(cohort: str) -> tuple[pd.DataFrame, ExpressionMatrix]:
    """The shared cohort as pandas reads it, and the matrix every format must read back as (do not mutate)."""
    frame = pd.read_parquet(DATA / cohort / "expression.parquet")
    matrix = ExpressionMatrix(
        values=np.ascontiguousarray(frame.to_numpy(dtype=np.float32)),
        sample_ids=[str(s) for s in frame.index],
        genes=[str(g) for g in frame.columns],
    )
    return frame, matrix


def _write(frame: pd.DataFrame, path: Path) -> None:
    name = path.name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        separator = "," if ".csv" in name else "\t"
        frame.to_csv(path, sep=separator, compression={"method": "infer", "compresslevel": 1})


def _text_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, name: str, text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        read_expression(_text_file(tmp_path, name, text), name)
    return caught.value.message


def _assert_same(actual: ExpressionMatrix, expected: ExpressionMatrix) -> None:
    assert actual.values.dtype == np.float32
    assert actual.values.flags.c_contiguous
    assert actual.values.shape == expected.values.shape
    assert actual.values.tobytes() == expected.values.tobytes()
    assert actual.sample_ids == expected.sample_ids
    assert actual.genes == expected.genes
    assert matrix_checksum(actual) == matrix_checksum(expected)


# --- real cohorts through every format --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cohort", "name"),
    [
        *(("tissue_symbols", f"expression.{ext}") for ext in ("csv", "tsv", "txt", "csv.gz", "tsv.gz", "parquet")),
        *(("all_leukemia", f"expression.{ext}") for ext in ("csv", "tsv.gz", "parquet")),
    ],
)
def test_real_cohort_reads_back_identically_from_every_format(tmp_path: Path, cohort: str, name: str) -> None:
    frame, expected = _reference(cohort)
    path = tmp_path / name
    _write(frame, path)

    matrix = read_expression(path, name)

    _assert_same(matrix, expected)
    if cohort == "all_leukemia":
        assert matrix.sample_ids[:3] == ["01005", "01010", "03002"]


def test_leading_zero_sample_ids_stay_strings(tmp_path: Path) -> None:
    path = _text_file(tmp_path, "z.csv", "sample_id,A\n01005,1\n0001,2\n1e3,3\n")

    matrix = read_expression(path, "z.csv")

    assert matrix.sample_ids == ["01005", "0001", "1e3"]


def test_shared_parquet_reads_with_its_sample_id_index() -> None:
    frame, expected = _reference("tissue_symbols")

    matrix = read_expression(DATA / "tissue_symbols" / "expression.parquet", "expression.parquet")

    _assert_same(matrix, expected)
    assert "sample_id" not in matrix.genes
    assert matrix.values.shape == (189, 500)


def test_parquet_with_ids_in_the_first_column(tmp_path: Path) -> None:
    frame, expected = _reference("tissue_symbols")
    frame.reset_index().to_parquet(tmp_path / "flat.parquet")

    _assert_same(read_expression(tmp_path / "flat.parquet", "flat.parquet"), expected)


def test_extension_is_read_from_the_given_filename_case_insensitively(tmp_path: Path) -> None:
    path = _text_file(tmp_path, "upload.bin", "id\tA\tB\ns1\t1.5\t-2\n")

    matrix = read_expression(path, "Cohort.TSV")

    assert matrix.values.tolist() == [[1.5, -2.0]]
    assert matrix.genes == ["A", "B"]


def test_quoted_fields_and_crlf_line_ends(tmp_path: Path) -> None:
    path = _text_file(tmp_path, "q.csv", '"sample_id","GENE,1","B"\r\n"007",1,"2.5"\r\n')

    matrix = read_expression(path, "q.csv")

    assert matrix.sample_ids == ["007"]
    assert matrix.genes == ["GENE,1", "B"]
    assert matrix.values.tolist() == [[1.0, 2.5]]


# --- canonical store and checksum ---------------------------------------------------------------------------


def test_store_round_trip_is_bit_identical(tmp_path: Path) -> None:
    _, expected = _reference("all_leukemia")

    write_matrix(expected, tmp_path / "matrix.arrow")
    matrix = read_matrix(tmp_path / "matrix.arrow")

    _assert_same(matrix, expected)


def test_store_keeps_edge_values_and_awkward_names(tmp_path: Path) -> None:
    tiny = np.finfo(np.float32).smallest_subnormal
    values = np.array([[-0.0, tiny, np.finfo(np.float32).max], [1e-38, -1.5, 3.0]], dtype=np.float32)
    matrix = ExpressionMatrix(values=values, sample_ids=["01", "β-2"], genes=["sample_id", "G 2", "SEPT10"])

    write_matrix(matrix, tmp_path / "m.arrow")
    back = read_matrix(tmp_path / "m.arrow")

    assert back.values.tobytes() == values.tobytes()
    assert np.signbit(back.values[0, 0])
    assert back.sample_ids == ["01", "β-2"]
    assert back.genes == ["sample_id", "G 2", "SEPT10"]


def test_read_matrix_refuses_a_foreign_file(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0]}).to_feather(tmp_path / "other.arrow")

    with pytest.raises(ValueError, match="not an exprssl expression-matrix store"):
        read_matrix(tmp_path / "other.arrow")


def test_checksum_changes_with_values_ids_genes_and_boundaries() -> None:
    values = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    base = ExpressionMatrix(values=values, sample_ids=["a", "bc"], genes=["g1", "g2"])
    changed_value = values.copy()
    changed_value[1, 1] = np.nextafter(np.float32(4.0), np.float32(5.0))
    variants = [
        ExpressionMatrix(values=changed_value, sample_ids=["a", "bc"], genes=["g1", "g2"]),
        ExpressionMatrix(values=values, sample_ids=["ab", "c"], genes=["g1", "g2"]),
        ExpressionMatrix(values=values, sample_ids=["bc", "a"], genes=["g1", "g2"]),
        ExpressionMatrix(values=values, sample_ids=["a", "bc"], genes=["g1", "g3"]),
        ExpressionMatrix(values=values.reshape(1, 4).copy(), sample_ids=["a"], genes=["bc", "g1", "g2", "x"]),
    ]

    checksums = {matrix_checksum(base), *(matrix_checksum(v) for v in variants)}

    assert len(checksums) == 1 + len(variants)
    assert len(matrix_checksum(base)) == 64
    assert matrix_checksum(base) == matrix_checksum(
        ExpressionMatrix(values=values.copy(), sample_ids=["a", "bc"], genes=["g1", "g2"])
    )


# --- expression errors --------------------------------------------------------------------------------------


def test_unknown_extension_lists_the_accepted_ones(tmp_path: Path) -> None:
    message = _error(tmp_path, "cohort.xlsx", "id,A\ns1,1\n")

    assert "cohort.xlsx" in message
    for extension in (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz", ".parquet"):
        assert extension in message


def test_empty_file(tmp_path: Path) -> None:
    assert "e.csv is empty" in _error(tmp_path, "e.csv", "")


def test_header_without_rows(tmp_path: Path) -> None:
    assert "no data rows" in _error(tmp_path, "h.csv", "sample_id,A,B\n")


def test_no_gene_columns(tmp_path: Path) -> None:
    message = _error(tmp_path, "n.csv", "sample_id\ns1\ns2\n")

    assert "n.csv" in message and "no gene columns" in message


def test_wrong_delimiter_gets_a_hint(tmp_path: Path) -> None:
    message = _error(tmp_path, "semi.csv", "sample_id;A;B\ns1;1;2\n")

    assert "no gene columns" in message and "semicolon-separated" in message


def test_first_non_numeric_cell_in_reading_order(tmp_path: Path) -> None:
    text = "sample_id,A,B,C\ns1,1,2,3\ns2,4,5,oops\ns3,bad,6,7\n"

    message = _error(tmp_path, "x.csv", text)

    assert "x.csv" in message
    assert "'s2'" in message and "'C'" in message and "'oops'" in message
    assert "data row 2" in message
    assert "bad" not in message


def test_leftmost_bad_cell_of_a_row_is_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, "x.tsv", "id\tA\tB\tC\nS9\t1\tzz\tyy\n")

    assert "'S9'" in message and "'B'" in message and "'zz'" in message


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("NaN", "missing value 'NaN'"),
        ("nan", "missing value 'nan'"),
        ("NA", "missing value 'NA'"),
        ("", "empty cell"),
        ("inf", "infinite value 'inf'"),
        ("-Infinity", "infinite value '-Infinity'"),
        ("1e40", "outside the float32 range"),
        ("1,5", None),
    ],
)
def test_missing_and_non_finite_cells_are_refused(tmp_path: Path, cell: str, words: str | None) -> None:
    text = f'sample_id,GAPDH,ACTB\nsA,1,2\nsB,3,"{cell}"\n'

    message = _error(tmp_path, "m.csv", text)

    assert "'sB'" in message and "'ACTB'" in message
    assert words is None or words in message
    if words is None:
        assert "non-numeric value '1,5'" in message


def test_bad_cell_found_in_a_later_batch_has_the_right_row(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(parsing, "_SCAN_CELLS", 8)  # two rows per scanned batch
    rows = [f"s{i},{i},{i + 0.5}" for i in range(1, 21)]
    rows[14] = "s15,7,x15"

    message = _error(tmp_path, "b.csv.gz", "sample_id,A,B\n" + "\n".join(rows) + "\n")

    assert "'s15'" in message and "data row 15" in message and "'x15'" in message and "'B'" in message


def test_duplicate_sample_ids_are_listed(tmp_path: Path) -> None:
    message = _error(tmp_path, "d.csv", "sample_id,A\ns1,1\ns2,2\ns1,3\ns3,4\ns2,5\n")

    assert "duplicate sample id" in message and "'s1'" in message and "'s2'" in message
    assert "'s3'" not in message


def test_duplicate_gene_names_are_kept_for_harmonisation_to_decide(tmp_path: Path) -> None:
    path = _text_file(tmp_path, "d.tsv", "sample_id\tTP53\tMYC\tTP53\tEGFR\ns1\t1\t2\t3\t4\n")

    matrix = read_expression(path, "d.tsv")

    assert matrix.genes == ["TP53", "MYC", "TP53", "EGFR"]
    with pytest.raises(InvalidInput) as caught:
        harmonise(matrix, "refuse")
    message = caught.value.message
    assert "duplicate gene id" in message and "TP53: 'TP53', 'TP53'" in message
    assert "'MYC'" not in message and "duplicate_genes=sum" in message


def test_empty_sample_id(tmp_path: Path) -> None:
    message = _error(tmp_path, "d.csv", "sample_id,A\ns1,1\n,2\n")

    assert "sample id missing" in message and "data row(s) 2" in message


def test_empty_gene_name(tmp_path: Path) -> None:
    message = _error(tmp_path, "d.csv", "sample_id,A,,B\ns1,1,2,3\n")

    assert "gene name missing" in message and "column(s) 3" in message


def test_row_with_wrong_number_of_fields(tmp_path: Path) -> None:
    message = _error(tmp_path, "r.csv", "sample_id,A,B\ns1,1,2\ns2,3\ns3,4,5\n")

    assert "'s2'" in message and "2 fields" in message and "header has 3" in message


def test_header_without_a_sample_id_name_gets_a_hint(tmp_path: Path) -> None:
    message = _error(tmp_path, "r.tsv", "A\tB\ns1\t1\t2\n")

    assert "'s1'" in message and "sample-id column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes("sample_id,Gène\ns1,1\n".encode("latin-1"))

    with pytest.raises(InvalidInput, match="l.csv: the header is not UTF-8"):
        read_expression(path, "l.csv")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "c.csv.gz"
    path.write_bytes(b"not gzip at all")

    with pytest.raises(InvalidInput, match="c.csv.gz: could not read the header"):
        read_expression(path, "c.csv.gz")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 but not really")

    with pytest.raises(InvalidInput, match="p.parquet: could not read the Parquet file"):
        read_expression(path, "p.parquet")


def test_parquet_missing_value_names_sample_and_gene(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"A": [1.0, 2.0], "B": [3.0, np.nan]}, index=pd.Index(["x1", "x2"], name="sample_id"), dtype="float32"
    )
    frame.to_parquet(tmp_path / "p.parquet")  # pandas stores NaN as null

    with pytest.raises(InvalidInput) as caught:
        read_expression(tmp_path / "p.parquet", "p.parquet")

    assert caught.value.message.startswith("p.parquet: sample 'x2' (data row 2), gene 'B': missing")


@pytest.mark.parametrize(("bad", "words"), [(np.nan, "missing value 'nan'"), (-np.inf, "infinite value '-inf'")])
def test_parquet_nan_and_inf_are_refused(tmp_path: Path, bad: float, words: str) -> None:
    table = pa.table(
        {
            "sample_id": ["x1", "x2"],
            "A": pa.array(np.array([1.0, 2.0], dtype=np.float32)),
            "B": pa.array(np.array([3.0, bad], dtype=np.float32), from_pandas=False),
        }
    )
    assert table.column("B").null_count == 0
    pq.write_table(table, tmp_path / "p.parquet")

    with pytest.raises(InvalidInput) as caught:
        read_expression(tmp_path / "p.parquet", "p.parquet")

    message = caught.value.message
    assert "'x2'" in message and "'B'" in message and words in message


def test_parquet_text_column_with_a_word(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sample_id": ["x1", "x2"], "A": ["1.5", "high"], "B": [1, 2]})
    frame.to_parquet(tmp_path / "p.parquet", index=False)

    with pytest.raises(InvalidInput) as caught:
        read_expression(tmp_path / "p.parquet", "p.parquet")

    assert "'x2'" in caught.value.message and "'A'" in caught.value.message and "'high'" in caught.value.message


def test_parquet_duplicate_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame({"A": [1.0, 2.0]}, index=pd.Index(["x1", "x1"], name="sample_id"))
    frame.to_parquet(tmp_path / "p.parquet")

    with pytest.raises(InvalidInput, match="duplicate sample id.*'x1'"):
        read_expression(tmp_path / "p.parquet", "p.parquet")


def test_parquet_without_an_id_column_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"G1": [1.5, 2.5], "G2": [3.0, 4.0]}).to_parquet(tmp_path / "noid.parquet")

    with pytest.raises(InvalidInput) as caught:
        read_expression(tmp_path / "noid.parquet", "noid.parquet")

    assert "'G1'" in caught.value.message and "not sample ids" in caught.value.message


def test_parquet_categorical_ids_are_read_as_text(tmp_path: Path) -> None:
    genes = pd.CategoricalIndex(["TP53", "MYC", "EGFR"], name="gene_id")
    frame = pd.DataFrame({"s1": [1.0, 2.0, 3.0], "s2": [4.0, 5.0, 6.0]}, index=genes)
    frame.to_parquet(tmp_path / "genes.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "genes.parquet").field("gene_id").type)

    matrix = read_expression(tmp_path / "genes.parquet", "genes.parquet")

    assert matrix.genes == ["TP53", "MYC", "EGFR"] and matrix.sample_ids == ["s1", "s2"]
    assert matrix.values.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    samples = frame.T.rename_axis("sample_id")
    samples.index = pd.CategoricalIndex(samples.index, name="sample_id")
    samples.to_parquet(tmp_path / "samples.parquet")
    assert read_expression(tmp_path / "samples.parquet", "samples.parquet").sample_ids == ["s1", "s2"]


def test_parquet_gene_id_column_of_another_type_is_refused_as_gene_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame({"gene_id": [1.5, 2.5], "s1": [1.0, 2.0], "s2": [3.0, 4.0]})
    frame.to_parquet(tmp_path / "g.parquet", index=False)

    with pytest.raises(InvalidInput) as caught:
        read_expression(tmp_path / "g.parquet", "g.parquet")

    assert "the id column 'gene_id' holds double, not gene ids" in caught.value.message


def test_parquet_leftover_integer_index_is_not_taken_for_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sample_id": ["a", "b", "c"], "G1": [1.0, 2.0, 3.0]}).iloc[[2, 0]]
    frame.to_parquet(tmp_path / "f.parquet")  # stores the index [2, 0] as __index_level_0__

    matrix = read_expression(tmp_path / "f.parquet", "f.parquet")

    assert matrix.sample_ids == ["c", "a"]
    assert matrix.genes == ["G1"]
    assert matrix.values.tolist() == [[3.0], [1.0]]


def test_parquet_integer_columns_are_converted(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "G1": [0, 7], "G2": [1.25, 2.0]})
    frame.to_parquet(tmp_path / "c.parquet", index=False)

    matrix = read_expression(tmp_path / "c.parquet", "c.parquet")

    assert matrix.sample_ids == ["a", "b"]
    assert matrix.genes == ["G1", "G2"]
    assert matrix.values.dtype == np.float32
    assert matrix.values.tolist() == [[0.0, 1.25], [7.0, 2.0]]


# --- labels ---------------------------------------------------------------------------------------------------


def test_real_labels_keep_string_ids_and_missing_values() -> None:
    path = DATA / "all_leukemia" / "labels.csv"

    labels = read_labels(path, "labels.csv")

    expected = pd.read_csv(path, dtype=str, index_col=0)
    assert labels.index.name == "sample_id"
    assert list(labels.index) == list(expected.index)
    assert labels.index[0] == "01005"
    assert list(labels.columns) == list(expected.columns)
    assert "BT" in labels.columns and "mol.biol" in labels.columns
    assert labels.isna().to_numpy().tolist() == expected.isna().to_numpy().tolist()
    assert labels.isna().to_numpy().any()
    filled = labels.astype(object).where(labels.notna(), None).to_numpy().tolist()
    assert filled == expected.astype(object).where(expected.notna(), None).to_numpy().tolist()
    assert labels["BT"].value_counts()["B2"] == (expected["BT"] == "B2").sum()


def test_labels_gzip_tsv_with_blank_cells(tmp_path: Path) -> None:
    path = _text_file(tmp_path, "l.tsv.gz", "id\ttissue\tbatch\tnote\n007\tliver\t\tNA\n008\t\t2\t\n")

    labels = read_labels(path, "l.tsv.gz")

    assert list(labels.columns) == ["tissue", "batch", "note"]
    assert [str(dtype) for dtype in labels.dtypes] == ["object"] * 3
    assert labels["note"].isna().all()
    assert labels["tissue"].value_counts().to_dict() == {"liver": 1}
    assert list(labels.index) == ["007", "008"]
    assert labels.loc["007", "tissue"] == "liver"
    assert pd.isna(labels.loc["007", "batch"]) and pd.isna(labels.loc["008", "tissue"])
    assert labels.loc["008", "batch"] == "2"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is empty"),
        ("sample_id,tissue\n", "no data rows"),
        ("sample_id\ns1\n", "no phenotype column"),
        ("sample_id,tissue\ns1,liver\ns1,colon\n", "duplicate sample id(s): 's1'"),
        ("sample_id,tissue,tissue\ns1,liver,colon\n", "duplicate column name(s): 'tissue'"),
        ("sample_id,tissue\ns1,liver,extra\n", "'s1' has 3 fields but the header has 2"),
    ],
)
def test_label_errors(tmp_path: Path, text: str, words: str) -> None:
    path = _text_file(tmp_path, "labels.csv", text)

    with pytest.raises(InvalidInput) as caught:
        read_labels(path, "labels.csv")

    assert words in caught.value.message
    assert "labels.csv" in caught.value.message


def test_labels_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="labels.parquet.*\\.csv"):
        read_labels(_text_file(tmp_path, "labels.parquet", "x"), "labels.parquet")


# --- check_labels --------------------------------------------------------------------------------------------


def _labels(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"tissue": ["liver"] * len(ids), "donor": ["d"] * len(ids)}, index=pd.Index(ids, name="sample_id")
    )


def test_unlabelled_matrix_samples_are_allowed() -> None:
    check_labels(_labels(["s1", "s3"]), ["s1", "s2", "s3", "s4"], group_column="donor")


def test_unknown_labelled_samples_are_listed_with_their_count() -> None:
    unknown = ["s2 ", *(f"u{i:02d}" for i in range(11))]

    with pytest.raises(InvalidInput) as caught:
        check_labels(_labels(["s1", *unknown]), ["s1", "s2"], group_column=None)

    message = caught.value.message
    assert message.startswith("12 labelled sample id(s) are not in the expression matrix: 's2 ', 'u00'")
    assert "'u08'" in message and "u09" not in message and "and 2 more" in message
    assert "s1" not in message


def test_missing_group_column_is_named_with_the_available_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_labels(_labels(["s1"]), ["s1"], group_column="patient")

    assert "'patient'" in caught.value.message
    assert "'tissue'" in caught.value.message and "'donor'" in caught.value.message
