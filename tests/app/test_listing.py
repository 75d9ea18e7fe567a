"""Browsing the registry: lists filter by what rows were made from, page, and give summaries."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.app.test_access import inline_body
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
    [listed], full = client.get("/evaluations").json(), client.get(f"/evaluations/{evaluation}").json()
    assert {"runs", "timings"} & set(listed) == set() and len(full["runs"]) == 1  # runs and splits: GET by id
    assert listed == {key: value for key, value in full.items() if key not in ("runs", "timings")}
    assert ids(client, "/predictors", status="ready", head="linear_probe") == {probe}
    for path, params in (("/encoders", {"status": "done"}), ("/predictors", {"head": "svm"})):
        assert client.get(path, params=params).status_code == 422


def test_a_predictors_predictions_list_newest_first_without_their_results(client: TestClient) -> None:
    cohort = str(upload(client)["id"])
    predictor = made(client, "/predictors", {"cohort_id": cohort, "label_column": "tissue",
                                             "head": "logistic_regression"}, "predictor")
    url = f"/predictors/{predictor}/predictions"
    whole = client.post(url, json={"cohort_id": cohort}).json()
    inline = client.post(url, json=inline_body(3)).json()

    listed = client.get(url).json()
    page = client.get(url, params={"limit": 1, "offset": 1}).json()

    assert [p["id"] for p in listed] == [inline["id"], whole["id"]]  # newest first
    assert [p["n_samples"] for p in listed] == [3, whole["n_samples"]] and whole["n_samples"] > 100
    assert all("results" not in p for p in listed)  # one per sample: only GET /predictions/{id} has them
    assert listed[1]["uncertainty"] == whole["uncertainty"] and listed[1]["coverage"] == whole["coverage"]
    assert [p["id"] for p in page] == [whole["id"]]
    assert len(client.get(f"/predictions/{whole['id']}").json()["results"]) == whole["n_samples"]


def test_lists_give_summaries_and_the_row_by_id_gives_the_rest(client: TestClient) -> None:
    cohort = str(upload(client)["id"])
    encoder = made(client, "/encoders", {"cohort_id": cohort, "params": {**TINY, "epochs": 3}}, "encoder")
    predictor = made(client, "/predictors", {"cohort_id": cohort, "label_column": "tissue",
                                             "head": "logistic_regression"}, "predictor")

    [cohort_row], full_cohort = client.get("/cohorts").json(), client.get(f"/cohorts/{cohort}").json()
    assert {"ingest", "gene_resolution"} & set(cohort_row) == set() and full_cohort["ingest"]["format"] == "parquet"
    assert cohort_row == {k: v for k, v in full_cohort.items() if k not in ("ingest", "gene_resolution")}

    [encoder_row], full_encoder = client.get("/encoders").json(), client.get(f"/encoders/{encoder}").json()
    assert "loss_curve" not in encoder_row and len(full_encoder["loss_curve"]) == 3
    assert encoder_row["epochs_trained"] == 3 and encoder_row["final_loss"] == full_encoder["loss_curve"][-1]
    assert encoder_row == {k: v for k, v in full_encoder.items() if k != "loss_curve"}

    [predictor_row], full = client.get("/predictors").json(), client.get(f"/predictors/{predictor}").json()
    left_out = {"split", "calibration", "environment", "loss_curve"}
    assert left_out & set(predictor_row) == set() and len(full["split"]["test_sample_ids"]) > 10
    assert predictor_row == {k: v for k, v in full.items() if k not in left_out}
    assert predictor_row["metrics"]["balanced_accuracy"] > 0.9


def test_a_cohorts_samples_come_in_pages_in_stored_order(client: TestClient) -> None:
    cohort = upload(client)
    url = f"/cohorts/{cohort['id']}/samples"
    whole = client.get(url, params={"limit": 10_000}).json()

    pages = [client.get(url, params={"limit": 50, "offset": start}).json() for start in range(0, 200, 50)]

    assert len(whole) == cohort["n_samples"] == 189
    assert [len(page) for page in pages] == [50, 50, 50, 39]
    assert [s for page in pages for s in page] == whole
    assert len(client.get(url).json()) == 189  # the default page (1,000) holds this cohort
    assert client.get(url, params={"offset": 189}).json() == []
    assert client.get(url, params={"limit": 10_001}).status_code == 422
    first, last = client.get(url, params={"limit": 50}), client.get(url, params={"limit": 50, "offset": 150})
    assert first.headers["X-Total-Count"] == last.headers["X-Total-Count"] == "189"
    assert first.headers["Link"] == f'<http://testserver{url}?limit=50&offset=50>; rel="next"'
    assert "Link" not in last.headers and "Link" not in client.get(url).headers  # nothing follows


def test_a_walk_by_after_is_not_shifted_by_rows_added_between_pages(client: TestClient) -> None:
    for _ in range(5):
        upload(client)
    first = client.get("/cohorts", params={"limit": 2}).json()

    upload(client)  # a new cohort, listed first, between the pages: an offset walk would show first[1] again
    second = client.get("/cohorts", params={"limit": 2, "after": first[-1]["id"]}).json()
    rest = client.get("/cohorts", params={"limit": 10, "after": second[-1]["id"]}).json()
    by_offset = client.get("/cohorts", params={"limit": 2, "offset": 2}).json()

    walked = [c["id"] for c in first + second + rest]
    assert len(walked) == len(set(walked)) == 5  # each of the five once; the sixth is newer than the walk
    assert by_offset[0]["id"] == first[1]["id"]  # what the offset walk would have shown twice
    missing = client.get("/cohorts", params={"after": "0" * 32})
    assert missing.status_code == 422
    assert missing.json()["error"]["message"] == f"after: no cohort {'0' * 32} in this lab to continue after"
