"""The evaluation endpoint runs the label-efficiency protocol on a real cohort, leak-free, and draws it.

Cohort: tissue_symbols (189 samples x 500 genes, seven tissues; chance level 39/189 = 0.21), uploaded with
an added `donor` column grouping consecutive samples in threes, so that splits must respect groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models.methods import METHODS
from tests.app.test_full_loop import COHORT
from tests.conftest import wait_for_job


def upload_with_donors(client: TestClient, unlabelled: int = 0) -> tuple[dict, pd.Series]:
    """The cohort with donors of three samples; the first sample of the first ``unlabelled`` donors has no
    tissue label (an unlabelled sample of a donor whose other samples are labelled)."""
    labels = pd.read_csv(COHORT / "labels.csv", dtype=str).sort_values("sample_id").reset_index(drop=True)
    labels["donor"] = [f"donor-{i // 3:02d}" for i in range(len(labels))]
    labels.loc[[3 * d for d in range(unlabelled)], "tissue"] = None
    response = client.post(
        "/cohorts",
        files={
            "expression": ("expression.parquet", (COHORT / "expression.parquet").read_bytes()),
            "labels": ("labels.csv", labels.to_csv(index=False).encode()),
        },
        data={"group_column": "donor"},
    )
    assert response.status_code == 201, response.text
    return response.json(), labels.set_index("sample_id")["donor"]


@pytest.mark.slow
def test_evaluation_protocol_on_real_cohort(client: TestClient) -> None:
    cohort, donors = upload_with_donors(client, unlabelled=20)
    assert cohort["group_column"] == "donor" and cohort["n_groups"] == 63
    methods = sorted(METHODS)
    body = {
        "cohort_id": cohort["id"],
        "label_column": "tissue",
        "methods": methods,
        "method_params": {m: {"epochs": 2} for m in methods},
        "fractions": [1.0, 0.1],
        "n_seeds": 2,
        "head_params": {"max_epochs": 20, "patience": 5},
        "pca_components": 20,
    }
    response = client.post("/evaluations", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = wait_for_job(client, accepted["job"]["id"], timeout=900)
    assert job["state"] == "succeeded", job["error"]
    evaluation = client.get(f"/evaluations/{accepted['evaluation']['id']}").json()
    assert evaluation["status"] == "ready" and evaluation["config"]["fractions"] == [0.1, 1.0]

    models = {"mlp_scratch", "logistic_regression", "pca_logistic_regression"}
    models |= {f"{m}/{h}" for m in methods for h in ("linear_probe", "finetune")}
    keys = [(r["model"], r["fraction"], r["seed"]) for r in evaluation["runs"]]
    assert sorted(keys) == sorted((m, f, s) for m in models for f in (0.1, 1.0) for s in (0, 1))
    for run in evaluation["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0 and 0.0 <= run["macro_f1"] <= 1.0
        assert run["n_test"] >= 30
    summary = {(e["model"], e["fraction"]): e for e in evaluation["summary"]}
    for baseline in ("logistic_regression", "pca_logistic_regression"):
        # Chance is 0.21; the linear baselines separate tissues almost perfectly with all labels.
        assert summary[(baseline, 1.0)]["accuracy"]["mean"] >= 0.85
    assert summary[("mlp_scratch", 1.0)]["accuracy"]["mean"] >= 0.6
    assert evaluation["label_savings"]["reference"] == "mlp_scratch"
    assert set(evaluation["label_savings"]["models"]) == models

    assert evaluation["timings"]["n_unlabelled"] == 20 and evaluation["timings"]["n_labelled"] == 169
    for split in evaluation["timings"]["splits"]:
        test_donors = set(donors[split["test_sample_ids"]])
        assert test_donors.isdisjoint(donors[split["train_pool_sample_ids"]])
        # SSL pretraining left out the unlabelled samples of the test donors, and used the others.
        left_out = set(donors[split["unlabelled_left_out_sample_ids"]])
        assert left_out == {f"donor-{d:02d}" for d in range(20)} & test_donors
        assert split["n_unlabelled_used"] == 20 - len(left_out)
        # Each fraction's training subset, rebuilt from the stored first fractions, is what its runs trained on.
        first = split["train_pool_first_fraction"]
        assert len(first) == len(split["train_pool_sample_ids"]) and set(first) == {0.1, 1.0}
        for fraction in (0.1, 1.0):
            runs = [r for r in evaluation["runs"] if (r["fraction"], r["seed"]) == (fraction, split["seed"])]
            n_train = {r["n_train"] for r in runs}
            assert n_train == {sum(f <= fraction for f in first)}

    png = client.get(f"/evaluations/{evaluation['id']}/plot.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n" and len(png.content) > 20_000
    if (target := os.environ.get("EXPRSSL_SAVE_PLOT")):
        Path(target).write_bytes(png.content)
    listed = client.get("/evaluations").json()
    assert [e["id"] for e in listed] == [evaluation["id"]]
    # The list carries the results people compare (summary, label savings), not every run and split.
    assert "runs" not in listed[0] and "timings" not in listed[0]
    assert listed[0]["summary"] == evaluation["summary"] and listed[0]["label_savings"] == evaluation["label_savings"]


def test_evaluation_request_errors_name_the_problem(client: TestClient) -> None:
    cohort, _ = upload_with_donors(client)
    cases = [
        ({"methods": ["simclr"]}, "simclr"),
        ({"fractions": [0.5, 1.5]}, "fractions"),
        ({"label_column": "stage"}, "stage"),
        ({"method_params": {"scarf": {"epochs": -1}}}, "epochs"),
        ({"encoder_ids": ["nope"]}, "encoder nope not found"),
        ({"baselines": ["logistic_regression"]}, "mlp_scratch, pca_logistic_regression left out"),
        ({"methods": [], "encoder_ids": ["nope"], "baselines": []}, "mlp_scratch, logistic_regression, pca_"),
    ]
    for change, fragment in cases:
        body = {"cohort_id": cohort["id"], "label_column": "tissue", "methods": ["scarf"], **change}
        response = client.post("/evaluations", json=body)
        assert 400 <= response.status_code < 500, (change, response.text)
        assert fragment in response.json()["error"]["message"], (change, response.json())
    assert client.get("/evaluations").json() == []
    assert client.get("/jobs").json() == []


def test_methods_list_the_papers_defaults(client: TestClient) -> None:
    methods = {m["name"]: m["defaults"] for m in client.get("/methods").json()}
    assert set(methods) == {"scarf", "vime", "byol"}
    assert (methods["scarf"]["epochs"], methods["scarf"]["lr"], methods["scarf"]["batch_size"]) == (1000, 1e-4, 256)
    assert (methods["vime"]["epochs"], methods["vime"]["alpha"], methods["vime"]["batch_size"]) == (500, 2.0, 32)
    byol = methods["byol"]
    assert (byol["epochs"], byol["tau"], byol["projector_hidden_dim"]) == (50, 0.9, 4096)
    assert all(m["corruption_rate"] == 0.3 for m in methods.values())
