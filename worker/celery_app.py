"""The Celery application of distributed mode: Redis broker, a ``gpu`` and a ``cpu`` queue.

Start workers with ``celery -A worker.celery_app worker``: GPU machines ``--pool=solo --concurrency=1 -Q gpu``,
light jobs ``-Q cpu``. Messages carry only job ids; the job row is the truth (see worker/runner.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from app.config import Settings, get_settings
from app.db.orm import JobKind
from app.predictors.schemas import Head

GPU, CPU = "gpu", "cpu"
QUEUES = (GPU, CPU)
# Each kind's queue: training runs on GPU workers. INGEST and PREDICT are kinds no code queues (uploads and
# predictions are answered by the API itself); queue_of sends the light training jobs to CPU workers.
QUEUE_OF: dict[JobKind, str] = {
    JobKind.PRETRAIN: GPU,
    JobKind.FIT: GPU,
    JobKind.EVALUATE: GPU,
    JobKind.INGEST: CPU,
    JobKind.PREDICT: CPU,
}


def queue_of(kind: JobKind, params: Mapping[str, Any]) -> str:
    """The queue of a job of ``kind`` with ``params``: its kind's, except fitting a logistic regression, which
    trains no network (scikit-learn on the cohort's expression, no encoder): CPU workers take it, and a GPU
    worker stays free for the pretrainings and fine-tunings that need it."""
    if kind is JobKind.FIT and params.get("head") == Head.LOGISTIC_REGRESSION.value:
        return CPU
    return QUEUE_OF[kind]


def task_name(kind: JobKind) -> str:
    """The task that runs jobs of ``kind``: ``jobs.pretrain``, ``jobs.fit`` ..."""
    return f"jobs.{kind.value}"


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.broker_url``, configured for long, idempotent, late-acknowledged jobs."""
    app = Celery("exprssl", broker=settings.broker_url, include=["worker.tasks"], set_as_current=False)
    app.conf.update(
        # A task is acknowledged when it ends, so a message outlives a worker killed mid-job ...
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # ... and a worker holds one message at a time: queued jobs stay available to idle workers.
        worker_prefetch_multiplier=1,
        # Redis re-delivers an unacknowledged message after the visibility timeout: it must outlast any run,
        # or a long job is delivered twice (the claim makes that harmless, but it wastes a worker).
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_default_queue=CPU,
        # By kind, for a task sent without a queue; the dispatcher names each job's own (queue_of).
        task_routes={task_name(kind): {"queue": queue} for kind, queue in QUEUE_OF.items()},
        # Results live in the registry, not in a result backend.
        task_ignore_result=True,
        # A request never waits long on a broker that is down; the reaper re-sends what was not sent.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    )
    return app


app = create_celery(get_settings())
