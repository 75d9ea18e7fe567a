"""POST /encoders/{id}/embeddings: the encoder's representation of samples, by any gene naming, as JSON, CSV
or Parquet, under the prediction coverage gate; on tissue_symbols the vectors keep the tissues apart."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from app.config import get_settings
from app.errors import Conflict, InvalidInput
from app.inputs import align_input
from tests.app.test_continued_pretraining import stored_encoder
from tests.app.test_full_loop import COHORT, start, upload
from tests.app.test_gene_resolution import EXPRESSION, ensembl_names
from tests.conftest import wait_for_job

LABELS = pd.read_csv(COHORT / "labels.csv", dtype=str).set_index("sample_id")["tissue"]


@pytest.fixture
def cohort(client: TestClient) -> dict[str, Any]:
    return upload(client)


@pytest.fixture
def encoder(client: TestClient, cohort: dict[str, Any]) -> dict[str, Any]:
    params = {"epochs": 5, "hidden_dim": 32, "n_layers": 2, "batch_size": 64}
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "params": params})
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    return client.get(f"/encoders/{accepted['encoder']['id']}").json()


def inline(frame: pd.DataFrame) -> dict[str, Any]:
    samples = [{"sample_id": s, "values": r.tolist()} for s, r in frame.iterrows()]
    return {"genes": list(frame.columns), "samples": samples}


def test_a_cohort_and_the_same_samples_inline_under_other_names_embed_alike(
    client: TestClient, cohort: dict[str, Any], encoder: dict[str, Any]
) -> None:
    url = f"/encoders/{encoder['id']}/embeddings"
    whole = client.post(url, json={"cohort_id": cohort["id"]})
    assert whole.status_code == 200, whole.text
    body = whole.json()
    assert (body["n_samples"], body["dim"]) == (189, 32) and len(body["embeddings"]) == 189
    vectors = pd.DataFrame(body["embeddings"], index=body["sample_ids"])
    assert body["coverage"]["coverage"] == 1.0 and body["coverage"]["warning"] is None

    # The encoder's own forward pass on its own preprocessing gives the same vectors.
    network, preprocessor = stored_encoder(encoder["id"])
    with torch.inference_mode():
        direct = network(torch.from_numpy(preprocessor.transform(EXPRESSION.loc[vectors.index].values))).numpy()
    np.testing.assert_allclose(vectors.values, direct, atol=1e-5)

    # Five samples inline, named by versioned Ensembl ids, in shuffled column order.
    five = EXPRESSION.iloc[:5]
    renamed = five.rename(columns=ensembl_names(list(five.columns)))
    renamed = renamed[np.random.default_rng(0).permutation(renamed.columns)]
    response = client.post(url, json=inline(renamed))
    assert response.status_code == 200, response.text
    again = response.json()
    assert again["sample_ids"] == list(five.index)
    assert again["coverage"]["n_matched_by_conversion"] > 450
    np.testing.assert_allclose(again["embeddings"], vectors.loc[five.index].values, atol=1e-5)


def test_the_vectors_keep_tissues_apart(client: TestClient, cohort: dict[str, Any], encoder: dict[str, Any]) -> None:
    body = client.post(f"/encoders/{encoder['id']}/embeddings", json={"cohort_id": cohort["id"]}).json()
    z = np.asarray(body["embeddings"])
    tissues = LABELS.loc[body["sample_ids"]].to_numpy()
    # Leave-one-out nearest neighbour in the 32-dimensional representation of a 5-epoch encoder: 0.82 here,
    # against 0.21 for the majority class (39/189).
    distances = ((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(distances, np.inf)
    accuracy = float(np.mean(tissues[distances.argmin(axis=1)] == tissues))
    assert accuracy > 0.6


def test_csv_and_parquet_hold_the_same_table(client: TestClient, encoder: dict[str, Any]) -> None:
    url = f"/encoders/{encoder['id']}/embeddings"
    body = inline(EXPRESSION.iloc[:3])
    as_json = client.post(url, json=body).json()

    as_csv = client.post(url, json=body, params={"format": "csv"})
    as_parquet = client.post(url, json=body, params={"format": "parquet"})

    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert as_csv.headers["x-gene-coverage"] == "1.000000" and as_csv.headers["x-genes-imputed"] == "0"
    for table in (pd.read_csv(io.StringIO(as_csv.text)), pd.read_parquet(io.BytesIO(as_parquet.content))):
        assert list(table.columns) == ["sample_id", *[f"z{i}" for i in range(32)]]
        assert table["sample_id"].tolist() == as_json["sample_ids"]
        np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), as_json["embeddings"], rtol=1e-6, atol=1e-6)


def test_too_few_genes_are_refused_and_few_are_warned_about(client: TestClient, encoder: dict[str, Any]) -> None:
    url = f"/encoders/{encoder['id']}/embeddings"
    columns = list(EXPRESSION.columns)

    refused = client.post(url, json=inline(EXPRESSION.iloc[:2][columns[:200]]))
    warned = client.post(url, json=inline(EXPRESSION.iloc[:2][columns[:400]]))

    assert refused.status_code == 422
    assert "input covers 40.0% of the encoder's 500 panel genes" in refused.json()["error"]["message"]
    assert warned.status_code == 200
    assert "80.0% of the encoder's 500 panel genes" in warned.json()["coverage"]["warning"]
    assert warned.json()["coverage"]["imputed"] == 100


def test_values_too_large_for_the_model_are_refused_naming_sample_and_gene(
    client: TestClient, cohort: dict[str, Any], encoder: dict[str, Any]
) -> None:
    frame = EXPRESSION.iloc[:3].copy()
    gene = frame.columns[7]
    frame.loc[frame.index[1], gene] = 3e38  # finite in float32, but its z-score is not
    predictor = start(client, "/predictors", {"cohort_id": cohort["id"], "label_column": "tissue",
                                              "head": "logistic_regression"})
    assert wait_for_job(client, predictor["job"]["id"])["state"] == "succeeded"
    models = {f"encoder {encoder['id']}": f"/encoders/{encoder['id']}/embeddings",
              f"predictor {predictor['predictor']['id']}": f"/predictors/{predictor['predictor']['id']}/predictions"}
    for model, url in models.items():
        for fmt in ("json", "csv", "parquet"):
            response = client.post(url, json=inline(frame), params={"format": fmt} if "embeddings" in url else {})
            assert response.status_code == 422, (model, fmt, response.text[:200])
            message = response.json()["error"]["message"]
            assert message.startswith(f"sample {frame.index[1]!r}, gene {gene!r}: value 3e+38 is ")
            assert f"standard deviations from the mean of {model}'s training data" in message
    # With ridge imputation too: the value is refused before it could spread into the imputed genes.
    partial = inline(frame.drop(columns=frame.columns[100:200]))
    response = client.post(models[f"predictor {predictor['predictor']['id']}"], json={**partial, "imputation": "ridge"})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(f"sample {frame.index[1]!r}, gene {gene!r}: value 3e+38")
    assert client.get(f"/predictors/{predictor['predictor']['id']}/predictions").json() == []


def test_an_unfinished_encoder_or_a_bad_request_is_refused(client: TestClient, cohort: dict[str, Any]) -> None:
    pending = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 500, "batch_size": 64}})
    url = f"/encoders/{pending['encoder']['id']}/embeddings"

    busy = client.post(url, json={"cohort_id": cohort["id"]})
    both = client.post(url, json={"cohort_id": cohort["id"], **inline(EXPRESSION.iloc[:1])})
    cut_short = b'{"genes": ["TP53"], "samples": ['
    not_json = client.post(url, content=cut_short, headers={"content-type": "application/json"})
    text_value = client.post(url, json={"genes": ["TP53"], "samples": [{"sample_id": "a", "values": ["high"]}]})

    assert busy.status_code == 409 and "not ready" in busy.json()["error"]["message"]
    assert both.status_code == 422 and "either cohort_id, or genes and samples" in both.text
    assert not_json.status_code == 422 and not_json.json()["error"]["code"] == "invalid_request"
    assert "json" in not_json.json()["error"]["message"].lower()
    assert text_value.status_code == 422 and "samples.0.values.0" in text_value.json()["error"]["message"]
    assert client.post(f"/jobs/{pending['job']['id']}/cancel").status_code == 200
    wait_for_job(client, pending["job"]["id"])


def test_a_cohort_too_large_for_json_comes_as_a_table(
    client: TestClient, cohort: dict[str, Any], encoder: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPRSSL_MAX_INLINE_SAMPLES", "100")
    get_settings.cache_clear()
    url = f"/encoders/{encoder['id']}/embeddings"

    as_json = client.post(url, json={"cohort_id": cohort["id"]})
    as_parquet = client.post(url, json={"cohort_id": cohort["id"]}, params={"format": "parquet"})

    assert as_json.status_code == 422
    assert "189 samples; JSON holds at most 100" in as_json.json()["error"]["message"]
    assert as_parquet.status_code == 200 and len(pd.read_parquet(io.BytesIO(as_parquet.content))) == 189


def test_csv_cells_never_start_a_spreadsheet_formula(client: TestClient, encoder: dict[str, Any]) -> None:
    rows = EXPRESSION.iloc[:2].copy()
    rows.index = ["=HYPERLINK(1)", "plain"]

    as_csv = client.post(f"/encoders/{encoder['id']}/embeddings", json=inline(rows), params={"format": "csv"})
    as_parquet = client.post(f"/encoders/{encoder['id']}/embeddings", json=inline(rows), params={"format": "parquet"})

    assert pd.read_csv(io.StringIO(as_csv.text))["sample_id"].tolist() == ["'=HYPERLINK(1)", "plain"]
    assert pd.read_parquet(io.BytesIO(as_parquet.content))["sample_id"].tolist() == ["=HYPERLINK(1)", "plain"]


def test_tables_carry_the_coverage_warning_in_headers(client: TestClient, encoder: dict[str, Any]) -> None:
    partial = inline(EXPRESSION.iloc[:2][list(EXPRESSION.columns)[:400]])

    response = client.post(f"/encoders/{encoder['id']}/embeddings", json=partial, params={"format": "csv"})

    assert response.headers["x-gene-coverage"] == "0.800000" and response.headers["x-genes-imputed"] == "100"
    warning = response.headers["x-gene-coverage-warning"]
    assert "80.0% of the encoder's 500 panel genes" in warning and "ridge" not in warning
    assert "x-gene-table-note" not in response.headers


def test_a_panel_whose_own_names_collide_is_the_models_fault() -> None:
    with pytest.raises(Conflict, match="encoder e1 has an inconsistent gene panel"):
        align_input(np.ones((1, 1), np.float32), ["TP53"], ["TP53", "tp53"], model="encoder e1")
    with pytest.raises(Conflict, match="inconsistent gene panel"):  # even when the input mirrors it
        align_input(np.ones((1, 3), np.float32), ["tp53", "TP53", "EGFR"], ["TP53", "tp53", "EGFR"], model="e1")
    with pytest.raises(InvalidInput, match="genes: 1 input gene id"):
        align_input(np.ones((1, 2), np.float32), ["TP53", "tp53"], ["TP53"], model="encoder e1")
