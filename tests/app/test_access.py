"""Labs are sealed from each other; roles limit what members may do; keys are checked, revocable and hashed.

The route lists come from the application itself, so an endpoint added later is covered (or fails the
coverage check) without editing this file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import LabKey, make_lab, wait_for_job

PUBLIC = {"/health", "/ready"}
PATH_PARAM = re.compile(r"{(\w+)}")


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every REST operation, from the OpenAPI schema (admin pages: test_admin_pages)."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(m.upper(), p) for p, ops in paths.items() for m in ops if p not in PUBLIC]
    assert len(routes) >= 25, routes  # the schema lists every operation; a short list means a broken lookup
    return routes


def inline_body(n: int = 2) -> dict[str, Any]:
    import pandas as pd

    table = pd.read_parquet(COHORT / "expression.parquet")
    values = table.select_dtypes("number")
    return {
        "genes": [str(c) for c in values.columns],
        "samples": [{"sample_id": f"s{i}", "values": values.iloc[i].tolist()} for i in range(n)],
    }


@dataclass
class LabObjects:
    """One of every kind of row, made by lab A's admin (and a member)."""

    ids: dict[str, str]

    def fill(self, path: str) -> str:
        return PATH_PARAM.sub(lambda m: self.ids[m.group(1)], path)


def key_of(client: TestClient, user_id: str, name: str = "k") -> dict[str, Any]:
    response = client.post(f"/users/{user_id}/keys", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


def add_member(client: TestClient, name: str = "bob") -> tuple[str, dict[str, str]]:
    """A member of the client's lab and the headers of their new key."""
    user = client.post("/users", json={"name": name, "role": "member"})
    assert user.status_code == 201, user.text
    key = key_of(client, user.json()["id"])
    return user.json()["id"], {"Authorization": f"Bearer {key['key']}"}


@pytest.fixture
def lab_objects(client: TestClient, lab_a: LabKey) -> LabObjects:
    cohort = upload(client)
    fit = start(client, "/predictors", {"cohort_id": cohort["id"], "label_column": "tissue",
                                        "head": "logistic_regression"})
    pretrain = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 1, "batch_size": 64}})
    for job in (fit["job"], pretrain["job"]):
        assert wait_for_job(client, job["id"])["state"] == "succeeded"
    prediction = client.post(f"/predictors/{fit['predictor']['id']}/predictions", json=inline_body())
    assert prediction.status_code == 201, prediction.text
    with session_factory()() as session:
        job = orm.Job(lab_id=lab_a.lab_id, kind=orm.JobKind.EVALUATE, state=orm.JobState.FAILED, error="x")
        session.add(job)
        session.flush()
        evaluation = orm.Evaluation(lab_id=lab_a.lab_id, name="e", cohort_id=cohort["id"], job_id=job.id,
                                    label_column="tissue", status=orm.ArtifactStatus.READY)
        session.add(evaluation)
        session.commit()
        evaluation_id = evaluation.id
    member_id, _ = add_member(client)
    key_id = client.get("/keys").json()[0]["id"]
    return LabObjects({
        "cohort_id": str(cohort["id"]), "predictor_id": fit["predictor"]["id"],
        "encoder_id": pretrain["encoder"]["id"], "job_id": fit["job"]["id"],
        "prediction_id": prediction.json()["id"], "evaluation_id": evaluation_id,
        "user_id": member_id, "key_id": key_id,
    })


def body_for(method: str, path: str) -> dict[str, Any] | None:
    """A valid body for operations that need one, so that only the lab check can refuse them."""
    if (path.endswith("/predictions") or path.endswith("/embeddings")) and method == "POST":
        return inline_body()
    if path == "/users/{user_id}" and method == "PATCH":
        return {"role": "member"}
    if path == "/users/{user_id}/keys":
        return {"name": "intruder"}
    return None


