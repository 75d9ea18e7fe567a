"""Job lifecycle: failures keep their error, cancellation stops within an epoch, claims are exclusive."""

from __future__ import annotations

import re
import time

import pytest
import torch
from fastapi.testclient import TestClient

from app.db import orm
from app.db.session import session_factory
from app.jobs import service as jobs
from models.methods.scarf import Scarf
from tests.app.test_full_loop import upload
from tests.conftest import lab_caller, wait_for_job


def test_job_that_raises_ends_failed_with_its_error(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: Scarf, batch: torch.Tensor, generator: torch.Generator, **_: object) -> torch.Tensor:
        raise RuntimeError("loss exploded at batch 0")

    monkeypatch.setattr(Scarf, "training_step", explode)
    cohort = upload(client)
    accepted = client.post("/encoders", json={"cohort_id": cohort["id"], "params": {"epochs": 3}}).json()
    job = wait_for_job(client, accepted["job"]["id"])
    assert job["state"] == "failed"
    assert job["error"] == "RuntimeError: loss exploded at batch 0"
    assert job["finished_at"] is not None
    assert [e["to_state"] for e in job["events"] if e["to_state"]] == ["running", "failed"]
    assert client.get(f"/encoders/{accepted['encoder']['id']}").json()["status"] == "failed"


def test_cancel_running_job_stops_within_an_epoch(client: TestClient) -> None:
    cohort = upload(client)
    body = {"cohort_id": cohort["id"], "params": {"epochs": 10_000, "batch_size": 32}}
    accepted = client.post("/encoders", json=body).json()
    job_id = accepted["job"]["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["progress"].get("epoch", 0) < 3:
        assert time.monotonic() < deadline, "pretraining never reported progress"
        time.sleep(0.02)
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    epoch_at_cancel = response.json()["progress"]["epoch"]
    job = wait_for_job(client, job_id, timeout=30)
    assert job["state"] == "cancelled"
    stopped_at = int(re.search(r"epoch (\d+)", job["events"][-1]["message"]).group(1))
    # Progress is written every epoch here; the epoch running when the request landed may finish, then it stops.
    # One more epoch may have ended between the progress write we read and the cancel request.
    assert epoch_at_cancel <= stopped_at <= epoch_at_cancel + 2
    assert client.get(f"/encoders/{accepted['encoder']['id']}").json()["status"] == "cancelled"
    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]


def test_claim_is_exclusive_and_transitions_are_checked(client: TestClient) -> None:
    with session_factory()() as session:
        job = jobs.create_job(session, lab_caller(), orm.JobKind.EVALUATE, {})
        session.commit()
        job_id = job.id
    with session_factory()() as session:
        assert jobs.claim(session, job_id, worker_id="a") is not None
    with session_factory()() as session:
        assert jobs.claim(session, job_id, worker_id="b") is None
        job = session.get_one(orm.Job, job_id)
        assert (job.state, job.attempts, job.worker_id) == (orm.JobState.RUNNING, 1, "a")
        jobs.transition(session, job, orm.JobState.SUCCEEDED)
        with pytest.raises(jobs.InvalidTransition):
            jobs.transition(session, job, orm.JobState.RUNNING)


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/jobs/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "job does-not-exist not found", "details": None}
