"""Gene identifiers end to end (issue 9): uploads resolve names to gene keys, predictors accept other ids.

A predictor fitted on tissue_symbols (gene symbols) predicts its held-out samples identically when their
columns are renamed to versioned Ensembl ids and shuffled; missing genes are imputed and reported; too few
are refused; the gene table version is recorded with every cohort, encoder, predictor and prediction.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from app.errors import InvalidInput
from app.predictions.imputation import CoverageGate, RidgeKey, get_ridge_cache
from models.gene_table import align_by_gene_key, default_table, gene_table_version, resolve_genes
from models.genes import AlignmentReport
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import wait_for_job
from worker.pipelines.common import require_coverage

EXPRESSION = pd.read_parquet(COHORT / "expression.parquet")


def ensembl_names(symbols: list[str]) -> dict[str, str]:
    """A versioned Ensembl id (``ENSG...\\.5``) for each symbol whose gene has one that resolves back to it."""
    table = default_table()
    by_key: dict[str, str] = {}
    for ens, keys in sorted(table._ensembl.items()):
        if len(keys) == 1:
            by_key.setdefault(keys[0], ens)
    renamed = {}
    for resolution in resolve_genes(symbols):
        ens = by_key.get(resolution.key)
        if ens is not None and resolution.resolved:
            renamed[resolution.name] = f"{ens}.5"
    return renamed


def fit(client: TestClient, cohort_id: str, head: str, encoder_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"cohort_id": cohort_id, "label_column": "tissue", "head": head, "seed": 1}
    if encoder_id is not None:
        body["encoder_id"] = encoder_id
    accepted = start(client, "/predictors", body)
    job = wait_for_job(client, accepted["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    return client.get(f"/predictors/{accepted['predictor']['id']}").json()


def predict(client: TestClient, predictor_id: str, frame: pd.DataFrame, **options: Any) -> Any:
    body = {
        "genes": list(frame.columns),
        "samples": [{"sample_id": s, "values": frame.loc[s].tolist()} for s in frame.index],
        **options,
    }
    return client.post(f"/predictors/{predictor_id}/predictions", json=body)


def probabilities(prediction: dict[str, Any]) -> np.ndarray:
    return np.array([list(r["probabilities"].values()) for r in prediction["results"]])


@pytest.fixture
def cohort(client: TestClient) -> dict[str, Any]:
    return upload(client)


@pytest.fixture
def predictor(client: TestClient, cohort: dict[str, Any]) -> dict[str, Any]:
    return fit(client, cohort["id"], "logistic_regression")


def test_upload_reports_resolution_and_stores_keys(cohort: dict[str, Any], settings: Settings) -> None:
    report = cohort["gene_resolution"]
    # tissue_symbols names 9 genes by previous symbols (SEPT10, H2AFY, RARS ...) and one by its LOC id.
    assert report["rules"] == {"symbol": 490, "alias": 9, "loc_id": 1}
    assert report["n_columns"] == 500 and report["n_resolved"] == 500
    assert report["n_ambiguous"] == 0 and report["n_unresolved"] == 0
    assert report["merged"]["n_groups"] == 0 and report["merged"]["policy"] == "refuse"
    assert report["version"] == cohort["gene_table_version"] == gene_table_version()

    with session_factory()() as session:
        stored = session.get_one(orm.Cohort, cohort["id"]).gene_keys
    expected = resolve_genes(list(EXPRESSION.columns))
    assert stored["keys"] == [r.key for r in expected] and stored["rules"] == [r.rule for r in expected]


def test_previous_symbols_ambiguous_and_unresolved_names_are_reported(client: TestClient) -> None:
    header = "sample_id,SEPT9,SEPTIN9,MARCH1,TP53,NOT_A_GENE_XYZ,1007_s_at,A1B"
    text = f"{header}\ns1,1,2,3,4,5,6,7\ns2,10,20,30,40,50,60,70\n"
    response = client.post("/cohorts", files={"expression": ("m.csv", text.encode())}, data={"duplicate_genes": "mean"})

    assert response.status_code == 201, response.text
    cohort = response.json()
    report = cohort["gene_resolution"]
    assert report["rules"] == {"symbol": 2, "alias": 2, "probe": 1, "ambiguous": 1, "unresolved": 1}
    assert report["ambiguous"] == [
        {"name": "A1B", "candidates": [{"key": "1", "symbol": "A1BG"}, {"key": "6641", "symbol": "SNTB1"}]}
    ]
    assert report["unresolved"] == ["NOT_A_GENE_XYZ"] and report["n_unresolved"] == 1
    assert report["merged"] == {
        "policy": "mean", "n_groups": 1, "n_genes_merged": 2, "groups": {"SEPTIN9": ["SEPT9", "SEPTIN9"]}
    }
    assert cohort["genes_preview"] == ["SEPTIN9", "MARCH1", "TP53", "NOT_A_GENE_XYZ", "1007_s_at", "A1B"]
    assert cohort["n_genes"] == 6


def test_coverage_just_below_a_level_is_not_shown_as_the_level() -> None:
    # A 20,000-gene panel with 9,999 found (49.995 %) is refused, 17,999 found (89.995 %) warned: the messages
    # said "covers 50.0%" and "covers 90.0%" beside "at least 50%" and "below 90%".
    gate = CoverageGate(refuse=0.5, warn=0.9)

    def report(n_found: int) -> AlignmentReport:
        return AlignmentReport(n_panel=20_000, n_found=n_found, n_missing=20_000 - n_found, n_extra=0,
                               coverage=n_found / 20_000, missing=["TP53"])

    with pytest.raises(InvalidInput) as refused:
        gate.check(report(9_999), "mean")
    assert str(refused.value).startswith("input covers 49.9% of the predictor's 20000 panel genes (9999 found")
    assert "at least 50% is required" in str(refused.value)
    warning = gate.check(report(17_999), "mean")
    assert warning is not None and warning.startswith("input covers 89.9% of the predictor's 20000 panel genes")
    assert gate.check(report(18_000), "mean") is None
    with pytest.raises(InvalidInput) as job:
        require_coverage(SimpleNamespace(min_gene_coverage=0.5), report(9_999), cohort_id="c1", model="the encoder",
                         use="fitting")  # type: ignore[arg-type]
    assert "cohort c1 covers 49.9% of the encoder's 20000 genes (9999 found); fitting needs at least 50%" in str(
        job.value
    )


def test_a_refusal_says_which_missing_genes_the_input_named_and_why_they_were_not_taken() -> None:
    genes = ["ENSG00000099977", "ENSG00000204371.12", "ENSG00000206376.3", "TP53"]
    _, report = align_by_gene_key(np.ones((1, 4)), genes, ["DDT", "EHMT2", "MYC", "TP53"])

    with pytest.raises(InvalidInput) as refused:
        CoverageGate(refuse=0.5, warn=0.9).check(report, "mean")

    assert str(refused.value).endswith(
        "Missing genes include: DDT, EHMT2, MYC. Named by the input but not taken: DDT, 'ENSG00000099977' denotes "
        "several genes (DDT, DDTL): an ambiguous name is not guessed; 1 more such gene(s) among the first 3 missing"
    )


def test_a_level_set_between_whole_percentages_is_named_as_set() -> None:
    # EXPRSSL_MIN_GENE_COVERAGE=0.505: 50.4 % found was refused as "at least 50% is required".
    gate = CoverageGate(refuse=0.505, warn=0.925)
    report = AlignmentReport(n_panel=1000, n_found=504, n_missing=496, n_extra=0, coverage=0.504, missing=["TP53"])
    with pytest.raises(InvalidInput, match=r"input covers 50\.4% .*; at least 50\.5% is required"):
        gate.check(report, "mean")
    warned = AlignmentReport(n_panel=1000, n_found=920, n_missing=80, n_extra=0, coverage=0.92, missing=["TP53"])
    assert ", below 92.5%: 80 genes were imputed" in (gate.check(warned, "mean") or "")
    with pytest.raises(InvalidInput, match="fitting needs at least 50.5%"):
        require_coverage(SimpleNamespace(min_gene_coverage=0.505), report, cohort_id="c1", model="the encoder",
                         use="fitting")  # type: ignore[arg-type]


def test_alternate_ensembl_genes_of_one_gene_are_kept_apart_at_upload(client: TestClient) -> None:
    # EHMT2's primary-assembly and MHC-haplotype Ensembl genes; the same id twice (two versions) is a duplicate.
    header = "sample_id,ENSG00000204371.12,ENSG00000206376.3,TP53"
    text = f"{header}\ns1,1,2,3\ns2,10,20,30\n"
    response = client.post("/cohorts", files={"expression": ("m.csv", text.encode())})

    assert response.status_code == 201, response.text
    report = response.json()["gene_resolution"]
    assert report["ensembl_alternates"]["groups"] == {"EHMT2": ["ENSG00000204371.12", "ENSG00000206376.3"]}
    assert report["merged"]["n_groups"] == 0 and response.json()["n_genes"] == 3

    twice = "sample_id,ENSG00000204371.12,ENSG00000204371.13,TP53\ns1,1,2,3\n"
    refused = client.post("/cohorts", files={"expression": ("m.csv", twice.encode())})
    assert refused.status_code == 422, refused.text
    assert "1 duplicate gene id(s)" in refused.json()["error"]["message"]


@pytest.mark.slow
def test_symbols_and_ensembl_ids_predict_identically(
    client: TestClient, cohort: dict[str, Any], predictor: dict[str, Any]
) -> None:
    test_ids = predictor["split"]["test_sample_ids"]
    held_out = EXPRESSION.loc[test_ids]
    renamed = ensembl_names(list(held_out.columns))
    assert len(renamed) > 450  # nearly every gene has an Ensembl id
    shuffled = held_out.rename(columns=renamed)
    shuffled = shuffled[np.random.default_rng(0).permutation(shuffled.columns)]

    by_symbol = predict(client, predictor["id"], held_out)
    by_ensembl = predict(client, predictor["id"], shuffled)

    assert by_symbol.status_code == by_ensembl.status_code == 201, by_ensembl.text
    a, b = by_symbol.json(), by_ensembl.json()
    assert [r["label"] for r in a["results"]] == [r["label"] for r in b["results"]]
    np.testing.assert_allclose(probabilities(a), probabilities(b), rtol=0, atol=1e-12)
    coverage = b["coverage"]
    assert coverage["coverage"] == 1.0 and coverage["imputed"] == 0 and coverage["warning"] is None
    assert coverage["n_matched_by_conversion"] == len(renamed)
    assert coverage["n_matched_directly"] == 500 - len(renamed)
    assert a["coverage"]["n_matched_directly"] == 500 and a["coverage"]["n_matched_by_conversion"] == 0
    assert b["gene_table_version"] == predictor["gene_table_version"] == gene_table_version()


@pytest.mark.slow
def test_missing_genes_are_imputed_reported_and_gated(
    client: TestClient, predictor: dict[str, Any], settings: Settings
) -> None:
    held_out = EXPRESSION.loc[predictor["split"]["test_sample_ids"]]
    rng = np.random.default_rng(1)
    dropped = rng.choice(held_out.columns, 150, replace=False)  # 30 % of the panel

    mean = predict(client, predictor["id"], held_out.drop(columns=dropped))
    assert mean.status_code == 201, mean.text
    coverage = mean.json()["coverage"]
    assert coverage["imputed"] == coverage["n_missing"] == 150 and coverage["imputation"] == "mean"
    assert coverage["coverage"] == pytest.approx(0.7)
    assert "70.0%" in coverage["warning"] and "ridge" in coverage["warning"]

    ridge = predict(client, predictor["id"], held_out.drop(columns=dropped), imputation="ridge")
    assert ridge.status_code == 201, ridge.text
    assert ridge.json()["coverage"]["imputation"] == "ridge" and ridge.json()["coverage"]["imputed"] == 150
    labels = pd.read_csv(COHORT / "labels.csv", dtype=str).set_index("sample_id")["tissue"]
    correct = np.mean([r["top_label"] == labels[r["sample_id"]] for r in ridge.json()["results"]])
    assert correct >= 0.9

    with session_factory()() as session:
        stored = session.get_one(orm.Predictor, predictor["id"])
        checksum = session.get_one(orm.Cohort, stored.cohort_id).checksum
        key = RidgeKey(stored.artifact_key or "", stored.artifact_sha256 or "", checksum)
    assert key in get_ridge_cache(settings)  # fitted once, kept for the next ridge request

    too_few = predict(client, predictor["id"], held_out.drop(columns=rng.choice(held_out.columns, 300, replace=False)))
    assert too_few.status_code == 422
    assert "input covers 40.0% of the predictor's 500 panel genes" in too_few.json()["error"]["message"]

    assert client.delete(f"/predictors/{predictor['id']}", params={"force": "true"}).status_code == 204
    assert key not in get_ridge_cache(settings)  # its imputer went with it


@pytest.mark.slow
def test_linear_probe_on_encoder_accepts_ensembl_ids(client: TestClient, cohort: dict[str, Any]) -> None:
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "method": "scarf", "params": {"epochs": 3}})
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    encoder = client.get(f"/encoders/{accepted['encoder']['id']}").json()
    assert encoder["gene_table_version"] == gene_table_version()
    probe = fit(client, cohort["id"], "linear_probe", encoder["id"])
    held_out = EXPRESSION.loc[probe["split"]["test_sample_ids"][:10]]
    renamed = ensembl_names(list(held_out.columns))

    a = predict(client, probe["id"], held_out).json()
    b = predict(client, probe["id"], held_out.rename(columns=renamed).iloc[:, ::-1]).json()

    assert [r["label"] for r in a["results"]] == [r["label"] for r in b["results"]]
    np.testing.assert_allclose(probabilities(a), probabilities(b), rtol=0, atol=1e-6)
    assert b["coverage"]["n_matched_by_conversion"] == len(renamed)


def test_a_predictor_fitted_under_another_gene_table_is_noted(client: TestClient, predictor: dict[str, Any]) -> None:
    held_out = EXPRESSION.loc[predictor["split"]["test_sample_ids"][:3]]
    same = predict(client, predictor["id"], held_out).json()["coverage"]
    assert same["gene_table_note"] is None
    with session_factory()() as session:
        session.get_one(orm.Predictor, predictor["id"]).gene_table_version = "org.Hs.eg.db 3.15.0 (older)"
        session.commit()

    coverage = predict(client, predictor["id"], held_out).json()["coverage"]

    assert "predictor was trained with gene table 'org.Hs.eg.db 3.15.0 (older)'" in coverage["gene_table_note"]
    assert repr(gene_table_version()) in coverage["gene_table_note"]
