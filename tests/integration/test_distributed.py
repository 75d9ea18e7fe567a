"""The foundation's full loop in distributed mode: API -> Redis -> a Celery worker process -> PostgreSQL.

No eager mode: jobs run in a separate ``celery worker`` process, which shares only the database, the broker
and the artifact folder with the API, as a worker on another machine would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import wait_for_job
from tests.integration.conftest import Worker
from worker.celery_app import create_celery

pytestmark = pytest.mark.slow


def counts() -> dict[str, int]:
    tables = (orm.Cohort, orm.CohortSample, orm.Encoder, orm.Predictor, orm.Prediction, orm.Job)
    with session_factory()() as session:
        return {t.__name__: int(session.scalar(select(func.count()).select_from(t)) or 0) for t in tables}


def test_full_loop_runs_on_a_celery_worker_with_postgres(
    api: TestClient, distributed: Settings, start_worker: Callable[..., Worker]
) -> None:
    assert distributed.resolved_database_url.startswith("postgresql+psycopg://")
    worker = start_worker()
    ready = api.get("/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["broker"] == {"ok": True, "detail": "reachable"}
    assert re.fullmatch(r"gpu: w1@\S+; cpu: w1@\S+", checks["workers"]["detail"])

    cohort = upload(api)
    accepted = start(api, "/encoders", {"cohort_id": cohort["id"], "method": "scarf", "params": {"epochs": 15}})
    job = wait_for_job(api, accepted["job"]["id"], timeout=120)
    assert job["state"] == "succeeded", job["error"]
    assert [e["to_state"] for e in job["events"] if e["to_state"]] == ["running", "succeeded"]
    assert f":{worker.process.pid}:" in job["worker_id"]  # it ran in the worker process, not in the API
    encoder = api.get(f"/encoders/{accepted['encoder']['id']}").json()
    assert encoder["status"] == "ready" and len(encoder["loss_curve"]) == 15

    predictors = {}
    for head in ("linear_probe", "finetune", "logistic_regression"):
        body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": head, "seed": 1}
        if head != "logistic_regression":
            body |= {"encoder_id": encoder["id"], "params": {"max_epochs": 20}}
        fit = start(api, "/predictors", body)
        assert wait_for_job(api, fit["job"]["id"], timeout=120)["state"] == "succeeded"
        predictors[head] = api.get(f"/predictors/{fit['predictor']['id']}").json()
    for head, predictor in predictors.items():
        # Seven tissues, majority share 0.21; short training still lands far above chance.
        assert predictor["metrics"]["accuracy"] >= (0.85 if head == "logistic_regression" else 0.4), head

    expression = pd.read_parquet(COHORT / "expression.parquet")
    lr = predictors["logistic_regression"]
    test_ids = lr["split"]["test_sample_ids"]
    body = {"genes": list(expression.columns),
            "samples": [{"sample_id": s, "values": expression.loc[s].tolist()} for s in test_ids]}
    response = api.post(f"/predictors/{lr['id']}/predictions", json=body)
    assert response.status_code == 201, response.text
    labels = pd.read_csv(COHORT / "labels.csv", dtype=str).set_index("sample_id")["tissue"]
    results = response.json()["results"]
    assert sum(r["top_label"] == labels[r["sample_id"]] for r in results) / len(test_ids) == pytest.approx(
        lr["metrics"]["accuracy"]
    )

    assert counts() == {"Cohort": 1, "CohortSample": 189, "Encoder": 1, "Predictor": 3, "Prediction": 1, "Job": 4}
    for row in [encoder, *predictors.values()]:
        with session_factory()() as session:
            table = orm.Encoder if row is encoder else orm.Predictor
            key = session.get_one(table, row["id"]).artifact_key
        assert (distributed.resolved_artifact_dir / str(key)).is_file()

    # Cancellation reaches the worker process through the job row.
    body = {"cohort_id": cohort["id"], "params": {"epochs": 10_000, "batch_size": 64}}
    accepted = start(api, "/encoders", body)
    job_id = accepted["job"]["id"]
    deadline = time.monotonic() + 60
    while api.get(f"/jobs/{job_id}").json()["progress"].get("epoch", 0) < 3:
        assert time.monotonic() < deadline, "pretraining never reported progress"
        time.sleep(0.05)
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_for_job(api, job_id, timeout=30)
    assert job["state"] == "cancelled" and job["events"][-1]["message"].startswith("cancelled at pretrain epoch")
    assert api.get(f"/encoders/{accepted['encoder']['id']}").json()["status"] == "cancelled"


def test_the_same_task_delivered_twice_runs_once(
    api: TestClient, distributed: Settings, start_worker: Callable[..., Worker]
) -> None:
    cohort = upload(api)
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    accepted = start(api, "/predictors", body)  # sent to the cpu queue; no worker yet
    job_id = accepted["job"]["id"]
    # The broker hands the same message out again (as Redis does after its visibility timeout), twice.
    celery = create_celery(distributed)
    for _ in range(2):
        celery.send_task("jobs.fit", args=[job_id], queue="cpu")  # where the job itself was sent
    celery.close()

    worker = start_worker()
    job = wait_for_job(api, job_id, timeout=120)
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert [e["to_state"] for e in job["events"] if e["to_state"]] == ["running", "succeeded"]
    # The API's reaper may have re-sent the job while it waited for a worker: every extra delivery is a no-op.
    deadline = time.monotonic() + 30
    while True:
        log = worker.output()
        received = re.findall(r"Task jobs\.fit\[\S+\] received", log)
        finished = re.findall(r"Task jobs\.fit\[\S+\] succeeded in [\d.]+s: (\S+)", log)
        if len(finished) >= 3 and len(finished) == len(received):  # the job's message and both copies
            break
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.1)
    assert sorted(finished) == ["'succeeded'"] + ["None"] * (len(finished) - 1)
    assert counts()["Predictor"] == 1
    with session_factory()() as session:
        predictor = session.scalars(select(orm.Predictor).where(orm.Predictor.job_id == job_id)).one()
        claims = session.scalars(
            select(orm.JobEvent).where(orm.JobEvent.job_id == job_id, orm.JobEvent.message.like("claimed by%"))
        ).all()
    assert predictor.status is orm.ArtifactStatus.READY and len(claims) == 1
    stored = list((distributed.resolved_artifact_dir / "predictors" / predictor.id).iterdir())
    assert [p.name for p in stored] == [str(predictor.artifact_key).rsplit("/", 1)[1]]


def test_a_cpu_worker_fits_a_logistic_regression_and_leaves_training_a_network_to_a_gpu_worker(
    api: TestClient, distributed: Settings, start_worker: Callable[..., Worker]
) -> None:
    """docker-compose.yml's CPU worker serves the cpu queue only: it fits logistic-regression predictors
    (scikit-learn), and a pretraining waits for a GPU worker."""
    cpu = start_worker("w2", queues="cpu")
    cohort = upload(api)
    pretraining = start(api, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 2}})
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "logistic_regression"}
    logistic = start(api, "/predictors", body)

    job = wait_for_job(api, logistic["job"]["id"], timeout=120)
    assert job["state"] == "succeeded", job["error"]
    assert f":{cpu.process.pid}:" in job["worker_id"]
    assert api.get(f"/predictors/{logistic['predictor']['id']}").json()["status"] == "ready"
    assert api.get(f"/jobs/{pretraining['job']['id']}").json()["state"] == "queued"  # sent first, still waiting

    gpu = start_worker("w1", queues="gpu")
    job = wait_for_job(api, pretraining["job"]["id"], timeout=120)
    assert job["state"] == "succeeded" and f":{gpu.process.pid}:" in job["worker_id"]


def test_ready_counts_a_gpu_worker_busy_with_a_job_as_there(
    api: TestClient, distributed: Settings, start_worker: Callable[..., Worker]
) -> None:
    """docker-compose.yml's topology: a solo-pool worker on gpu, another on cpu. The solo worker answers no
    inspection while it trains; /ready said 503 'gpu: no worker' for as long as any pretraining ran."""
    gpu, cpu = start_worker("w1", queues="gpu", wait=False), start_worker("w2", queues="cpu", wait=False)
    for worker in (gpu, cpu):
        worker.wait_ready()
    cohort = upload(api)
    accepted = start(api, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 2000, "batch_size": 64}})
    job_id = accepted["job"]["id"]
    deadline = time.monotonic() + 60
    while api.get(f"/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline, api.get(f"/jobs/{job_id}").json()
        time.sleep(0.05)

    ready = api.get("/ready")
    worker_id = api.get(f"/jobs/{job_id}").json()["worker_id"]
    assert ready.status_code == 200, ready.text
    detail = ready.json()["checks"]["workers"]["detail"]
    assert re.fullmatch(rf"gpu: busy \({re.escape(worker_id)} running a job\); cpu: w2@\S+", detail), detail
    assert f":{gpu.process.pid}:" in worker_id

    gpu.kill()  # a job whose worker is gone: once its heartbeat is stale, nobody serves the gpu queue
    time.sleep(distributed.heartbeat_timeout_s + 0.5)
    ready = api.get("/ready")
    assert ready.status_code == 503 and "gpu: no worker" in ready.json()["checks"]["workers"]["detail"], ready.text
