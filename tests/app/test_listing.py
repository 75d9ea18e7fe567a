"""Browsing the registry: encoder, predictor and evaluation lists filter by what they were made from."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.app.test_full_loop import start, upload
from tests.conftest import wait_for_job

TINY = {"epochs": 1, "hidden_dim": 16, "n_layers": 1, "batch_size": 64}


def made(client: TestClient, path: str, body: dict[str, Any], key: str) -> str:
    accepted = start(client, path, body)
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    return str(accepted[key]["id"])


def ids(client: TestClient, path: str, **params: str) -> set[str]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()}


def test_lists_filter_by_lineage_method_head_and_status(client: TestClient) -> None:
    first, second = str(upload(client)["id"]), str(upload(client)["id"])
    scarf = made(client, "/encoders", {"cohort_id": first, "params": TINY}, "encoder")
    vime = made(client, "/encoders", {"cohort_id": first, "method": "vime", "params": TINY}, "encoder")
    child = made(client, "/encoders", {"cohort_id": second, "continue_from": scarf, "params": {"epochs": 1}}, "encoder")
    probe = made(client, "/predictors", {"cohort_id": second, "encoder_id": child, "label_column": "tissue",
                                         "head": "linear_probe", "params": {"max_epochs": 2}}, "predictor")
    logreg = made(client, "/predictors", {"cohort_id": first, "label_column": "tissue",
                                          "head": "logistic_regression"}, "predictor")
    evaluation = made(client, "/evaluations", {"cohort_id": first, "label_column": "tissue", "methods": [],
                                               "heads": [], "baselines": ["logistic_regression"], "fractions": [1.0],
                                               "n_seeds": 1}, "evaluation")

    assert ids(client, "/encoders") == {scarf, vime, child}
    assert ids(client, "/encoders", cohort_id=first) == {scarf, vime}
    assert ids(client, "/encoders", method="vime") == {vime}
    assert ids(client, "/encoders", parent_encoder_id=scarf) == {child}
    assert ids(client, "/encoders", status="ready", cohort_id=second) == {child}
    assert ids(client, "/encoders", status="failed") == set()
    assert ids(client, "/predictors", encoder_id=child) == {probe}
    assert ids(client, "/predictors", head="logistic_regression") == {logreg}
    assert ids(client, "/predictors", cohort_id=second, label_column="tissue") == {probe}
    assert ids(client, "/evaluations", cohort_id=first) == {evaluation}
    assert ids(client, "/evaluations", cohort_id=second) == set()
    assert ids(client, "/evaluations", status="ready") == {evaluation}
    assert ids(client, "/predictors", status="ready", head="linear_probe") == {probe}
    for path, params in (("/encoders", {"status": "done"}), ("/predictors", {"head": "svm"})):
        assert client.get(path, params=params).status_code == 422
