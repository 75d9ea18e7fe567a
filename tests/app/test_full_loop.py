"""The whole loop on the embedded default, on a real cohort: upload, pretrain, fit three heads, predict.

Cohort: tissue_symbols (Zilliox & Irizarry, dslabs), 189 microarray samples x 500 genes, seven tissues.
Chance level (always the majority class, kidney) is 39/189 = 0.21 over the cohort.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from tests.conftest import SHARED_DATA, wait_for_job

COHORT = SHARED_DATA / "tissue_symbols"
CHANCE = 39 / 189


def upload(client: TestClient, cohort: Path = COHORT) -> dict[str, object]:
    response = client.post(
        "/cohorts",
        files={
            "expression": ("expression.parquet", (cohort / "expression.parquet").read_bytes()),
            "labels": ("labels.csv", (cohort / "labels.csv").read_bytes()),
        },
        data={"name": "tissues"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def start(client: TestClient, path: str, body: dict[str, object]) -> dict[str, object]:
    response = client.post(path, json=body)
    assert response.status_code == 202, response.text
    return response.json()


@pytest.mark.slow
def test_full_loop_on_tissue_cohort(client: TestClient, settings: Settings) -> None:
    cohort = upload(client)
    assert (cohort["n_samples"], cohort["n_genes"]) == (189, 500)
    assert cohort["gene_id_type"] == "symbol" and cohort["value_kind"] == "log"
    tissue = next(c for c in cohort["label_columns"] if c["name"] == "tissue")
    assert tissue["classes"]["kidney"] == 39 and tissue["n_labelled"] == 189

    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "method": "scarf", "params": {"epochs": 30}})
    assert accepted["job"]["state"] in {"queued", "running", "succeeded"}
    job = wait_for_job(client, accepted["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    assert [e["to_state"] for e in job["events"] if e["to_state"]] == ["running", "succeeded"]
    encoder = client.get(f"/encoders/{accepted['encoder']['id']}").json()
    assert encoder["status"] == "ready" and encoder["n_genes"] == 500
    assert len(encoder["loss_curve"]) == 30 and encoder["loss_curve"][-1] < encoder["loss_curve"][0]
    assert encoder["params"]["corruption_rate"] == 0.3 and encoder["params"]["batch_size"] == 256

    predictors = {}
    for head in ("linear_probe", "finetune", "logistic_regression"):
        body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": head, "seed": 1}
        if head != "logistic_regression":
            body["encoder_id"] = encoder["id"]
        fit = start(client, "/predictors", body)
        assert wait_for_job(client, fit["job"]["id"])["state"] == "succeeded"
        predictors[head] = client.get(f"/predictors/{fit['predictor']['id']}").json()

    for head, predictor in predictors.items():
        metrics = predictor["metrics"]
        # Seven tissues, majority share 0.21: a working pipeline is far above that on held-out samples.
        assert metrics["chance_accuracy"] < 0.3
        floor = 0.6 if head == "linear_probe" else 0.85
        assert metrics["accuracy"] >= floor, (head, metrics)
        assert metrics["balanced_accuracy"] >= floor - 0.1, (head, metrics)
        assert sum(map(sum, metrics["confusion_matrix"])) == predictor["split"]["n_test"] == 38

    # Predict the held-out samples inline, as a client would send them.
    expression = pd.read_parquet(COHORT / "expression.parquet")
    labels = pd.read_csv(COHORT / "labels.csv", dtype=str).set_index("sample_id")["tissue"]
    lr = predictors["logistic_regression"]
    test_ids = lr["split"]["test_sample_ids"]
    assert not set(test_ids) & set(lr["split"]["train_sample_ids"])
    body = {
        "genes": list(expression.columns),
        "samples": [{"sample_id": s, "values": expression.loc[s].tolist()} for s in test_ids],
    }
    response = client.post(f"/predictors/{lr['id']}/predictions", json=body)
    assert response.status_code == 201, response.text
    prediction = response.json()
    assert prediction["coverage"]["coverage"] == 1.0 and prediction["n_samples"] == len(test_ids)
    correct = sum(r["top_label"] == labels[r["sample_id"]] for r in prediction["results"])
    assert correct / len(test_ids) == pytest.approx(lr["metrics"]["accuracy"])
    for result in prediction["results"]:
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert client.get(f"/predictions/{prediction['id']}").json()["results"] == prediction["results"]

    # Everything is in the registry and the artifact store.
    with session_factory()() as session:
        counts = {t.__name__: session.scalar(select(func.count()).select_from(t)) for t in
                  (orm.Cohort, orm.CohortSample, orm.Encoder, orm.Predictor, orm.Prediction, orm.Job)}
        assert counts == {"Cohort": 1, "CohortSample": 189, "Encoder": 1, "Predictor": 3, "Prediction": 1, "Job": 4}
        keys = [cohort_row.storage_key for cohort_row in session.scalars(select(orm.Cohort))]
        keys += [e.artifact_key for e in session.scalars(select(orm.Encoder))]
        keys += [p.artifact_key for p in session.scalars(select(orm.Predictor))]
    for key in keys:
        assert (settings.resolved_artifact_dir / key).is_file(), key