def test_a_key_of_lab_b_finds_nothing_of_lab_a(client: TestClient, lab_objects: LabObjects) -> None:
    lab_b = make_lab("lab-b", "mallory")
    own_ids = set(lab_objects.ids.values())
    failures = []
    for method, path in api_routes(client):
        if not PATH_PARAM.search(path):
            continue
        unknown = set(PATH_PARAM.findall(path)) - set(lab_objects.ids)
        assert not unknown, f"{method} {path}: no lab A object for {unknown}; add one to lab_objects"
        response = client.request(method, lab_objects.fill(path), json=body_for(method, path), headers=lab_b.headers)
        if response.status_code != 404:
            failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
    # Lists: lab B sees none of lab A's rows (and filters by lab A's ids find nothing).
    for path in ("/cohorts", "/encoders", "/predictors", "/evaluations", "/jobs", "/users", "/keys",
                 f"/jobs?user_id={lab_objects.ids['user_id']}"):
        body = client.get(path, headers=lab_b.headers).json()
        leaked = {row["id"] for row in body} & own_ids
        if leaked:
            failures.append(f"GET {path} shows lab A's {leaked}")
    # Requests naming lab A's objects in their body.
    ids = lab_objects.ids
    for path, body in (
        ("/encoders", {"cohort_id": ids["cohort_id"]}),
        ("/predictors", {"cohort_id": ids["cohort_id"], "label_column": "tissue", "head": "logistic_regression"}),
        ("/evaluations", {"cohort_id": ids["cohort_id"], "label_column": "tissue", "methods": [],
                          "baselines": ["logistic_regression"]}),
    ):
        response = client.post(path, json=body, headers=lab_b.headers)
        if response.status_code != 404:
            failures.append(f"POST {path} with lab A's cohort: {response.status_code} {response.text[:200]}")
    assert failures == []
    # Nothing of lab A changed, and lab B's own requests left no job behind.
    assert client.get(f"/cohorts/{ids['cohort_id']}").status_code == 200
    assert client.get("/jobs", headers=lab_b.headers).json() == []
    assert all(k["revoked_at"] is None for k in client.get("/keys").json())


def test_the_same_matrix_in_two_labs_is_two_cohorts(client: TestClient, lab_a: LabKey) -> None:
    first = upload(client)
    lab_b = make_lab("lab-b", "mallory")
    client.headers.update(lab_b.headers)
    second = upload(client)
    # Lab B learns nothing of lab A's upload: no duplicate_of pointing across labs.
    assert second["duplicate_of"] is None and second["checksum"] == first["checksum"]
    assert second["id"] != first["id"]


def test_every_endpoint_but_health_needs_a_valid_key(client: TestClient, lab_a: LabKey) -> None:
    member_id, member = add_member(client)
    revoked = key_of(client, member_id, "to revoke")
    assert client.delete(f"/keys/{revoked['id']}").status_code == 200
    disabled_id, disabled = add_member(client, "carol")
    assert client.patch(f"/users/{disabled_id}", json={"disabled": True}).json()["disabled"] is True
    bad: dict[str, dict[str, str]] = {
        "none": {"Authorization": ""},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "unknown": {"Authorization": "Bearer exs_0123456789ab_" + "x" * 43},
        "wrong secret": {"Authorization": lab_a.headers["Authorization"][:-4] + "abcd"},
        "revoked": {"Authorization": f"Bearer {revoked['key']}"},
        "disabled user": disabled,
    }
    failures = []
    for method, path in api_routes(client):
        url = PATH_PARAM.sub("x", path)
        for name, headers in bad.items():
            response = client.request(method, url, headers=headers)
            if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{name} key: {method} {path} -> {response.status_code}")
    assert failures == []
    assert client.get("/health", headers=bad["none"]).status_code == 200
    message = client.get("/cohorts", headers=bad["revoked"]).json()["error"]["message"]
    assert "revoked" in message and revoked["prefix"] in message
    assert client.get("/me", headers=member).json()["role"] == "member"


