"""Hostile uploads (a security review's findings): each is refused with 422 naming the file and where,
without reading more than the limits allow, and nothing is stored. Limits are lowered so that each bomb
stays a few MB."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.cohorts import names, parsing
from app.config import get_settings

MATRIX = b"sample_id,TP53,EGFR\ns0,1,2\ns1,3,4\ns2,5,6\n"


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """At most 10 samples and 10 genes: lines longer than (10 + 64) x 403 characters are refused."""
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_SAMPLES", "10")
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_GENES", "10")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def refused(client: TestClient, files: dict[str, tuple[str, bytes]]) -> str:
    """The 422 message for an upload of ``files``, having checked that nothing was stored."""
    response = client.post("/cohorts", files=files)
    assert response.status_code == 422, response.text[:500]
    assert client.get("/cohorts").json() == []
    message: str = response.json()["error"]["message"]
    return message


def test_a_line_without_a_break_is_refused_before_it_is_read_whole(client: TestClient, small_limits: None) -> None:
    endless = gzip.compress(b"sample_id" + b",g" * 1_000_000)  # 2 MB and no line break
    data_row = gzip.compress(b"sample_id,g1\n" + b"s" * 2_000_000 + b",1\n")
    gct = gzip.compress(b"#1.2\n1\t1\n" + b"N" * 2_000_000)

    assert refused(client, {"expression": ("m.csv.gz", endless)}).startswith(
        "m.csv.gz: line 1 is longer than 29,822 characters"
    )
    assert refused(client, {"expression": ("m.csv.gz", data_row)}).startswith("m.csv.gz: line 2 is longer than")
    assert refused(client, {"expression": ("m.gct.gz", gct)}).startswith("m.gct.gz: line 3 is longer than")


def test_a_gct_declaring_more_column_metadata_than_it_holds_is_refused(client: TestClient) -> None:
    lying = b"#1.3\n1\t1\t0\t1000000000\nid\tS1\ng1\t1\n"  # 40 bytes declaring a billion metadata lines
    short = b"#1.3\n1\t1\t0\t5\nid\tS1\ntissue\tkidney\ng1\t1\n"

    assert refused(client, {"expression": ("m.gct", lying)}) == (
        "m.gct: the GCT 1.3 dimensions line declares 1,000,000,000 column-metadata lines; at most 1,000 are accepted"
    )
    assert refused(client, {"expression": ("m.gct", short)}) == (
        "m.gct: the file ends after 2 of the 5 column-metadata lines its dimensions line declares"
    )


def test_gct_header_and_column_metadata_lines_are_bounded_by_the_declared_columns(client: TestClient) -> None:
    head = b"#1.3\n1\t3\t0\t1\nid\tS1\tS2\tS3\n"
    wide_meta = gzip.compress(head + b"tissue\t" + b"ab\t" * 500_000 + b"\nG1\t1\t2\t3\n")  # 1.5 MB, 4 fields declared
    many_fields = head + b"tissue" + b"\ta" * 4 + b"\nG1\t1\t2\t3\n"  # 5 fields within the line's length
    wide_header = b"#1.2\n1\t1\nName\tDescription\tS1\tS2\nG1\td\t1\n"
    many_row_meta = b"#1.3\n1\t1\t1000000\t0\nid\tS1\nG1\t1\n"

    assert refused(client, {"expression": ("m.gct.gz", wide_meta)}) == (
        "m.gct.gz: line 4 is longer than 1,612 characters, more than the 4 fields the GCT dimensions line "
        "declares can hold"
    )
    assert refused(client, {"expression": ("m.gct", many_fields)}) == (
        "m.gct: line 4 has more than 4 fields, the number the GCT dimensions line declares"
    )
    assert refused(client, {"expression": ("m.gct", wide_header)}) == (
        "m.gct: line 3 has more than 3 fields, the number the GCT dimensions line declares"
    )
    assert refused(client, {"expression": ("m.gct", many_row_meta)}) == (
        "m.gct: the GCT 1.3 dimensions line declares 1,000,000 row-metadata columns; at most 64 are accepted"
    )


def test_a_label_table_is_bounded_in_rows_and_bytes(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = gzip.compress(b"sample_id,tissue\n" + b"s0,kidney\n" * 400_000)  # 4 MB of rows, 12 kB of gzip
    wide = b"sample_id,note\n" + b"".join(b"s%d,%s\n" % (i, b"x" * 2_000) for i in range(3))
    monkeypatch.setattr(parsing, "_MAX_LABEL_BYTES", 4_000)

    assert refused(client, {"expression": ("m.csv", MATRIX), "labels": ("l.csv.gz", bomb)}) == (
        "l.csv.gz: more than 3 data rows, but the expression matrix has 3 samples; each row must label one of them"
    )
    assert refused(client, {"expression": ("m.csv", MATRIX), "labels": ("l.csv", wide)}).startswith(
        "l.csv: more than 4,000 bytes of label text"
    )


def parquet_bytes(ids: pa.Array, values: pa.Array) -> bytes:
    """A two-column Parquet file without the stored Arrow schema, as a hostile writer would leave it."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"sample_id": ids, "g1": values}), buffer, store_schema=False)
    return buffer.getvalue()


