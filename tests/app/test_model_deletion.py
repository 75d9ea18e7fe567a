"""Deleting encoders, predictors and evaluations keeps lineage whole: refused while anything was made from
them (naming it) unless an admin forces it, refused while a job uses them, artifacts removed with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from app.storage import get_store
from tests.app.test_full_loop import start, upload
from tests.app.test_gene_resolution import EXPRESSION
from tests.conftest import LabKey, make_member, wait_for_job

TINY = {"epochs": 2, "hidden_dim": 32, "n_layers": 1, "batch_size": 64}


def stored_files(settings: Settings) -> set[Path]:
    """Every file in the artifact store, relative to it."""
    root = settings.resolved_artifact_dir
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def finished(client: TestClient, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    accepted = start(client, path, body)
    job = wait_for_job(client, accepted["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    return client.get(f"{path}/{accepted[key]['id']}").json()


def predict_two(client: TestClient, predictor_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    rows = EXPRESSION.iloc[:2]
    samples = [{"sample_id": s, "values": r.tolist()} for s, r in rows.iterrows()]
    body = {"genes": list(rows.columns), "samples": samples}
    response = client.post(f"/predictors/{predictor_id}/predictions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def cohort(client: TestClient) -> dict[str, Any]:
    return upload(client)


def lineage_chain(client: TestClient, cohort: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """An encoder, one continued from it, a linear probe on that one and a prediction of the probe."""
    encoder = finished(client, "/encoders", {"cohort_id": cohort["id"], "params": TINY}, "encoder")
    child = finished(client, "/encoders", {"cohort_id": cohort["id"], "continue_from": encoder["id"],
                                           "params": {"epochs": 1}}, "encoder")
    probe = finished(client, "/predictors", {"cohort_id": cohort["id"], "encoder_id": child["id"],
                                             "label_column": "tissue", "head": "linear_probe"}, "predictor")
    return encoder, child, probe, predict_two(client, probe["id"])


def test_an_encoder_goes_only_with_what_was_made_from_it(
    client: TestClient, cohort: dict[str, Any], settings: Settings, lab_a: LabKey
) -> None:
    encoder, child, probe, prediction = lineage_chain(client, cohort)
    other = finished(client, "/encoders", {"cohort_id": cohort["id"], "params": TINY}, "encoder")
    files_before = stored_files(settings)

    refused = client.delete(f"/encoders/{encoder['id']}")
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    for made in (f"encoder {child['id']}", f"predictor {probe['id']}", f"prediction {prediction['id']}"):
        assert made in message
    member = make_member(lab_a)
    assert client.delete(f"/encoders/{other['id']}", headers=member.headers).status_code == 403
    assert client.delete(f"/encoders/{encoder['id']}", params={"force": "true"},
                         headers=member.headers).status_code == 403

    assert client.delete(f"/encoders/{encoder['id']}", params={"force": "true"}).status_code == 204

    for path in (f"/encoders/{encoder['id']}", f"/encoders/{child['id']}", f"/predictors/{probe['id']}",
                 f"/predictions/{prediction['id']}"):
        assert client.get(path).status_code == 404, path
    assert client.get(f"/encoders/{other['id']}").status_code == 200
    assert client.get(f"/cohorts/{cohort['id']}").status_code == 200
    gone = {p.parts[0] + "/" + p.parts[1] for p in files_before - stored_files(settings)}
    assert gone == {f"encoders/{encoder['id']}", f"encoders/{child['id']}", f"predictors/{probe['id']}"}
    deletion = next(e for e in client.get("/audit", params={"action": "encoder.delete"}).json())
    assert deletion["object_id"] == encoder["id"] and deletion["details"]["force"] is True
    assert f"predictor {probe['id']}" in deletion["details"]["deleted"]


def test_following_a_refusals_calls_in_their_order_deletes_without_force(
    client: TestClient, cohort: dict[str, Any]
) -> None:
    encoder, child, probe, prediction = lineage_chain(client, cohort)

    message = client.delete(f"/encoders/{encoder['id']}").json()["error"]["message"]

    assert ("Delete them first with these calls in this order: DELETE /predictions/{id}, then DELETE "
            "/predictors/{id}, then DELETE /encoders/{id}, or ask an admin") in message
    for path in (f"/predictions/{prediction['id']}", f"/predictors/{probe['id']}", f"/encoders/{child['id']}",
                 f"/encoders/{encoder['id']}"):
        assert client.delete(path).status_code == 204, path


def test_a_predictor_with_stored_predictions_needs_force(client: TestClient, cohort: dict[str, Any]) -> None:
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    kept, bare = (finished(client, "/predictors", body, "predictor") for _ in range(2))
    prediction = predict_two(client, kept["id"])

    refused = client.delete(f"/predictors/{kept['id']}")
    assert refused.status_code == 409 and f"prediction {prediction['id']}" in refused.json()["error"]["message"]
    assert client.delete(f"/predictors/{bare['id']}").status_code == 204  # nothing was made with it
    assert client.delete(f"/predictors/{kept['id']}", params={"force": "true"}).status_code == 204

    assert client.get(f"/predictions/{prediction['id']}").status_code == 404
    assert client.get("/predictors").json() == []
    assert client.post(f"/predictors/{kept['id']}/predictions", json={"cohort_id": cohort["id"]}).status_code == 404


def test_a_member_deletes_what_their_own_jobs_made(client: TestClient, cohort: dict[str, Any], lab_a: LabKey) -> None:
    member = make_member(lab_a)
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    accepted = client.post("/predictors", json=body, headers=member.headers).json()
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"

    assert client.delete(f"/predictors/{accepted['predictor']['id']}", headers=member.headers).status_code == 204


def test_a_member_deletes_the_predictions_they_requested_and_then_their_predictor(
    client: TestClient, cohort: dict[str, Any], lab_a: LabKey
) -> None:
    member = make_member(lab_a)
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    accepted = client.post("/predictors", json=body, headers=member.headers).json()
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    predictor_id = accepted["predictor"]["id"]
    own = predict_two(client, predictor_id, headers=member.headers)
    admins = predict_two(client, predictor_id)
    assert (own["created_by"], admins["created_by"]) == (member.user_id, lab_a.admin_id)
    listed = client.get(f"/predictors/{predictor_id}/predictions").json()
    assert {p["id"]: p["created_by"] for p in listed} == {own["id"]: member.user_id, admins["id"]: lab_a.admin_id}

    refused = client.delete(f"/predictors/{predictor_id}", headers=member.headers)
    message = refused.json()["error"]["message"]
    assert refused.status_code == 409 and f"prediction {own['id']}" in message
    assert "Delete them first with DELETE /predictions/{id}, or ask an admin to delete with force=true" in message
    others = client.delete(f"/predictions/{admins['id']}", headers=member.headers)
    assert others.status_code == 403 and "which another user requested" in others.json()["error"]["message"]
    assert client.delete(f"/predictions/{own['id']}", headers=member.headers).status_code == 204
    assert client.get(f"/predictions/{own['id']}").status_code == 404
    assert client.delete(f"/predictions/{admins['id']}").status_code == 204  # an admin: any of the lab's
    assert client.delete(f"/predictors/{predictor_id}", headers=member.headers).status_code == 204
    audit = client.get("/audit", params={"action": "prediction.delete"}).json()
    assert sorted((e["object_id"], e["user_id"]) for e in audit) == sorted(
        [(own["id"], member.user_id), (admins["id"], lab_a.admin_id)]
    )


def test_a_prediction_of_unknown_requester_is_deleted_by_admins_only(
    client: TestClient, cohort: dict[str, Any], lab_a: LabKey
) -> None:
    member = make_member(lab_a)
    predictor = finished(client, "/predictors", {"cohort_id": cohort["id"], "label_column": "tissue",
                                                 "head": "logistic_regression"}, "predictor")
    older = predict_two(client, predictor["id"], headers=member.headers)
    with session_factory()() as session:  # as made before requesters were recorded
        session.get_one(orm.Prediction, older["id"]).created_by = None
        session.commit()
    assert client.get(f"/predictions/{older['id']}").json()["created_by"] is None

    refused = client.delete(f"/predictions/{older['id']}", headers=member.headers)
    assert refused.status_code == 403 and "whose requester is not recorded" in refused.json()["error"]["message"]
    assert client.delete(f"/predictions/{older['id']}").status_code == 204
    assert client.delete(f"/predictions/{older['id']}").status_code == 404


def test_nothing_is_deleted_while_a_job_uses_it(client: TestClient, cohort: dict[str, Any]) -> None:
    encoder = finished(client, "/encoders", {"cohort_id": cohort["id"], "params": TINY}, "encoder")
    running = start(client, "/encoders", {"cohort_id": cohort["id"], "continue_from": encoder["id"],
                                          "params": {"epochs": 500}})
    pretraining = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {**TINY, "epochs": 500}})

    for target in (encoder["id"], pretraining["encoder"]["id"]):
        busy = client.delete(f"/encoders/{target}", params={"force": "true"})
        assert busy.status_code == 409 and "unfinished job(s)" in busy.json()["error"]["message"], target
    for accepted in (running, pretraining):
        assert client.post(f"/jobs/{accepted['job']['id']}/cancel").status_code == 200
        assert wait_for_job(client, accepted["job"]["id"])["state"] == "cancelled"

    # A cancelled pretraining left no weights; it and the parent (with its cancelled child) now go.
    assert client.delete(f"/encoders/{pretraining['encoder']['id']}").status_code == 204
    assert client.delete(f"/encoders/{encoder['id']}", params={"force": "true"}).status_code == 204
    assert client.get("/encoders").json() == []
    retry = client.post(f"/jobs/{running['job']['id']}/retry")
    assert retry.status_code == 409 and "was deleted" in retry.json()["error"]["message"]


def test_an_evaluation_is_deleted(client: TestClient, cohort: dict[str, Any]) -> None:
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "methods": [], "heads": [],
            "baselines": ["logistic_regression"], "fractions": [1.0], "n_seeds": 1}
    evaluation = finished(client, "/evaluations", body, "evaluation")

    assert client.delete(f"/evaluations/{evaluation['id']}").status_code == 204

    assert client.get(f"/evaluations/{evaluation['id']}").status_code == 404
    assert client.get(f"/evaluations/{evaluation['id']}/plot.png").status_code == 404
    assert client.get("/evaluations").json() == []


def test_a_refusal_names_the_first_rows_and_counts_the_rest(client: TestClient, cohort: dict[str, Any]) -> None:
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    predictor = finished(client, "/predictors", body, "predictor")
    made = [predict_two(client, predictor["id"])["id"] for _ in range(23)]

    refused = client.delete(f"/predictors/{predictor['id']}")

    message = refused.json()["error"]["message"]
    assert refused.status_code == 409 and message.count("prediction ") == 20
    assert "and 3 more (in all: 23 predictions)" in message
    assert client.delete(f"/predictors/{predictor['id']}", params={"force": "true"}).status_code == 204
    assert all(client.get(f"/predictions/{p}").status_code == 404 for p in made)
    deletion = client.get("/audit", params={"action": "predictor.delete"}).json()[0]
    assert deletion["details"]["counts"] == {"prediction": 23}


def test_an_encoder_continued_elsewhere_and_named_by_an_evaluation(client: TestClient, cohort: dict[str, Any]) -> None:
    encoder = finished(client, "/encoders", {"cohort_id": cohort["id"], "params": TINY}, "encoder")
    second = client.post("/cohorts", files={"expression": ("second.csv", (EXPRESSION + 1).rename_axis(
        "sample_id").to_csv().encode())}, data={"name": "second"}).json()
    child = finished(client, "/encoders", {"cohort_id": second["id"], "continue_from": encoder["id"],
                                           "params": {"epochs": 1}}, "encoder")
    evaluation = finished(client, "/evaluations", {
        "cohort_id": cohort["id"], "label_column": "tissue", "methods": [], "encoder_ids": [encoder["id"]],
        "heads": ["linear_probe"], "fractions": [1.0], "n_seeds": 1,
        "head_params": {"max_epochs": 2}}, "evaluation")

    refused = client.delete(f"/encoders/{encoder['id']}")
    assert refused.status_code == 409
    for made in (f"encoder {child['id']}", f"evaluation {evaluation['id']}"):
        assert made in refused.json()["error"]["message"]
    assert client.delete(f"/encoders/{encoder['id']}", params={"force": "true"}).status_code == 204

    assert client.get(f"/encoders/{child['id']}").status_code == 404
    assert client.get(f"/evaluations/{evaluation['id']}").status_code == 404
    assert client.get(f"/cohorts/{second['id']}").status_code == 200


def test_a_cancelled_pretrainings_checkpoint_goes_with_its_encoder(
    client: TestClient, cohort: dict[str, Any], settings: Settings
) -> None:
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {**TINY, "epochs": 500}})
    assert client.post(f"/jobs/{accepted['job']['id']}/cancel").status_code == 200
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "cancelled"
    key = f"checkpoints/{accepted['job']['id']}/state.pt"
    sha256 = get_store().put_bytes(key, b"a saved training state")
    with session_factory()() as session:
        session.get_one(orm.Job, accepted["job"]["id"]).checkpoint = {"key": key, "sha256": sha256, "epoch": 3}
        session.commit()

    encoder_folder = settings.resolved_artifact_dir / "encoders" / accepted["encoder"]["id"]
    get_store().put_bytes(f"encoders/{accepted['encoder']['id']}/left.pt", b"a file no row names")
    assert client.delete(f"/encoders/{accepted['encoder']['id']}").status_code == 204

    assert not get_store().exists(key)
    assert not (settings.resolved_artifact_dir / "checkpoints" / accepted["job"]["id"]).exists()  # emptied: gone
    assert [p.name for p in encoder_folder.iterdir()] == ["left.pt"]  # a folder still holding a file stays
    with session_factory()() as session:
        assert session.get_one(orm.Job, accepted["job"]["id"]).checkpoint is None


def test_deleting_an_artifact_removes_the_folders_it_leaves_empty(settings: Settings) -> None:
    store, root = get_store(), settings.resolved_artifact_dir
    store.put_bytes("encoders/e1/weights.pt", b"w")
    store.put_bytes("encoders/e1/extra.pt", b"x")
    store.put_bytes("encoders/e2/weights.pt", b"w")

    store.delete("encoders/e1/weights.pt")
    assert (root / "encoders" / "e1" / "extra.pt").is_file()  # still holds a file: kept
    store.delete("encoders/e1/extra.pt")
    assert not (root / "encoders" / "e1").exists() and (root / "encoders" / "e2").is_dir()
    store.delete("encoders/e2/weights.pt")
    assert not (root / "encoders").exists() and root.is_dir() and store.staging_dir().is_dir()
    store.put_bytes("encoders/e2/weights.pt", b"again")  # its folders are made again
    assert store.exists("encoders/e2/weights.pt")