def test_keys_are_stored_only_as_hashes(client: TestClient, settings: Settings, lab_a: LabKey) -> None:
    member_id, _ = add_member(client)
    created = key_of(client, member_id)
    listed = {k["id"]: k for k in client.get("/keys").json()}
    assert "key" not in listed[created["id"]] and created["key"].startswith(f"exs_{created['prefix']}_")
    with session_factory()() as session:
        row = session.get_one(orm.ApiKey, created["id"])
        assert row.secret_sha256 == hashlib.sha256(created["key"].encode()).hexdigest()
    database = (settings.data_dir / "exprssl.db").read_bytes()
    for token in (created["key"], lab_a.key):
        secret = token.split("_", 2)[2]
        assert secret.encode() not in database and token.encode() not in database
    # The key works until it is revoked, and last_used_at records its use.
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/me", headers=headers).status_code == 200
    assert client.get("/keys").json()[-1]["last_used_at"] is not None


def test_members_get_403_on_admin_actions(client: TestClient, lab_a: LabKey) -> None:
    cohort = upload(client)
    admin_job = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 1, "batch_size": 64}})
    assert wait_for_job(client, admin_job["job"]["id"])["state"] == "succeeded"
    member_id, member = add_member(client)
    admin_key = client.get("/keys").json()[0]["id"]
    forbidden = [
        ("POST", "/users", {"name": "eve", "role": "admin"}),
        ("PATCH", f"/users/{lab_a.admin_id}", {"role": "member"}),
        ("POST", f"/users/{lab_a.admin_id}/keys", {"name": "stolen"}),
        ("DELETE", f"/keys/{admin_key}", None),
        ("GET", "/audit", None),
        ("POST", f"/jobs/{admin_job['job']['id']}/retry", None),
        ("DELETE", f"/cohorts/{cohort['id']}", None),
        ("DELETE", f"/cohorts/{cohort['id']}?force=true", None),
    ]
    for method, path, body in forbidden:
        response = client.request(method, path, json=body, headers=member)
        assert response.status_code == 403, (method, path, response.text)
        assert "admin" in response.json()["error"]["message"]
    # What members may do: read the lab's rows, upload, train, make and revoke their own keys.
    assert [c["id"] for c in client.get("/cohorts", headers=member).json()] == [cohort["id"]]
    own = client.post("/cohorts", headers=member, files={
        "expression": ("e.parquet", (COHORT / "expression.parquet").read_bytes())}, data={"name": "mine"})
    assert own.status_code == 201 and own.json()["duplicate_of"] == cohort["id"]
    pretrain = {"cohort_id": cohort["id"], "params": {"epochs": 1, "batch_size": 64}}
    job = client.post("/encoders", headers=member, json=pretrain)
    assert job.status_code == 202
    wait_for_job(client, job.json()["job"]["id"])
    spare = client.post(f"/users/{member_id}/keys", json={"name": "spare"}, headers=member).json()
    assert client.delete(f"/keys/{spare['id']}", headers=member).status_code == 200
    assert {k["user_id"] for k in client.get("/keys", headers=member).json()} == {member_id}
    assert client.delete(f"/cohorts/{own.json()['id']}", headers=member).status_code == 204


def test_audit_log_records_who_did_what(client: TestClient, lab_a: LabKey) -> None:
    cohort = upload(client)
    member_id, member = add_member(client)
    running = client.post("/encoders", headers=member,
                          json={"cohort_id": cohort["id"], "params": {"epochs": 400, "batch_size": 64}}).json()
    assert client.post(f"/jobs/{running['job']['id']}/cancel", headers=member).status_code == 200
    wait_for_job(client, running["job"]["id"])
    key = key_of(client, member_id, "temporary")
    assert client.delete(f"/keys/{key['id']}").status_code == 200
    assert client.delete(f"/cohorts/{cohort['id']}?force=true").status_code == 204
    events = client.get("/audit").json()
    seen = {(e["action"], e["object_type"], e["object_id"], e["user_id"]) for e in events}
    expected = {
        ("cohort.upload", "cohort", cohort["id"], lab_a.admin_id),
        ("user.create", "app_user", member_id, lab_a.admin_id),
        ("job.create.pretrain", "job", running["job"]["id"], member_id),
        ("job.cancel", "job", running["job"]["id"], member_id),
        ("key.create", "api_key", key["id"], lab_a.admin_id),
        ("key.revoke", "api_key", key["id"], lab_a.admin_id),
        ("cohort.delete", "cohort", cohort["id"], lab_a.admin_id),
    }
    assert expected <= seen, expected - seen
    deletion = next(e for e in events if e["action"] == "cohort.delete")
    assert deletion["details"]["force"] is True
    assert f"encoder {running['encoder']['id']}" in deletion["details"]["deleted"]
    assert all(e["at"] and e["key_id"] for e in events)
    assert [e["action"] for e in client.get("/audit?action=key.revoke").json()] == ["key.revoke"]
    # Another lab's audit log holds none of it.
    other = client.get("/audit", headers=make_lab("lab-b").headers).json()
    assert sorted(e["action"] for e in other) == ["key.create", "lab.create"]


