"""Real-world cohorts in: every format and orientation, gene-id harmonisation, value kinds, streaming, dedup.

The shared tissue cohort (189 samples x 500 gene symbols) is written out in each format and must read
back as the identical matrix, genes and sample ids; through the API every copy after the first is
recognised as the same matrix and shares its stored file.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.cohorts import parsing
from app.cohorts import repository as cohort_repository
from app.cohorts import service as cohort_service
from app.cohorts.h5ad import read_h5ad
from app.cohorts.parsing import ExpressionMatrix, matrix_checksum, parse_expression, write_matrix
from app.config import Settings, get_settings
from app.db import orm
from app.db.session import session_factory
from app.errors import InvalidInput
from app.main import STALE_STAGING_S, create_app
from app.storage import get_store
from tests.conftest import SHARED_DATA, lab_caller, wait_for_job
from worker.context import JobContext
from worker.pipelines.common import load_cohort

FIXTURES = Path(__file__).resolve().parent / "data"
TISSUES = SHARED_DATA / "tissue_symbols"
AIRWAY = SHARED_DATA / "airway" / "counts.tsv.gz"


@functools.cache
def tissues() -> tuple[pd.DataFrame, pd.Series]:
    """The tissue cohort (samples x genes, float32) and its tissue labels; do not mutate."""
    frame = pd.read_parquet(TISSUES / "expression.parquet")
    labels = pd.read_csv(TISSUES / "labels.csv", dtype=str, index_col=0)["tissue"]
    return frame, labels.loc[frame.index]


def gct_text(frame: pd.DataFrame, *, version: str = "1.2", tissue: pd.Series | None = None) -> str:
    """``frame`` (samples x genes) as GCT: genes as rows; 1.3 adds a row-metadata and a column-metadata line."""
    body = frame.T
    out = io.StringIO()
    if version == "1.2":
        out.write(f"#1.2\n{body.shape[0]}\t{body.shape[1]}\n")
        body.insert(0, "Description", "na")
        body.index.name = "Name"
        body.to_csv(out, sep="\t")
        return out.getvalue()
    out.write(f"#1.3\n{body.shape[0]}\t{body.shape[1]}\t1\t1\n")
    out.write("id\tsymbol\t" + "\t".join(body.columns) + "\n")
    out.write("tissue\tna\t" + "\t".join(tissue.loc[body.columns] if tissue is not None else []) + "\n")
    body.insert(0, "symbol", body.index)
    body.to_csv(out, sep="\t", header=False)
    return out.getvalue()


def write_format(frame: pd.DataFrame, tmp_path: Path, kind: str) -> Path:
    """Write the samples x genes ``frame`` as ``kind``; returns the file."""
    samples = frame.copy()
    samples.index.name = "sample_id"
    genes = frame.T.copy()
    genes.index.name = "gene"
    writers = {
        "rows.csv": lambda p: samples.to_csv(p),
        "columns.csv": lambda p: genes.to_csv(p),
        "rows.tsv.gz": lambda p: samples.to_csv(p, sep="\t", compression={"method": "gzip", "compresslevel": 1}),
        "columns.tsv.gz": lambda p: genes.to_csv(p, sep="\t", compression={"method": "gzip", "compresslevel": 1}),
        "rows.parquet": lambda p: samples.to_parquet(p),
        "columns.parquet": lambda p: genes.to_parquet(p),
        "v12.gct": lambda p: p.write_text(gct_text(frame)),
        "v13.gct.gz": lambda p: p.write_bytes(
            gzip.compress(gct_text(frame, version="1.3", tissue=tissues()[1]).encode(), 1)
        ),
        "gct.txt": lambda p: p.write_text(gct_text(frame)),
    }
    path = tmp_path / f"expression.{kind}"
    writers[kind](path)
    return path


FORMATS = {  # file kind -> the format it is read as
    "rows.csv": "csv", "columns.csv": "csv", "rows.tsv.gz": "tsv", "columns.tsv.gz": "tsv",
    "rows.parquet": "parquet", "columns.parquet": "parquet", "v12.gct": "gct", "v13.gct.gz": "gct", "gct.txt": "gct",
}


def reference() -> ExpressionMatrix:
    frame, _ = tissues()
    return ExpressionMatrix(
        np.ascontiguousarray(frame.to_numpy(np.float32)), [str(s) for s in frame.index], [str(g) for g in frame.columns]
    )


def assert_identical(actual: ExpressionMatrix, expected: ExpressionMatrix) -> None:
    assert actual.values.tobytes() == expected.values.tobytes()
    assert actual.sample_ids == expected.sample_ids
    assert actual.genes == expected.genes
    assert matrix_checksum(actual) == matrix_checksum(expected)


# --- 1. the same real cohort from every format ------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
def test_real_cohort_reads_identically_from_every_format_and_orientation(tmp_path: Path, kind: str) -> None:
    path = write_format(tissues()[0], tmp_path, kind)

    parsed = parse_expression(path, path.name)

    assert_identical(parsed.matrix, reference())
    rows_are_genes = kind.startswith("columns") or "gct" in kind
    assert parsed.orientation == ("genes_as_rows" if rows_are_genes else "samples_as_rows")
    assert parsed.file_format == FORMATS[kind]


def test_real_cohort_from_an_h5ad_written_by_anndata() -> None:
    parsed = parse_expression(FIXTURES / "tissue_symbols.h5ad", "tissue_symbols.h5ad")

    assert_identical(parsed.matrix, reference())
    assert parsed.annotations is not None
    assert parsed.annotations["tissue"].tolist() == tissues()[1].tolist()


def test_every_format_uploads_as_one_stored_matrix(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    paths = [write_format(tissues()[0], tmp_path, kind) for kind in ("rows.csv", "columns.tsv.gz", "v13.gct.gz")]
    paths += [TISSUES / "expression.parquet", FIXTURES / "tissue_symbols.h5ad"]
    cohorts = []
    for path in paths:
        response = client.post("/cohorts", files={"expression": (path.name, path.read_bytes())})
        assert response.status_code == 201, response.text
        cohorts.append(response.json())

    first = cohorts[0]
    assert (first["n_samples"], first["n_genes"]) == (189, 500)
    assert first["deduplicated"] is False and first["duplicate_of"] is None
    for later in cohorts[1:]:
        assert later["checksum"] == first["checksum"]
        assert later["deduplicated"] is True and later["duplicate_of"] == first["id"]
    stored = list((settings.resolved_artifact_dir / "cohorts").iterdir())
    assert len(stored) == 1
    assert [c["ingest"]["format"] for c in cohorts] == ["csv", "tsv", "gct", "parquet", "h5ad"]
    # Text annotations inside the file become labels when no labels file is given.
    assert [c["ingest"]["labels"] for c in cohorts] == [None, None, "gct annotations", None, "h5ad annotations"]
    assert cohorts[4]["label_columns"][0]["classes"]["kidney"] == 39


# --- 2. real count data, genes as rows ---------------------------------------------------------------------


def test_airway_counts_upload_as_8_samples_of_64102_ensembl_genes(client: TestClient) -> None:
    response = client.post("/cohorts", files={"expression": ("counts.tsv.gz", AIRWAY.read_bytes())})

    assert response.status_code == 201, response.text
    cohort = response.json()
    assert (cohort["n_samples"], cohort["n_genes"]) == (8, 64102)
    assert cohort["orientation"] == "genes_as_rows" and cohort["ingest"]["orientation_source"] == "detected"
    assert cohort["gene_id_type"] == "ensembl"
    assert (cohort["value_kind"], cohort["value_kind_source"]) == ("counts", "detected")
    assert cohort["ingest"]["values"]["integers"] is True and cohort["ingest"]["values"]["minimum"] == 0.0
    samples = client.get(f"/cohorts/{cohort['id']}/samples").json()
    assert [s["sample_id"] for s in samples][:2] == ["SRR1039508", "SRR1039509"]

    # Pretraining with log1p=auto takes the log of counts.
    body = {"cohort_id": cohort["id"], "params": {"epochs": 1, "hidden_dim": 8, "batch_size": 8}}
    accepted = client.post("/encoders", json=body).json()
    assert wait_for_job(client, accepted["job"]["id"], timeout=120)["state"] == "succeeded"
    encoder = client.get(f"/encoders/{accepted['encoder']['id']}").json()
    assert encoder["preprocessing"]["log1p"] is True and encoder["n_genes"] == 64102


def test_featurecounts_output_comment_and_annotation_columns(tmp_path: Path) -> None:
    text = (
        "# Program:featureCounts v2.0.6; Command:\"featureCounts\" \"-a\" \"genes.gtf\"\n"
        "Geneid\tChr\tStart\tEnd\tStrand\tLength\tsample_A.bam\tsample_B.bam\n"
        "ENSG00000223972.5\tchr1;chr1\t11869;12010\t12227;12057\t+;+\t1735\t0\t3\n"
        "ENSG00000227232.5\tchr1\t14404\t29570\t-\t1351\t471\t520\n"
    )
    path = tmp_path / "counts.txt"
    path.write_text(text)

    parsed = parse_expression(path, "counts.txt")

    assert parsed.orientation == "genes_as_rows" and parsed.orientation_detected
    assert parsed.skipped_columns == ["Chr", "Start", "End", "Strand", "Length"]
    assert parsed.matrix.sample_ids == ["sample_A.bam", "sample_B.bam"]
    assert parsed.matrix.genes == ["ENSG00000223972.5", "ENSG00000227232.5"]
    assert parsed.matrix.values.tolist() == [[0.0, 471.0], [3.0, 520.0]]


def test_orientation_given_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("id,BRCA1,KRAS\nTP53,1.5,2.5\nMYC,3.0,4.0\nEGFR,5.0,6.0\n")  # gene names both ways

    detected = parse_expression(path, "m.csv")
    given = parse_expression(path, "m.csv", orientation="genes_as_rows")

    assert detected.orientation == "samples_as_rows" and detected.matrix.genes == ["BRCA1", "KRAS"]
    assert given.orientation == "genes_as_rows" and not given.orientation_detected
    assert given.matrix.sample_ids == ["BRCA1", "KRAS"] and given.matrix.genes == ["TP53", "MYC", "EGFR"]
    assert given.matrix.values.tolist() == [[1.5, 3.0, 5.0], [2.5, 4.0, 6.0]]


SYMBOLS = ["TP53", "MYC", "SEPTIN9", "EGFR", "BRCA1", "KRAS", "PTEN", "CDK4", "MDM2", "RB1", "ATM", "NRAS",
           "BRAF", "ERBB2", "CCND1", "VHL", "APC", "SMAD4", "NOTCH1", "GAPDH", "ACTB", "ALB"]


@pytest.mark.parametrize("header", ["", "id", "Unnamed: 0"])
def test_gene_symbols_as_rows_under_an_unnamed_id_column_are_read_as_genes(tmp_path: Path, header: str) -> None:
    # pandas' to_csv() and R's write.csv() leave the first header cell empty.
    values = np.arange(2 * len(SYMBOLS), dtype=np.float64).reshape(len(SYMBOLS), 2)
    frame = pd.DataFrame(values, index=SYMBOLS, columns=["GSM100", "GSM101"])
    path = tmp_path / "m.csv"
    path.write_text(frame.to_csv().replace(",GSM100", f"{header},GSM100", 1))

    parsed = parse_expression(path, "m.csv")

    assert parsed.orientation == "genes_as_rows" and parsed.orientation_detected
    assert parsed.matrix.sample_ids == ["GSM100", "GSM101"] and parsed.matrix.genes == SYMBOLS
    assert parsed.matrix.values.tolist() == values.T.tolist()


@pytest.mark.parametrize(
    ("rows", "columns"),
    [
        (SYMBOLS[:19], ["GSM100", "GSM101"]),  # too few rows to tell from a sample sheet
        ([str(i) for i in range(1, 30)], ["TP53", "MYC"]),  # sample numbers, which look like NCBI gene ids
        ([f"CA{i}" for i in range(1, 30)], ["7157", "4609"]),  # sample codes that are symbols; NCBI gene columns
        ([f"WT{i}" for i in range(1, 30)], ["TP53", "CDKN2A"]),
    ],
)
def test_samples_that_look_like_genes_stay_rows(tmp_path: Path, rows: list[str], columns: list[str]) -> None:
    path = tmp_path / "m.csv"
    path.write_text(pd.DataFrame(1.0, index=rows, columns=columns).to_csv())
    assert parse_expression(path, "m.csv").orientation == "samples_as_rows"


def test_bad_cell_in_genes_as_rows_names_the_gene_and_the_sample(tmp_path: Path) -> None:
    path = tmp_path / "g.tsv"
    path.write_text("gene_id\tS1\tS2\nENSG00000000003\t1\t2\nENSG00000000005\t3\tNA\n")

    with pytest.raises(InvalidInput) as caught:
        parse_expression(path, "g.tsv")

    message = caught.value.message
    assert "gene 'ENSG00000000005' (data row 2), sample 'S2': missing value 'NA'" in message


@pytest.mark.parametrize(
    ("kind", "orientation", "words"),
    [("x.gct", "samples_as_rows", "GCT files hold genes as rows"),
     ("x.h5ad", "genes_as_rows", "hold samples (obs) as rows"),
     ("x.csv", "sideways", "not one of auto")],
)
def test_contradictory_orientation_is_refused(tmp_path: Path, kind: str, orientation: str, words: str) -> None:
    path = tmp_path / kind
    path.write_text("#1.2\n1\t1\nName\tDescription\tS1\nG1\tna\t1\n")

    with pytest.raises(InvalidInput, match=re.escape(words)):
        parse_expression(path, kind, orientation=orientation)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("#1.2\n2\t1\nName\tDescription\tS1\nG1\tna\t1\n", "declares 2 rows but the file has 1"),
        ("#1.2\n1\t2\nName\tDescription\tS1\nG1\tna\t1\n", "header line has 3 fields"),
        ("#1.2\nx\ty\nName\tDescription\tS1\n", "line 2 must give the rows and columns"),
        ("#1.3\n1\t1\nid\tS1\nG1\t1\n", "line 2 must give the rows, columns, row-metadata"),
        ("#2.0\n1\t1\n", "starts with '#1.2' or '#1.3'"),
        ("#1.2\n1\t1\nName\tDescription\tS1\nG1\tna\thigh\n", "gene 'G1' (data row 1), sample 'S1': non-numeric"),
    ],
)
def test_gct_errors(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.gct"
    path.write_text(text)

    with pytest.raises(InvalidInput, match=re.escape(words)):
        parse_expression(path, "bad.gct")


# --- h5ad --------------------------------------------------------------------------------------------------


def synthetic_counts() -> np.ndarray:
    """The matrix of make_h5ad_fixtures.synthetic_counts."""
    i, j = np.meshgrid(np.arange(12), np.arange(30), indexing="ij")
    return np.where((i + j) % 3 == 0, ((i + 1) * (j + 2)) % 97 + 150, 0).astype(np.float32)


@pytest.mark.parametrize("name", ["counts_csr.h5ad", "counts_csc.h5ad"])
def test_sparse_h5ad_from_anndata(name: str) -> None:
    parsed = read_h5ad(FIXTURES / name, name)

    np.testing.assert_array_equal(parsed.matrix.values, synthetic_counts())
    assert parsed.matrix.sample_ids[:2] == ["cell00", "cell01"]
    assert parsed.matrix.genes[:2] == ["ENSG00000000000.1", "ENSG00000000001.2"]
    assert parsed.annotations is not None and list(parsed.annotations.columns) == ["condition", "donor"]
    assert parsed.annotations["donor"].tolist()[:3] == ["d0", "d0", "d1"]


def test_h5ad_obs_columns_become_labels_with_a_group_column(client: TestClient) -> None:
    content = (FIXTURES / "counts_csr.h5ad").read_bytes()
    response = client.post("/cohorts", files={"expression": ("c.h5ad", content)}, data={"group_column": "donor"})

    assert response.status_code == 201, response.text
    cohort = response.json()
    assert cohort["gene_id_type"] == "ensembl" and cohort["ingest"]["gene_ids"]["n_versioned"] == 30
    assert cohort["value_kind"] == "counts" and cohort["n_groups"] == 6
    assert [c["name"] for c in cohort["label_columns"]] == ["condition"]


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "not a readable HDF5"), (b"\x89HDF\r\n\x1a\nbroken", "not a readable HDF5")],
)
def test_broken_h5ad(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "b.h5ad"
    path.write_bytes(content)

    with pytest.raises(InvalidInput, match=words):
        parse_expression(path, "b.h5ad")


def test_truncated_h5ad_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.h5ad"
    path.write_bytes((FIXTURES / "counts_csr.h5ad").read_bytes()[:5000])

    with pytest.raises(InvalidInput, match="t.h5ad"):
        parse_expression(path, "t.h5ad")


# --- gene-id harmonisation ---------------------------------------------------------------------------------


def csv_upload(client: TestClient, text: str, **data: str):  # type: ignore[no-untyped-def]
    return client.post("/cohorts", files={"expression": ("m.csv", text.encode())}, data=data)


def test_spaces_around_labels_and_group_ids_do_not_make_other_classes_or_patients(client: TestClient) -> None:
    expression = "sample_id,TP53,MYC\n" + "".join(f"s{i},{i},{i + 1}\n" for i in range(6))
    labels = ("sample_id,tissue,patient\ns0,kidney,P1\ns1, kidney,P1 \ns2,kidney , P1\ns3,liver,P2\n"
              "s4,liver ,P2\ns5, NA ,P3\n")
    response = client.post("/cohorts", files={"expression": ("m.csv", expression.encode()),
                                              "labels": ("l.csv", labels.encode())}, data={"group_column": "patient"})

    assert response.status_code == 201, response.text
    cohort = response.json()
    assert cohort["n_groups"] == 3  # P1 is one patient, whatever the spaces
    tissue = next(c for c in cohort["label_columns"] if c["name"] == "tissue")
    assert tissue["classes"] == {"kidney": 3, "liver": 2} and tissue["n_labelled"] == 5
    # A cohort stored before ingest trimmed them: jobs read its groups and labels trimmed all the same.
    with session_factory()() as session:
        for row in session.query(orm.CohortSample).filter_by(cohort_id=cohort["id"]):
            tissue = row.labels["tissue"]
            row.group_id, row.labels = f" {row.group_id} ", {"tissue": None if tissue is None else f"{tissue} "}
        session.commit()
    context = JobContext(job_id="j", params={}, store=get_store(), session_factory=session_factory(),
                         min_gene_coverage=0.5)
    data = load_cohort(context, cohort["id"])
    assert data.groups == ["P1", "P1", "P1", "P2", "P2", "P3"]
    assert [labels["tissue"] for labels in data.labels] == ["kidney"] * 3 + ["liver"] * 2 + [None]
    annotations = parsing.text_annotations(["a", "b", "c"], {"tissue": [" kidney", "kidney ", " NA "]})
    assert annotations is not None and annotations["tissue"].tolist()[:2] == ["kidney", "kidney"]
    assert pd.isna(annotations["tissue"].iloc[2])


VERSIONED = "sample_id,ENSG00000141510.16,ensg00000141510.17,tp53,TP53,MYC\ns1,1,2,3,4,5\ns2,10,20,30,40,50\n"


def test_duplicates_after_normalisation_are_refused_naming_the_originals(client: TestClient) -> None:
    response = csv_upload(client, VERSIONED)

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    # The gene table knows ENSG00000141510 is TP53: one gene, four columns.
    assert "1 duplicate gene id(s)" in message
    assert "TP53: 'ENSG00000141510.16', 'ensg00000141510.17', 'tp53', 'TP53'" in message and "'MYC'" not in message


def test_duplicates_summed_when_asked(client: TestClient) -> None:
    response = csv_upload(client, VERSIONED, duplicate_genes="sum")

    assert response.status_code == 201, response.text
    cohort = response.json()
    assert cohort["genes_preview"] == ["TP53", "MYC"]
    assert cohort["ingest"]["duplicate_genes"] == {
        "policy": "sum", "n_groups": 1, "n_genes_merged": 4,
        "groups": {"TP53": ["ENSG00000141510.16", "ensg00000141510.17", "tp53", "TP53"]},
    }


def test_duplicate_policy_setting(client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPRSSL_DUPLICATE_GENES", "sum")
    get_settings.cache_clear()

    response = csv_upload(client, VERSIONED)

    assert response.status_code == 201, response.text
    assert response.json()["ingest"]["duplicate_genes"]["policy"] == "sum"


def test_summed_matrix_is_stored(tmp_path: Path) -> None:
    from app.cohorts.service import harmonise

    matrix = ExpressionMatrix(
        np.array([[1, 2, 3, 4, 5], [10, 20, 30, 40, 50]], dtype=np.float32),
        ["s1", "s2"],
        ["ENSG00000141510.16", "ensg00000141510.17", "tp53", "TP53", "MYC"],
    )
    merged, harmonised = harmonise(matrix, "sum")

    assert merged.genes == ["TP53", "MYC"]
    assert merged.values.tolist() == [[10, 5], [100, 50]]
    assert harmonised.duplicates["TP53"] == ["ENSG00000141510.16", "ensg00000141510.17", "tp53", "TP53"]
    assert harmonise(matrix, "mean")[0].values.tolist() == [[2.5, 5], [25, 50]]


# --- value kinds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "kind"),
    [
        ([[0, 150], [12, 3000]], "counts"),
        ([[0.5, 150.25], [12.0, 3000.5]], "tpm"),
        ([[2.5, 11.75], [4.0, 13.5]], "log"),
        ([[-1.5, 0.25], [2.0, 150]], "log"),  # log ratios: negatives are fine when nothing is declared
    ],
)
def test_value_kind_detected(client: TestClient, rows: list[list[float]], kind: str) -> None:
    text = "sample_id,A,B\n" + "".join(f"s{i},{a},{b}\n" for i, (a, b) in enumerate(rows))

    cohort = csv_upload(client, text).json()

    assert (cohort["value_kind"], cohort["value_kind_source"]) == (kind, "detected")


@pytest.mark.parametrize("declared", ["counts", "tpm"])
def test_negative_values_declared_as_counts_are_refused(client: TestClient, declared: str) -> None:
    response = csv_upload(client, "sample_id,A,B\ns1,1,2\ns2,3,-4.5\n", values=declared)

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert f"declared as {declared}" in message and "'s2'" in message and "'B'" in message and "-4.5" in message


def test_declared_kind_wins_and_is_honoured_by_fitting(client: TestClient) -> None:
    frame, labels = tissues()
    counts = np.round(np.exp2(frame.to_numpy(np.float64)))  # linear scale: would be detected as counts
    text = pd.DataFrame(counts, index=frame.index, columns=frame.columns).to_csv()
    label_text = labels.to_frame().to_csv()
    files = {"expression": ("counts.csv", text.encode()), "labels": ("labels.csv", label_text.encode())}

    detected = client.post("/cohorts", files=files).json()
    declared = client.post("/cohorts", files=files, data={"values": "log"}).json()

    assert (detected["value_kind"], declared["value_kind"]) == ("counts", "log")
    assert declared["value_kind_source"] == "declared" and declared["duplicate_of"] == detected["id"]
    from worker.pipelines.common import CohortData

    data = CohortData("c", None, reference(), [], [], "log")
    assert data.log1p() is False and data.log1p("yes") is True
    assert CohortData("c", None, reference(), [], [], "tpm").log1p() is True


# --- streaming upload, limits, staging ---------------------------------------------------------------------


def staged(settings: Settings) -> list[Path]:
    folder = settings.resolved_artifact_dir / ".staging"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def small_limit(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("EXPRSSL_MAX_UPLOAD_BYTES", "2000")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_upload_over_the_limit_gets_413(client: TestClient, settings: Settings, small_limit: None) -> None:
    body = "sample_id,A\n" + "".join(f"s{i},{i}\n" for i in range(400))

    response = csv_upload(client, body)

    assert response.status_code == 413
    assert "limit is 2,000 bytes" in response.json()["error"]["message"]
    assert staged(settings) == []


def test_streamed_body_without_length_is_cut_at_the_limit(
    client: TestClient, settings: Settings, small_limit: None
) -> None:
    boundary = "xyz"

    def chunks() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"expression\"; filename=\"m.csv\"\r\n\r\n"
               "sample_id,A\n").encode()
        for i in range(500):
            yield f"s{i},{i}\n".encode()
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/cohorts", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )

    assert response.status_code == 413 and "more than 2,000 bytes" in response.json()["error"]["message"]
    assert staged(settings) == []


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("application/json", b"{}", "multipart/form-data"),
        ("multipart/form-data", b"--x\r\n", "boundary"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"expression\"; "
         b"filename=\"m.csv\"\r\n\r\nsample_id,A\n", "ends inside a part"),
        ("multipart/form-data; boundary=x",
         b"--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nn\r\n--x--\r\n", "expression: Field required"),
    ],
)
def test_malformed_requests_get_422(
    client: TestClient, settings: Settings, content_type: str, body: bytes, words: str
) -> None:
    response = client.post("/cohorts", content=body, headers={"content-type": content_type})

    assert response.status_code == 422, response.text
    assert words in response.json()["error"]["message"]
    assert staged(settings) == []


def test_form_fields_are_validated(client: TestClient) -> None:
    response = csv_upload(client, "sample_id,A\ns1,1\n", orientation="diagonal", values="raw")

    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "orientation" in message and "values" in message


@pytest.mark.parametrize(
    ("field", "hint"), [("groupcolumn", "did you mean 'group_column'?"), ("label", "did you mean 'labels'?"),
                        ("tissue", "")],
)
def test_a_field_the_upload_does_not_know_is_refused_not_dropped(
    client: TestClient, settings: Settings, field: str, hint: str
) -> None:
    before = client.get("/cohorts").json()
    files = {"expression": ("m.csv", b"sample_id,TP53\ns1,1\ns2,2\n"),
             **({"label": ("l.csv", b"sample_id,tissue\ns1,a\ns2,b\n")} if field == "label" else {})}

    response = client.post("/cohorts", files=files, data={} if field == "label" else {field: "patient"})

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(f"{field!r} is not a field of this upload (expected ") and message.endswith(
        hint or "values)")
    assert "group_column" in message and "labels" in message
    assert client.get("/cohorts").json() == before and staged(settings) == []


def test_staging_is_empty_after_a_successful_upload(client: TestClient, settings: Settings) -> None:
    assert csv_upload(client, "sample_id,A\ns1,1\n").status_code == 201
    assert staged(settings) == []


def test_an_identical_upload_keeps_its_matrix_when_the_original_is_deleted_meanwhile(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "sample_id,TP53,MYC\ns1,1,2\ns2,3,4\n"
    original = csv_upload(client, text).json()
    find = cohort_repository.find_by_checksum

    def found_then_deleted(session: Session, checksum: str, **kwargs: Any) -> orm.Cohort | None:
        row = find(session, checksum, **kwargs)  # the upload will share the original's file ...
        with session_factory()() as other:  # ... which another request deletes before the upload commits
            cohort_service.delete_cohort(session=other, store=get_store(), caller=lab_caller(),
                                         cohort_id=original["id"], force=False)
        return row

    monkeypatch.setattr(cohort_repository, "find_by_checksum", found_then_deleted)
    copy = csv_upload(client, text)

    assert copy.status_code == 201 and client.get(f"/cohorts/{original['id']}").status_code == 404
    with session_factory()() as session:
        key = session.get_one(orm.Cohort, copy.json()["id"]).storage_key
    stored = parsing.read_matrix(get_store().local_path(key))  # written again: the upload still held it
    assert matrix_checksum(stored) == copy.json()["checksum"] == original["checksum"]


def test_files_left_in_staging_by_a_killed_upload_are_removed_at_start(settings: Settings) -> None:
    staging = get_store().staging_dir()
    old, recent = staging / "killed.upload", staging / "in-progress.upload"
    for path in (old, recent):
        path.write_bytes(b"x" * 1000)
    an_hour_too_old = time.time() - STALE_STAGING_S - 3600
    os.utime(old, (an_hour_too_old, an_hour_too_old))

    with TestClient(create_app()):
        pass

    assert staged(settings) == [recent]  # another process may still be writing the recent one


# --- memory of the store write ------------------------------------------------------------------------------


def test_store_write_and_checksum_copy_at_most_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((400, 2500), dtype=np.float32)  # 4 MB
    matrix = ExpressionMatrix(values, [f"s{i}" for i in range(400)], [f"g{j}" for j in range(2500)])
    monkeypatch.setattr(parsing, "_WRITE_CELLS", values.size // 8)

    tracemalloc.start()
    try:
        write_matrix(matrix, tmp_path / "m.arrow")
        checksum = matrix_checksum(matrix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 0.3 * values.nbytes, f"peak {peak} bytes for a {values.nbytes}-byte matrix"
    back = parsing.read_matrix(tmp_path / "m.arrow")
    assert back.values.tobytes() == values.tobytes() and matrix_checksum(back) == checksum


@pytest.mark.parametrize("genes_as_rows", [False, True])
def test_parquet_is_read_by_row_group_and_column_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, genes_as_rows: bool
) -> None:
    monkeypatch.setattr(parsing, "_SLICE_COLUMNS", 2)
    values = np.arange(5 * 7, dtype=np.float32).reshape(5, 7) / 4
    rows, columns = [f"s{i}" for i in range(5)], [f"G{j}" for j in range(7)]
    if genes_as_rows:
        table = pa.table({"gene_id": columns, **{s: values[i] for i, s in enumerate(rows)}})
    else:
        table = pa.table({"sample_id": rows, **{g: values[:, j] for j, g in enumerate(columns)}})
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=2)

    matrix = parse_expression(tmp_path / "m.parquet", "m.parquet").matrix

    assert matrix.values.tobytes() == values.tobytes()
    assert (matrix.sample_ids, matrix.genes) == (rows, columns)


def test_parquet_first_bad_cell_across_row_groups_and_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsing, "_SLICE_COLUMNS", 2)
    values = np.ones((5, 7), dtype=np.float32)
    values[4, 6], values[3, 5], values[3, 1] = np.inf, np.nan, np.nan  # rows 3 and 4: the third row group
    table = pa.table({"sample_id": [f"s{i}" for i in range(5)], **{f"G{j}": values[:, j] for j in range(7)}})
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=2)

    with pytest.raises(InvalidInput) as caught:
        parse_expression(tmp_path / "m.parquet", "m.parquet")

    assert caught.value.message.startswith("m.parquet: sample 's3' (data row 4), gene 'G1': missing value 'nan'")


def test_lrg_ids_are_counted_as_other_ids_as_they_resolve_to_no_gene(client: TestClient) -> None:
    genes = ["TP53", "BRCA1", "MYC", "EGFR", "LRG_1", "lrg_321", "LRG_1t1"]
    frame = pd.DataFrame(np.arange(14.0).reshape(2, 7), index=["s1", "s2"], columns=genes).rename_axis("sample_id")
    response = client.post("/cohorts", files={"expression": ("m.csv", frame.to_csv().encode())})
    assert response.status_code == 201, response.text
    cohort = client.get(f"/cohorts/{response.json()['id']}").json()
    kinds = cohort["ingest"]["gene_ids"]["kinds"]
    assert kinds == {"symbol": 4, "other": 3} and cohort["ingest"]["gene_ids"]["examples"]["other"][0] == "LRG_1"
    assert cohort["ingest"]["gene_resolution"]["unresolved"] == ["LRG_1", "lrg_321", "LRG_1t1"]  # consistent
