"""Bad input gets a 4xx naming the problem, and leaves the registry and the artifact store as they were."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cohorts.service import check_label_column
from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from app.errors import InvalidInput
from app.storage import get_store
from models.evaluation import split_train_test
from tests.app.test_full_loop import COHORT, upload
from tests.conftest import wait_for_job

GENES = ["TP53", "BRCA1", "MYC", "EGFR"]


def snapshot(settings: Settings) -> tuple[dict[str, int], list[str]]:
    """Row count of every table and every file under the artifact folder."""
    with session_factory()() as session:
        counts = {t.name: session.scalar(select(func.count()).select_from(t)) or 0
                  for t in orm.Base.metadata.sorted_tables}
    root = settings.resolved_artifact_dir
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return counts, files


@pytest.fixture
def unchanged(client: TestClient, settings: Settings) -> Iterator[None]:
    before = snapshot(settings)
    yield
    assert snapshot(settings) == before


def csv_bytes(rows: list[list[object]], header: list[str]) -> bytes:
    out = io.StringIO()
    out.write(",".join(header) + "\n")
    for row in rows:
        out.write(",".join(str(v) for v in row) + "\n")
    return out.getvalue().encode()


def post_matrix(client: TestClient, content: bytes, labels: bytes | None = None, name: str = "m.csv") -> dict:
    files = {"expression": (name, content)}
    if labels is not None:
        files["labels"] = ("labels.csv", labels)
    response = client.post("/cohorts", files=files)
    assert 400 <= response.status_code < 500, response.text
    return response.json()["error"]


def error_of(response) -> str:  # type: ignore[no-untyped-def]
    assert 400 <= response.status_code < 500, response.text
    return response.json()["error"]["message"]


def test_non_numeric_cell(client: TestClient, unchanged: None) -> None:
    content = csv_bytes([["s1", 1.0, 2.0, 3.0, 4.0], ["s2", 1.5, "high", 3.5, 4.5]], ["sample_id", *GENES])
    error = post_matrix(client, content)
    assert "s2" in error["message"] and "BRCA1" in error["message"] and "high" in error["message"]


def test_empty_file(client: TestClient, unchanged: None) -> None:
    error = post_matrix(client, b"")
    assert "empty" in error["message"].lower() and "m.csv" in error["message"]


def test_duplicate_sample_ids(client: TestClient, unchanged: None) -> None:
    content = csv_bytes([["s1", 1, 2, 3, 4], ["s7", 1, 2, 3, 4], ["s7", 5, 6, 7, 8]], ["sample_id", *GENES])
    error = post_matrix(client, content)
    assert "duplicate" in error["message"].lower() and "s7" in error["message"]


def test_duplicate_gene_names(client: TestClient, unchanged: None) -> None:
    content = csv_bytes([["s1", 1, 2, 3, 4], ["s2", 1, 2, 3, 4]], ["sample_id", "TP53", "MYC", "MYC", "EGFR"])
    error = post_matrix(client, content)
    assert "duplicate" in error["message"].lower() and "MYC" in error["message"]


def test_labels_with_unknown_sample_ids(client: TestClient, unchanged: None) -> None:
    content = csv_bytes([["s1", 1, 2, 3, 4], ["s2", 1, 2, 3, 4]], ["sample_id", *GENES])
    labels = csv_bytes([["s1", "tumour"], ["patient-x9", "normal"]], ["sample_id", "status"])
    error = post_matrix(client, content, labels)
    assert "patient-x9" in error["message"]


def test_a_label_class_named_uncertain_is_refused(client: TestClient, unchanged: None) -> None:
    content = csv_bytes([["s1", 1, 2, 3, 4], ["s2", 1, 2, 3, 4]], ["sample_id", *GENES])
    labels = csv_bytes([["s1", "tumour"], ["s2", "uncertain"]], ["sample_id", "status"])
    response = client.post("/cohorts", files={"expression": ("m.csv", content), "labels": ("labels.csv", labels)})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "label column 'status' has a class named 'uncertain'" in message and "rename" in message


def test_a_group_id_named_uncertain_is_accepted(client: TestClient) -> None:
    content = csv_bytes([["s1", 1, 2, 3, 4], ["s2", 1, 2, 3, 4]], ["sample_id", *GENES])
    labels = csv_bytes([["s1", "uncertain", "tumour"], ["s2", "p2", "normal"]], ["sample_id", "patient", "status"])
    response = client.post("/cohorts", files={"expression": ("m.csv", content), "labels": ("labels.csv", labels)},
                           data={"group_column": "patient"})
    assert response.status_code == 201, response.text


@pytest.fixture
def cohort(client: TestClient) -> dict:
    return upload(client)


@pytest.fixture
def predictions_url(client: TestClient, cohort: dict) -> str:
    """Where a logistic regression fitted on the cohort takes prediction requests."""
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    fit = client.post("/predictors", json=body).json()
    assert wait_for_job(client, fit["job"]["id"])["state"] == "succeeded"
    return f"/predictors/{fit['predictor']['id']}/predictions"


def test_unknown_method(client: TestClient, cohort: dict, settings: Settings) -> None:
    before = snapshot(settings)
    message = error_of(client.post("/encoders", json={"cohort_id": cohort["id"], "method": "simclr"}))
    assert "simclr" in message and "scarf" in message
    assert snapshot(settings) == before


def test_unknown_label_column(client: TestClient, cohort: dict, settings: Settings) -> None:
    before = snapshot(settings)
    body = {"cohort_id": cohort["id"], "label_column": "cancer_type", "head": "logistic_regression"}
    message = error_of(client.post("/predictors", json=body))
    assert "cancer_type" in message and "tissue" in message
    assert snapshot(settings) == before


@pytest.mark.parametrize("fraction", [0.0, -0.2, 1.5])
def test_label_fraction_outside_unit_interval(
    client: TestClient, cohort: dict, settings: Settings, fraction: float
) -> None:
    before = snapshot(settings)
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression",
            "label_fraction": fraction}
    message = error_of(client.post("/predictors", json=body))
    assert "label_fraction" in message
    assert snapshot(settings) == before


def test_prediction_with_too_few_panel_genes(client: TestClient, predictions_url: str, settings: Settings) -> None:
    panel = pd.read_parquet(COHORT / "expression.parquet")
    genes = list(panel.columns[:200])  # 200 of the 500 panel genes: 40 % coverage, under the 50 % floor
    before = snapshot(settings)
    request = {"genes": genes, "samples": [{"sample_id": "new-1", "values": np.ones(200).tolist()}]}
    message = error_of(client.post(predictions_url, json=request))
    assert "40.0%" in message and "500" in message and "50%" in message
    assert snapshot(settings) == before


def test_inline_samples_name_their_duplicates(client: TestClient, predictions_url: str, settings: Settings) -> None:
    url = predictions_url
    before = snapshot(settings)

    genes = error_of(client.post(url, json={"genes": ["TP53", "EGFR", "TP53"],
                                            "samples": [{"sample_id": "a", "values": [1, 2, 3]}]}))
    ids = error_of(client.post(url, json={"genes": ["TP53"], "samples": [
        {"sample_id": "b", "values": [1]}, {"sample_id": "a", "values": [2]}, {"sample_id": "b", "values": [3]}]}))

    assert genes == "genes: duplicate gene names ['TP53']"
    assert ids == "samples: duplicate sample ids ['b']"
    assert snapshot(settings) == before


def test_inline_samples_naming_one_panel_gene_twice_are_refused(
    client: TestClient, predictions_url: str, settings: Settings
) -> None:
    before = snapshot(settings)
    # SEPT10 (a panel gene of tissue_symbols) was renamed SEPTIN10; ENSG00000161021 is the panel's MAML1.
    for genes in (["SEPTIN10", "MAML1", "SEPT10"], ["MAML1", "SEPT10", "ENSG00000161021.5"]):
        body = {"genes": genes, "samples": [{"sample_id": "a", "values": list(range(len(genes)))}]}

        message = error_of(client.post(predictions_url, json=body))

        assert message.startswith(f"genes: {genes[0]!r} and {genes[-1]!r} name the same gene (key ")
        assert message.endswith("); send it once")
    assert snapshot(settings) == before
    # Two names of a gene the panel lacks are dropped alike: nothing is lost, the request goes on.
    panel = list(pd.read_parquet(COHORT / "expression.parquet").columns)
    assert "TP53" not in panel
    genes = [*panel, "TP53", "ENSG00000141510.18"]
    body = {"genes": genes, "samples": [{"sample_id": "a", "values": [7.0] * len(genes)}]}
    accepted = client.post(predictions_url, json=body)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["coverage"]["n_extra"] == 2


def test_inline_alternate_ensembl_genes_of_a_panel_gene_are_reported_missing_not_refused(
    client: TestClient, predictions_url: str
) -> None:
    # EHMT2's primary-assembly and MHC-haplotype Ensembl genes, both rows of a GRCh37 count file (airway): as an
    # uploaded cohort they are kept apart and EHMT2 is imputed; inline they were refused as "the same gene".
    panel = list(pd.read_parquet(COHORT / "expression.parquet").columns)
    genes = [g for g in panel if g != "EHMT2"] + ["ENSG00000204371.12", "ENSG00000206376.3"]
    body = {"genes": genes, "samples": [{"sample_id": "a", "values": [7.0] * len(genes)}]}

    response = client.post(predictions_url, json=body)

    assert response.status_code == 201, response.text
    coverage = response.json()["coverage"]
    assert (coverage["n_found"], coverage["n_missing"], coverage["n_extra"], coverage["coverage"]) == (499, 1, 2, 0.998)
    assert coverage["missing"] == ["EHMT2"] and coverage["imputed"] == 1
    assert coverage["missing_reasons"] == [{
        "panel": "EHMT2", "input": ["ENSG00000204371.12", "ENSG00000206376.3"],
        "reason": "distinct Ensembl genes of EHMT2 (alternate haplotypes or patches): each is kept apart, none is "
                  "taken for it",
    }]


def test_inline_values_name_their_sample_and_gene(client: TestClient, predictions_url: str, settings: Settings) -> None:
    url = predictions_url
    before = snapshot(settings)

    # 1e39 is a finite JSON number but beyond float32, the matrices' type.
    too_large = error_of(client.post(url, json={"genes": ["TP53", "EGFR"], "samples": [
        {"sample_id": "a", "values": [1, 2]}, {"sample_id": "b", "values": [3, 1e39]}]}))
    short = error_of(client.post(url, json={"genes": ["TP53", "EGFR"], "samples": [
        {"sample_id": "a", "values": [1, 2]}, {"sample_id": "c", "values": [3]}]}))
    text = client.post(url, json={"genes": ["TP53"], "samples": [{"sample_id": "d", "values": ["high"]}]})

    assert too_large == "sample 'b', gene 'EGFR': value is not a finite number"
    assert short == "sample 'c' has 1 values but 2 genes were given"
    assert text.status_code == 422 and "samples.0.values.0" in text.json()["error"]["message"]
    assert snapshot(settings) == before


def counts_matrix(negative_at: tuple[int, int] | None = None) -> tuple[bytes, bytes]:
    """40 samples x 30 genes of Poisson counts (two classes), with one negative value if asked."""
    rng = np.random.default_rng(0)
    values = rng.poisson(200, size=(40, 30)).astype(float)
    values[20:, :5] *= 3  # class b expresses the first five genes more
    if negative_at is not None:
        values[negative_at] = -1.5
    samples = [f"s{i}" for i in range(40)]
    header = ["sample_id", *GENES, *[f"GENE{i}" for i in range(26)]]
    expression = csv_bytes([[s, *row] for s, row in zip(samples, values.tolist(), strict=True)], header)
    labels = csv_bytes([[s, "a" if i < 20 else "b"] for i, s in enumerate(samples)], ["sample_id", "kind"])
    return expression, labels


def test_log_scale_input_for_a_counts_model_is_refused_naming_its_sample_gene_or_cohort(client: TestClient) -> None:
    expression, labels = counts_matrix()
    cohort = client.post("/cohorts", files={"expression": ("c.csv", expression), "labels": ("l.csv", labels)}).json()
    assert cohort["value_kind"] == "counts"
    fit = client.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "kind",
                                            "head": "logistic_regression"}).json()
    pretrain = client.post("/encoders", json={"cohort_id": cohort["id"], "params": {
        "epochs": 1, "hidden_dim": 16, "n_layers": 1, "batch_size": 16}}).json()
    for job in (fit["job"], pretrain["job"]):
        assert wait_for_job(client, job["id"])["state"] == "succeeded"
    genes = [*GENES, *[f"GENE{i}" for i in range(26)]]
    samples = [{"sample_id": "ok", "values": [100.0] * 30}, {"sample_id": "logged", "values": [7.0] * 30}]
    samples[1]["values"][2] = -0.25  # a log-scale value below zero, gene MYC
    body = {"genes": genes, "samples": samples}

    for url, model in ((f"/predictors/{fit['predictor']['id']}/predictions", f"predictor {fit['predictor']['id']}"),
                       (f"/encoders/{pretrain['encoder']['id']}/embeddings", f"encoder {pretrain['encoder']['id']}")):
        message = error_of(client.post(url, json=body))
        assert message.startswith("sample 'logged', gene 'MYC': value -0.25 is negative (1 negative values in all)")
        assert f"{model} was fitted on counts or TPM" in message
    assert client.get(f"/predictors/{fit['predictor']['id']}/predictions").json() == []
    samples[1]["values"][2] = 0.0
    assert client.post(f"/predictors/{fit['predictor']['id']}/predictions", json=body).status_code == 201

    # A stored cohort of log values (all non-negative) for the counts models: refused, not log-transformed twice.
    frame = pd.read_csv(io.BytesIO(expression), index_col=0)
    logged = np.log2(frame + 1).round(3).to_csv().encode()
    log_cohort = client.post("/cohorts", files={"expression": ("log.csv", logged)}).json()
    assert log_cohort["value_kind"] == "log"
    for url, model in ((f"/predictors/{fit['predictor']['id']}/predictions", f"predictor {fit['predictor']['id']}"),
                       (f"/encoders/{pretrain['encoder']['id']}/embeddings", f"encoder {pretrain['encoder']['id']}")):
        message = error_of(client.post(url, json={"cohort_id": log_cohort["id"]}))
        assert message.startswith(f"cohort {log_cohort['id']} holds log values (detected), but {model} was "
                                  f"standardised on counts values (cohort {cohort['id']})")
        assert client.post(url, json={"cohort_id": cohort["id"]}).status_code in (200, 201)


def test_log1p_on_a_cohort_with_negative_values_is_refused_before_a_job(client: TestClient, settings: Settings) -> None:
    expression, _ = counts_matrix(negative_at=(3, 4))
    cohort = client.post("/cohorts", files={"expression": ("c.csv", expression)}).json()
    assert cohort["value_kind"] == "log"  # a negative value: not counts
    before = snapshot(settings)
    message = error_of(client.post("/encoders", json={"cohort_id": cohort["id"], "log1p": "yes"}))
    assert f"cohort {cohort['id']} holds 1 negative ones (minimum -1.5; its values are log)" in message
    assert snapshot(settings) == before  # no encoder, no job


def test_a_test_split_that_would_take_a_whole_class_is_refused_before_any_job(client: TestClient,
                                                                               settings: Settings) -> None:
    cohort = str(upload(client)["id"])  # tissue_symbols: placenta has 6 samples, endometrium 15
    before = snapshot(settings)
    predictor = {"cohort_id": cohort, "label_column": "tissue", "head": "logistic_regression", "test_size": 0.97}
    evaluation = {"cohort_id": cohort, "label_column": "tissue", "methods": [], "baselines": ["logistic_regression"],
                  "fractions": [0.01], "n_seeds": 1, "test_size": 0.9}

    for path, body in (("/predictors", predictor), ("/evaluations", evaluation)):
        response = client.post(path, json=body)
        assert response.status_code == 422, response.text
        message = error_of(response)
        assert f"test_size {body['test_size']:g} would hold out every sample of 'tissue' class(es) 'placenta' " \
               "(6 samples)" in message
        assert "test_size must be at most 0.83" in message
    assert snapshot(settings) == before
    fine = client.post("/predictors", json={**predictor, "test_size": 0.8})
    assert fine.status_code == 202 and wait_for_job(client, fine.json()["job"]["id"])["state"] == "succeeded"


def test_a_grouped_test_split_that_took_a_whole_class_fails_the_fit_naming_it(client: TestClient) -> None:
    # Class "rare" lives in one patient only: a grouped split can put that patient, and so the class, on the
    # test side, which no count of the class's samples at request time can foresee.
    rng = np.random.default_rng(0)
    patients = [f"P{i // 4}" for i in range(40)] + ["P99", "P99"]
    tissue = ["a" if i % 8 < 4 else "b" for i in range(40)] + ["rare", "rare"]
    y = np.array([{"a": 0, "b": 1, "rare": 2}[t] for t in tissue])
    seed = next(s for s in range(100) if 2 not in y[split_train_test(y, np.array(patients), test_size=0.5,
                                                                     seed=s)[0]])
    ids = [f"s{i}" for i in range(len(tissue))]
    matrix = pd.DataFrame(rng.normal(size=(len(ids), 4)), index=pd.Index(ids, name="sample_id"), columns=GENES)
    labels = pd.DataFrame({"sample_id": ids, "tissue": tissue, "patient": patients})
    files = {"expression": ("m.csv", matrix.to_csv().encode()),
             "labels": ("l.csv", labels.to_csv(index=False).encode())}
    cohort = client.post("/cohorts", files=files, data={"group_column": "patient"}).json()

    accepted = client.post("/predictors", json={"cohort_id": cohort["id"], "label_column": "tissue",
                                                "head": "logistic_regression", "seed": seed, "test_size": 0.5})

    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(client, accepted.json()["job"]["id"])
    assert job["state"] == "failed"
    assert "the test split (test_size 0.5 (its groups: whole patients go to one side)) holds every sample of " \
           "class(es) 'rare' of 'tissue', leaving none to train on" in str(job["error"])


def test_pretraining_a_single_sample_is_refused_before_any_job(client: TestClient, settings: Settings) -> None:
    one = csv_bytes([["s1", 1, 2, 3, 4]], ["sample_id", *GENES])
    cohort = client.post("/cohorts", files={"expression": ("m.csv", one)}).json()
    before = snapshot(settings)

    response = client.post("/encoders", json={"cohort_id": cohort["id"]})

    assert response.status_code == 422
    assert error_of(response) == (f"cohort {cohort['id']} holds 1 sample; pretraining needs at least 2 "
                                  "(BatchNorm normalises over a batch)")
    assert snapshot(settings) == before


@pytest.mark.parametrize("n", range(2, 60))
def test_the_largest_test_size_a_refusal_names_is_accepted(n: int) -> None:
    cohort = SimpleNamespace(id="c", label_columns=[{"name": "tissue", "classes": {"rare": n, "common": 500}}])
    limit = 1 - 1 / n

    with pytest.raises(InvalidInput, match=r"test_size must be at most (\d\.\d\d)$") as refused:
        check_label_column(cohort, "tissue", test_size=min(limit + 0.011, 0.999))  # type: ignore[arg-type]
    named = float(re.search(r"at most (\d\.\d\d)$", str(refused.value)).group(1))  # type: ignore[union-attr]

    assert limit - 0.01 < named <= limit + 1e-9
    check_label_column(cohort, "tissue", test_size=named)  # type: ignore[arg-type]
    if round(limit, 2) == limit or n in (5, 10):  # 0.8 for 5 samples and 0.9 for 10 leave exactly one
        check_label_column(cohort, "tissue", test_size=round(limit, 2))  # type: ignore[arg-type]


def test_a_stored_model_its_loader_refuses_answers_409_not_500(
    client: TestClient, predictions_url: str, settings: Settings
) -> None:
    # Bytes whose checksum the registry holds but whose contents the loader refuses, as an artifact written
    # by an older version with, say, a panel naming one gene twice would be.
    predictor_id = predictions_url.split("/")[2]
    buffer = io.BytesIO()
    torch.save({"kind": "predictor", "format_version": 1}, buffer)
    with session_factory()() as session:
        row = session.get_one(orm.Predictor, predictor_id)
        key = f"predictors/{predictor_id}/refused.pt"
        row.artifact_key, row.artifact_sha256 = key, get_store().put_bytes(key, buffer.getvalue())
        session.commit()
    body = {"genes": ["TP53"], "samples": [{"sample_id": "a", "values": [1.0]}]}

    response = client.post(predictions_url, json=body)

    assert response.status_code == 409, response.text
    message = error_of(response)
    assert message.startswith(f"the stored model {key} cannot be used: ")
    assert message.endswith("; fit or pretrain it again")


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/encoders", {"params": {"hidden_dim": 20000, "n_layers": 8}},
         "params: hidden_dim=20000 is above this server's most, 2,048 (EXPRSSL_MAX_HIDDEN_DIM)"),
        ("/encoders", {"params": {"epochs": 10**22}}, "params: epochs=1e+22 is above this server's most, 10,000 "
                                                      "(EXPRSSL_MAX_EPOCHS)"),
        ("/predictors", {"label_column": "tissue", "head": "finetune", "params": {"max_epochs": 10**11}},
         "params: max_epochs=1e+11 is above"),
        ("/evaluations", {"label_column": "tissue", "method_params": {"scarf": {"epochs": 10**11}}},
         "method_params.scarf: epochs=1e+11 is above"),
        ("/evaluations", {"label_column": "tissue", "head_params": {"batch_size": 10**6}},
         "head_params: batch_size=1e+06 is above this server's most, 65,536 (EXPRSSL_MAX_BATCH_SIZE)"),
    ],
)
def test_training_requests_beyond_the_servers_bounds_are_refused(
    client: TestClient, cohort: dict, settings: Settings, path: str, body: dict, named: str
) -> None:
    before = snapshot(settings)

    message = error_of(client.post(path, json={"cohort_id": cohort["id"], **body}))

    assert message.startswith(named)
    assert snapshot(settings) == before


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/predictors", '"label_column": "tissue", "head": "logistic_regression", "params": {"C": 1e999}',
         "params: C must be a finite number > 0, got inf"),
        ("/evaluations", '"label_column": "tissue", "logreg_c": 1e999', "logreg_c: Input should be a finite number"),
    ],
)
def test_an_infinite_regularisation_is_refused_not_stored(
    client: TestClient, cohort: dict, settings: Settings, path: str, body: str, named: str
) -> None:
    # JSON's 1e999 is infinity: stored as Infinity, which PostgreSQL's json refuses (a 500 there).
    before = snapshot(settings)

    response = client.post(path, content=f'{{"cohort_id": "{cohort["id"]}", {body}}}',
                           headers={"content-type": "application/json"})

    assert error_of(response).startswith(named)
    assert snapshot(settings) == before


@pytest.mark.parametrize("value", ["kid\x00ney", "\x1b[31mred"])
def test_label_values_with_control_characters_are_refused(client: TestClient, unchanged: None, value: str) -> None:
    matrix = csv_bytes([[f"s{i}", i, i + 1, i + 2, i + 3] for i in range(4)], ["sample_id", *GENES])
    labels = pd.DataFrame({"sample_id": [f"s{i}" for i in range(4)], "tissue": ["a", value, "b", "b"]})

    error = post_matrix(client, matrix, labels.to_csv(index=False).encode())

    assert error["message"] == ("label column 'tissue', sample 's1': the value holds a control character (only "
                                "tabs and line breaks are allowed)")


def test_label_values_may_hold_tabs_line_breaks_and_long_free_text(client: TestClient) -> None:
    matrix = csv_bytes([[f"s{i}", i, i + 1, i + 2, i + 3] for i in range(4)], ["sample_id", *GENES])
    labels = pd.DataFrame({"sample_id": [f"s{i}" for i in range(4)], "note": ["a\\tb", "two\\nlines", "c", "d"]})
    files = {"expression": ("m.csv", matrix), "labels": ("l.csv", labels.to_csv(index=False).encode())}

    assert client.post("/cohorts", files=files).status_code == 201


def test_annotation_column_names_from_a_gct_follow_the_name_rules(client: TestClient, unchanged: None) -> None:
    gct = "#1.3\n2\t3\t0\t1\nid\tS1\tS2\tS3\ntis\x1b[2Jsue\ta\tb\tb\nTP53\t1\t2\t3\nEGFR\t4\t5\t6\n"

    error = post_matrix(client, gct.encode(), name="m.gct")

    assert error["message"].startswith("the expression file's gct annotations: the phenotype column name "
                                       "'tis\\x1b[2Jsue' holds a control character")


def test_a_labels_file_of_more_than_a_thousand_columns_is_refused(client: TestClient, unchanged: None) -> None:
    matrix = csv_bytes([[f"s{i}", i, i + 1, i + 2, i + 3] for i in range(4)], ["sample_id", *GENES])
    header = ",".join(["sample_id", *(f"c{j}" for j in range(1001))])
    rows = "".join(f"s{i}," + ",".join(["v"] * 1001) + "\n" for i in range(4))

    error = post_matrix(client, matrix, (header + "\n" + rows).encode())

    assert error["message"] == "labels.csv: 1,001 phenotype columns; at most 1,000 are read"


def test_an_unexpected_server_error_has_the_error_shape_and_no_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """"Errors always have one shape" (README): a bug used to answer a text/plain 'Internal Server Error'."""
    from app.auth import router

    class Broken:
        @staticmethod
        def model_validate(*_: object, **__: object) -> None:
            raise RuntimeError("secret internals /var/lib/exprssl")

    monkeypatch.setattr(router, "MeRead", Broken)
    raw = TestClient(client.app, headers=client.headers, raise_server_exceptions=False)  # the app is started
    response = raw.get("/me")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {
        "code": "internal_error", "message": "internal server error; the server's log has the details",
        "details": {"cause": "RuntimeError"}}}