def test_lab_b_cannot_use_lab_a_objects_named_inside_its_own_requests(
    client: TestClient, lab_objects: LabObjects
) -> None:
    lab_b = make_lab("lab-b", "mallory")
    client.headers.update(lab_b.headers)
    own_cohort = upload(client)
    own = start(client, "/predictors", {"cohort_id": own_cohort["id"], "label_column": "tissue",
                                        "head": "logistic_regression"})
    assert wait_for_job(client, own["job"]["id"])["state"] == "succeeded"
    own_encoder = start(client, "/encoders", {"cohort_id": own_cohort["id"], "params": {"epochs": 1, "batch_size": 64}})
    assert wait_for_job(client, own_encoder["job"]["id"])["state"] == "succeeded"
    a = lab_objects.ids
    requests = [
        ("/predictors", {"cohort_id": own_cohort["id"], "label_column": "tissue", "head": "linear_probe",
                         "encoder_id": a["encoder_id"]}, f"encoder {a['encoder_id']}"),
        ("/evaluations", {"cohort_id": own_cohort["id"], "label_column": "tissue", "heads": ["linear_probe"],
                          "encoder_ids": [a["encoder_id"]]}, f"encoder {a['encoder_id']}"),
        ("/encoders", {"cohort_id": own_cohort["id"], "continue_from": a["encoder_id"]}, f"encoder {a['encoder_id']}"),
        (f"/predictors/{own['predictor']['id']}/predictions", {"cohort_id": a["cohort_id"]},
         f"cohort {a['cohort_id']}"),
        (f"/encoders/{own_encoder['encoder']['id']}/embeddings", {"cohort_id": a["cohort_id"]},
         f"cohort {a['cohort_id']}"),
    ]
    for path, body, named in requests:
        response = client.post(path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["message"] == f"{named} not found"
    own_jobs = {own["job"]["id"], own_encoder["job"]["id"]}
    assert {j["id"] for j in client.get("/jobs").json()} == own_jobs  # nothing else was queued


def test_a_key_records_its_use_at_most_once_a_minute(client: TestClient, lab_a: LabKey) -> None:
    prefix = lab_a.key.split("_")[1]

    def set_last_used(when: datetime) -> None:
        with session_factory()() as session:
            session.scalars(select(orm.ApiKey).where(orm.ApiKey.prefix == prefix)).one().last_used_at = when
            session.commit()

    def last_used() -> datetime | None:
        with session_factory()() as session:
            return session.scalars(select(orm.ApiKey).where(orm.ApiKey.prefix == prefix)).one().last_used_at

    set_last_used(datetime.now(UTC) - timedelta(days=3))
    assert client.get("/me").status_code == 200
    marked = last_used()
    assert marked is not None and datetime.now(UTC) - marked < timedelta(minutes=1)
    assert client.get("/me").status_code == 200 and last_used() == marked  # within the minute: not written again
    set_last_used(marked - timedelta(minutes=2))
    assert client.get("/me").status_code == 200
    again = last_used()
    assert again is not None and again > marked
