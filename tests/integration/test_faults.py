"""Faults in distributed mode: a worker killed mid-job, Redis restarted under a queued job, PostgreSQL down."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings, get_settings
from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import start, upload
from tests.conftest import make_lab, wait_for_job
from tests.integration.conftest import PrivateRedis, Worker, unavailable

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_worker_killed_mid_pretraining_is_replaced_and_the_job_resumes_from_its_checkpoint(
    api: TestClient, distributed: Settings, start_worker: Callable[..., Worker]
) -> None:
    # Two workers on the gpu queue: one takes the job and is killed, the other carries on.
    pair = [start_worker("w1", wait=False), start_worker("w2", wait=False)]
    for worker in pair:
        worker.wait_ready()
    cohort = upload(api)
    # About 70 ms an epoch on one CPU thread; a checkpoint every 10 epochs (FAST_CLOCKS).
    accepted = start(api, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 60, "batch_size": 64}})
    job_id, encoder_id = accepted["job"]["id"], accepted["encoder"]["id"]

    def checkpointed() -> bool:
        job = api.get(f"/jobs/{job_id}").json()
        assert job["state"] in {"queued", "running"}, f"the job ended before a checkpoint was seen: {job}"
        return bool((job["checkpoint"] or {}).get("epoch", 0) >= 10)

    wait_until(checkpointed, "a checkpoint")
    running_on = api.get(f"/jobs/{job_id}").json()["worker_id"]
    first, second = sorted(pair, key=lambda w: f":{w.process.pid}:" not in running_on)
    first.kill()
    at_kill = api.get(f"/jobs/{job_id}").json()
    assert at_kill["state"] == "running" and at_kill["progress"]["epoch"] < 60

    job = wait_for_job(api, job_id, timeout=120)
    assert job["state"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and f":{second.process.pid}:" in job["worker_id"]
    assert [e["to_state"] for e in job["events"] if e["to_state"]] == ["running", "queued", "running", "succeeded"]
    messages = [e["message"] for e in job["events"]]
    lost = next(m for m in messages if m.startswith("worker lost: "))
    assert f":{first.process.pid}:" in lost and lost.endswith("re-queued (retry 1 of 3)")
    resumed = [int(m.rsplit(" ", 1)[1]) for m in messages if m.startswith("resumed from checkpoint at epoch ")]
    assert resumed == [at_kill["checkpoint"]["epoch"]] and resumed[0] >= 10

    encoder = api.get(f"/encoders/{encoder_id}").json()
    assert encoder["status"] == "ready" and len(encoder["loss_curve"]) == 60
    with session_factory()() as session:
        rows = session.scalars(select(orm.Encoder).where(orm.Encoder.job_id == job_id)).all()
    assert [row.id for row in rows] == [encoder_id]
    artifacts = distributed.resolved_artifact_dir
    assert [p.name for p in (artifacts / "encoders" / encoder_id).iterdir()] == [rows[0].artifact_key.rsplit("/")[-1]]
    assert not list((artifacts / "checkpoints" / job_id).glob("*.pt"))  # the last checkpoint went with success


@pytest.fixture
def api_on_private_redis(
    distributed: Settings,
    private_redis: PrivateRedis,
    start_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    """The API and one worker (w1) with the private Redis as their broker, which the test may restart."""
    from app.main import create_app

    monkeypatch.setenv("EXPRSSL_BROKER_URL", private_redis.url)
    get_settings.cache_clear()
    with TestClient(create_app(), headers=make_lab("lab-a").headers) as api:
        start_worker("w1", broker=private_redis.url)
        yield api


def test_redis_restart_while_a_job_is_queued_does_not_lose_it(
    api_on_private_redis: TestClient, private_redis: PrivateRedis
) -> None:
    api = api_on_private_redis
    cohort = upload(api)
    body = {"cohort_id": cohort["id"], "params": {"epochs": 60, "batch_size": 64}}
    busy = start(api, "/encoders", body)["job"]["id"]  # keeps the only worker busy
    wait_until(lambda: api.get(f"/jobs/{busy}").json()["state"] == "running", "the first job to start")
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    waiting = start(api, "/predictors", body)["job"]["id"]
    sent_at = api.get(f"/jobs/{waiting}").json()["dispatched_at"]
    assert api.get(f"/jobs/{waiting}").json()["state"] == "queued" and sent_at is not None

    # No persistence: the restart drops every message, the waiting job's and the running one's.
    private_redis.stop()
    private_redis.start()

    assert wait_for_job(api, busy, timeout=120)["state"] == "succeeded"
    job = wait_for_job(api, waiting, timeout=120)
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert job["dispatched_at"] > sent_at  # the reaper sent it again


def test_after_a_redis_restart_readiness_reports_the_workers_not_a_dropped_connection(
    api_on_private_redis: TestClient, private_redis: PrivateRedis
) -> None:
    api = api_on_private_redis
    assert api.get("/ready").status_code == 200
    private_redis.stop()
    down = api.get("/ready")
    assert down.status_code == 503 and down.json()["checks"]["broker"]["detail"].startswith("unreachable")
    private_redis.start()

    # The API's pooled connections died with the old server; the first inspection on one fails. What /ready
    # reports is the workers' state (none answering until the worker has reconnected), then ready.
    seen: list[str] = []

    def ready() -> bool:
        answer = api.get("/ready")
        seen.append(answer.json()["checks"]["workers"]["detail"])
        return answer.status_code == 200

    wait_until(ready, "ready again after the restart")
    assert not [detail for detail in seen if detail.startswith("inspect failed")], seen
    assert seen[-1].startswith("gpu: w1@") and "; cpu: w1@" in seen[-1]


def pg_ctl(action: str) -> None:
    clusters = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").is_dir() else []
    if shutil.which("pg_ctlcluster") is None or not clusters:
        unavailable("pg_ctlcluster (to stop and start the local PostgreSQL)", "not found")
    version = clusters[-1].parent.name
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        command += ["-m", "fast"]
    subprocess.run(command, check=True, timeout=60)


@contextmanager
def postgres_stopped() -> Iterator[None]:
    pg_ctl("stop")
    try:
        yield
    finally:
        pg_ctl("start")
        wait_until(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, "PostgreSQL")


def test_postgres_down_gives_503_with_a_clear_message_and_the_api_recovers(
    api: TestClient, distributed: Settings
) -> None:
    cohort = upload(api)
    assert api.get(f"/cohorts/{cohort['id']}").status_code == 200
    with postgres_stopped():
        for method, path, body in [
            ("GET", f"/cohorts/{cohort['id']}", None),
            ("GET", "/jobs", None),
            ("POST", "/encoders", {"cohort_id": cohort["id"]}),
        ]:
            response = api.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "database_unavailable"
            assert error["message"] == "the registry database is unreachable; try again shortly"
        ready = api.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        checks = ready.json()["checks"]
        assert checks["database"]["ok"] is False and re.match(r"unreachable \(\w+\)", checks["database"]["detail"])
        assert checks["broker"]["ok"] is True
    # Dead pooled connections are noticed by pool_pre_ping and replaced: the first request after works.
    response = api.get(f"/cohorts/{cohort['id']}")
    assert response.status_code == 200 and response.json()["n_samples"] == 189
    assert api.get("/ready").json()["checks"]["database"] == {"ok": True, "detail": "reachable"}
