"""The Celery app's reliability settings, task names and routes, and the dispatcher choice (no broker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db import orm
from app.db.base import db_utcnow
from app.db.session import session_factory
from app.jobs import service as jobs
from app.storage import get_store
from tests.conftest import lab_caller
from worker.celery_app import create_celery
from worker.dispatch import CeleryDispatcher, InProcessDispatcher, make_dispatcher


def test_celery_app_acks_late_prefetches_one_and_outlasts_long_runs(settings: Settings) -> None:
    conf = create_celery(settings.model_copy(update={"broker_url": "redis://x:6379/0"})).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == settings.broker_visibility_timeout_s == 7 * 24 * 3600
    assert {q.name for q in conf.task_queues} == {"gpu", "cpu"}
    assert conf.task_routes == {
        "jobs.pretrain": {"queue": "gpu"},
        "jobs.fit": {"queue": "gpu"},
        "jobs.evaluate": {"queue": "gpu"},
        "jobs.ingest": {"queue": "cpu"},
        "jobs.predict": {"queue": "cpu"},
    }


def test_every_job_kind_has_a_task_taking_only_a_job_id() -> None:
    from worker.tasks import app

    app.loader.import_default_modules()
    for kind in orm.JobKind:
        task = app.tasks[f"jobs.{kind.value}"]
        assert task.acks_late and task.ignore_result


def test_dispatcher_is_celery_exactly_when_a_broker_is_set(settings: Settings) -> None:
    common = {"session_factory": session_factory(), "store": get_store()}
    assert isinstance(make_dispatcher(settings=settings, **common), InProcessDispatcher)
    celery = make_dispatcher(settings=settings.model_copy(update={"broker_url": "memory://"}), **common)
    assert isinstance(celery, CeleryDispatcher)


def queued(kind: orm.JobKind, params: dict[str, object] | None = None) -> str:
    with session_factory()() as session:
        job = jobs.create_job(session, lab_caller(), kind, params or {})
        session.commit()
        return job.id


def test_submit_sends_the_job_id_to_its_queue(client: TestClient, settings: Settings) -> None:
    app = create_celery(settings.model_copy(update={"broker_url": "memory://"}))
    dispatcher = CeleryDispatcher(session_factory=session_factory(), settings=settings, celery=app)
    pretrain, ingest = queued(orm.JobKind.PRETRAIN), queued(orm.JobKind.INGEST)
    # Fitting: a network on a GPU worker; a logistic regression (scikit-learn) on a CPU worker.
    finetune = queued(orm.JobKind.FIT, {"head": "finetune"})
    logistic = queued(orm.JobKind.FIT, {"head": "logistic_regression"})
    for job_id in (pretrain, ingest, finetune, logistic):
        dispatcher.submit(job_id)
    with app.connection_for_read() as connection:
        gpu, cpu = connection.SimpleQueue("gpu"), connection.SimpleQueue("cpu")
        sent = {name: [(m.headers["task"], m.decode()[0]) for m in (q.get(timeout=1), q.get(timeout=1))]
                for name, q in (("gpu", gpu), ("cpu", cpu))}
        assert sent == {"gpu": [("jobs.pretrain", [pretrain]), ("jobs.fit", [finetune])],
                        "cpu": [("jobs.ingest", [ingest]), ("jobs.fit", [logistic])]}
        assert gpu.qsize() == cpu.qsize() == 0
        gpu.close()
        cpu.close()
    with session_factory()() as session:
        assert session.get_one(orm.Job, pretrain).dispatched_at is not None


def test_submit_with_the_broker_down_leaves_the_job_queued_for_the_reaper(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: the publish fails fast (bounded retries) instead of failing the request.
    settings = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    dispatcher = CeleryDispatcher(session_factory=session_factory(), settings=settings)
    job_id = queued(orm.JobKind.PRETRAIN)
    dispatcher.submit(job_id)
    with session_factory()() as session:
        job = session.get_one(orm.Job, job_id)
        assert job.state is orm.JobState.QUEUED and job.dispatched_at is None
    assert "the reaper will re-send it" in caplog.text
    checks = dispatcher.checks(timeout_s=0.5)
    assert not checks["broker"].ok and not checks["workers"].ok


def test_a_running_job_with_a_fresh_heartbeat_counts_its_queue_as_served(
    client: TestClient, settings: Settings
) -> None:
    """A solo-pool worker answers no inspection while it runs a job: /ready counts the job's queue as served
    while its heartbeat is fresh, the queue being the job's own (a logistic regression runs on a CPU worker)."""
    running = {
        "cpu-host:7:1": (orm.JobKind.FIT, {"head": "logistic_regression"}, 0),
        "gpu-host:8:1": (orm.JobKind.FIT, {"head": "finetune"}, 0),
        "gpu-host:9:1": (orm.JobKind.PRETRAIN, {}, settings.heartbeat_timeout_s + 60),  # stale: worker lost
    }
    job_ids = {worker: queued(kind, params) for worker, (kind, params, _) in running.items()}
    with session_factory()() as session:
        now = db_utcnow(session)
        for worker, (_, _, age_s) in running.items():
            job = session.get_one(orm.Job, job_ids[worker])
            job.state, job.worker_id, job.heartbeat_at = orm.JobState.RUNNING, worker, now - timedelta(seconds=age_s)
        session.commit()
    dispatcher = CeleryDispatcher(session_factory=session_factory(), settings=settings,
                                  celery=create_celery(settings.model_copy(update={"broker_url": "memory://"})))

    assert dispatcher._busy_workers(["gpu", "cpu"]) == {"cpu": ["cpu-host:7:1"], "gpu": ["gpu-host:8:1"]}
    assert dispatcher._busy_workers(["cpu"]) == {"cpu": ["cpu-host:7:1"]}