def repeated(text: str, n: int) -> pa.DictionaryArray:
    """``text`` ``n`` times, dictionary-encoded: stored once however long ``n`` x ``text`` is."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text]))


def test_a_parquet_footer_over_the_limits_is_refused_before_a_column_is_read(
    client: TestClient, small_limits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    tall = parquet_bytes(repeated("s" * 1_000, 20_000), pa.array(np.ones(20_000, np.float32)))

    def unread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a column was read before the footer was checked")

    monkeypatch.setattr(parsing._ParquetSlices, "read", unread)
    assert refused(client, {"expression": ("m.parquet", tall)}).startswith(
        "m.parquet: 20,000 samples; this server accepts at most 10"
    )


def test_parquet_dictionary_bombs_are_refused_before_they_are_decoded(client: TestClient) -> None:
    long_id = parquet_bytes(repeated("s" * 1_000_000, 100), pa.array(np.ones(100, np.float32)))  # 100 MB decoded
    ids = pa.array([f"s{i}" for i in range(100)])
    big_value = parquet_bytes(ids, repeated("1" * 2_000_000, 100))  # its column chunk declares 2 MB for 100 rows
    long_value = parquet_bytes(ids, repeated("x" * 500_000, 100))

    assert refused(client, {"expression": ("id.parquet", long_id)}) == (
        "id.parquet: the id in data row 1 is longer than 200 characters"
    )
    assert refused(client, {"expression": ("big.parquet", big_value)}).startswith(
        "big.parquet: column 2 of row group 1 declares 2,000,"
    )
    assert refused(client, {"expression": ("long.parquet", long_value)}) == (
        f"long.parquet: sample 's0' (data row 1), gene 'g1': non-numeric value {'x' * 60 + '...'!r}; every "
        "expression value must be a finite number"
    )


def test_a_parquet_footer_whose_row_count_disagrees_with_its_row_groups_is_refused(client: TestClient) -> None:
    content = parquet_bytes(pa.array([f"s{i}" for i in range(10)]), pa.array(np.ones(10, np.float32)))
    footer = len(content) - 8 - int.from_bytes(content[-8:-4], "little")
    at = content.index(b"\x16\x14", footer)  # the file's num_rows, before its row groups': 10 as a zigzag varint
    patched = content[:at] + b"\x16\x7e" + content[at + 2 :]  # 63
    assert pq.ParquetFile(io.BytesIO(patched)).metadata.num_rows == 63

    assert refused(client, {"expression": ("m.parquet", patched)}) == (
        "m.parquet: the Parquet footer declares 63 rows but its row groups hold 10; the file is damaged"
    )


def test_a_header_of_too_many_columns_is_refused_while_it_is_counted(client: TestClient, small_limits: None) -> None:
    wide = b"sample_id" + b",g" * 1_000 + b"\ns0" + b",1" * 1_000 + b"\n"
    quoted = b'sample_id,"a,b"' + b',"g"' * 1_000 + b"\n"

    for content in (wide, quoted):
        assert refused(client, {"expression": ("m.csv", content)}) == (
            "m.csv: the header has more than 74 columns; this server accepts at most 10 samples or genes "
            "(EXPRSSL_MAX_UPLOAD_SAMPLES, EXPRSSL_MAX_UPLOAD_GENES)"
        )


def test_a_header_whose_quoted_name_runs_over_lines_is_refused(client: TestClient, small_limits: None) -> None:
    line = b"ab," * 50  # each line within the 74 columns counted; 100 of them would be 5,000 names
    spanning = b"sample_id," + line + b'"x\n' + b"".join(b'y",' + line + b'"x\n' for _ in range(100)) + b'y"\ns0,1\n'
    counts = b"# featureCounts\nGeneid\tS1\t\"S\n2\"\nG1\t1\t2\n"

    assert refused(client, {"expression": ("m.csv", spanning)}) == (
        f"m.csv: the header (line 1) ends inside a quoted name; {names.NO_CONTROL}"
    )
    assert refused(client, {"expression": ("counts.tsv", counts)}) == (
        f"counts.tsv: the header (line 2) ends inside a quoted name; {names.NO_CONTROL}"
    )


def test_plain_and_quoted_headers_are_counted_alike(client: TestClient, small_limits: None) -> None:
    def header(fields: int, name: str) -> str:
        return ",".join(["sample_id"] + [name] * (fields - 1)) + "\n"

    for name in ("g", '"g"'):  # at most 10 + 64 columns
        parsing._check_field_count(header(74, name), "m.csv", ",", parsing.SizeLimits(10, 10))
        content = header(75, name).encode() + b"s0" + b",1" * 74 + b"\n"
        assert refused(client, {"expression": ("m.csv", content)}) == (
            "m.csv: the header has more than 74 columns; this server accepts at most 10 samples or genes "
            "(EXPRSSL_MAX_UPLOAD_SAMPLES, EXPRSSL_MAX_UPLOAD_GENES)"
        )


def test_a_row_longer_than_a_parse_block_is_named(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsing, "_BLOCK_SIZE", 64 << 10)  # the longest first rows are short: blocks of 64 KiB
    rows = b"".join(b"s%d,1\n" % i for i in range(300))  # past the 200 rows read to sniff the orientation
    content = gzip.compress(b"sample_id,TP53\n" + rows + b"s300," + b"1" * 200_000 + b"\n")

    assert refused(client, {"expression": ("m.csv.gz", content)}) == (
        "m.csv.gz: line 302 (data row 301) is longer than 65,536 bytes, the most one row may take here (about 4 "
        "times the longest of the first rows)"
    )


def test_gene_names_and_ids_longer_than_200_characters_are_refused(client: TestClient) -> None:
    long_name = "G" * 201
    as_columns = f"sample_id,TP53,{long_name}\ns0,1,2\n".encode()
    as_rows = f"gene_id,S1,S2\nTP53,1,2\n{long_name},3,4\n".encode()
    gct = f"#1.2\n1\t1\nName\tDescription\t{'S' * 201}\nTP53\tna\t1\n".encode()

    assert refused(client, {"expression": ("c.csv", as_columns)}) == (
        f"c.csv: the gene name in column 3 of the header ({'G' * 60 + '...'!r}) is longer than 200 characters"
    )
    assert refused(client, {"expression": ("r.csv", as_rows)}) == (
        f"r.csv: the gene id in data row 2 ({'G' * 60 + '...'!r}) is longer than 200 characters"
    )
    assert refused(client, {"expression": ("m.gct", gct)}).startswith(
        "m.gct: the sample name in column 3 of the header"
    )


def test_a_latin1_byte_in_a_labels_data_row_is_reported_at_its_row(client: TestClient) -> None:
    labels = "sample_id,tissue\ns0,kidney\ns1,Gène\ns2,liver\n".encode("latin-1")
    far = b"sample_id,note\ns0," + b"k" * 20_000 + b"\ns1,ok\ns2,caf\xe9\n"  # past the first decoded chunk

    assert refused(client, {"expression": ("m.csv", MATRIX), "labels": ("l.csv", labels)}) == (
        "l.csv: line 3 (data row 2) is not UTF-8 text (invalid continuation byte at byte 5 of the line: "
        "b's1,G\\xe8ne\\n'); save the file as UTF-8"
    )
    assert refused(client, {"expression": ("m.csv", MATRIX), "labels": ("l.csv", far)}).startswith(
        "l.csv: line 4 (data row 3) is not UTF-8 text"
    )


def test_a_latin1_byte_after_comment_lines_is_reported_at_its_line(client: TestClient) -> None:
    comment = b"# Program:featureCounts v2.0.1\n"
    in_header = comment + b"Geneid\tS1\tS\xe92\nG1\t1\t2\n"
    in_row = comment + b"Geneid\tS1\tS2\nG1\t1\t2\nG2\t3\t4\nG\xe93\t5\t6\n"

    assert refused(client, {"expression": ("counts.tsv", in_header)}) == (
        "counts.tsv: line 2 (the header) is not UTF-8 text (invalid continuation byte at byte 12 of the line: "
        "b'Geneid\\tS1\\tS\\xe92\\n'); save the file as UTF-8"
    )
    assert refused(client, {"expression": ("counts.tsv", in_row)}).startswith(
        "counts.tsv: line 5 (data row 3) is not UTF-8 text"
    )


def test_control_characters_in_ids_and_names_are_refused(client: TestClient) -> None:
    in_id = b"sample_id,TP53\ns0,1\n\"s\x07\x1b[31m\",2\n"
    in_gene = b'sample_id,TP53,"EG\tFR"\ns0,1,2\n'
    nul_gene_row = b"gene_id,S1\nTP53,1\nEG\x00FR,2\n"
    labels = b'sample_id,tissue\ns0,kidney\n"s1\x00",liver\n'
    parquet = parquet_bytes(pa.array(["s0", "s1\x1b[2J"]), pa.array(np.ones(2, np.float32)))

    assert refused(client, {"expression": ("a.csv", in_id)}) == (
        f"a.csv: the sample id in data row 2 ('s\\x07\\x1b[31m') holds a control character; {names.NO_CONTROL}"
    )
    assert refused(client, {"expression": ("b.csv", in_gene)}) == (
        f"b.csv: the gene name in column 3 of the header ('EG\\tFR') holds a control character; {names.NO_CONTROL}"
    )
    assert refused(client, {"expression": ("c.csv", nul_gene_row)}).startswith(
        "c.csv: the gene id in data row 2 ('EG\\x00FR') holds a control character"
    )
    assert refused(client, {"expression": ("m.csv", MATRIX), "labels": ("l.csv", labels)}).startswith(
        "l.csv: the sample id in data row 2 ('s1\\x00') holds a control character"
    )
    assert refused(client, {"expression": ("d.parquet", parquet)}).startswith(
        "d.parquet: the sample id in data row 2 ('s1\\x1b[2J') holds a control character"
    )


def test_gct_column_metadata_is_bounded_in_all_as_a_labels_file(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "_MAX_LABEL_BYTES", 4_000)
    meta = "".join(f"note{i}\t" + "\t".join(["x" * 300] * 3) + "\n" for i in range(10))  # 900 characters a line
    gct = f"#1.3\n2\t3\t0\t10\nid\tS1\tS2\tS3\n{meta}TP53\t1\t2\t3\nEGFR\t4\t5\t6\n".encode()

    assert refused(client, {"expression": ("m.gct", gct)}) == (
        "m.gct: the GCT column metadata passes 4,000 characters at its line 5; at most that many are read, as of a "
        "labels file"
    )
