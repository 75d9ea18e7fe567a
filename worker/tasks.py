"""Thin Celery tasks: ``jobs.<kind>`` takes a job id and runs it with :func:`worker.runner.run_job`.

A redelivered message finds its job claimed or finished and does nothing. A warm shutdown (SIGTERM)
stops the running job at its next epoch and sends it back to the queue for another worker, where it
resumes from its checkpoint. Each worker process also runs the reaper.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from app.config import get_settings
from app.db.orm import JobKind, JobState
from app.db.session import session_factory
from app.memory import keep_freed_memory
from app.storage import get_store
from worker.celery_app import app, task_name
from worker.dispatch import CeleryDispatcher
from worker.runner import run_job

log = logging.getLogger(__name__)

_shutdown = threading.Event()
_dispatcher: CeleryDispatcher | None = None


def dispatcher() -> CeleryDispatcher:
    """This process's dispatcher: re-sends interrupted jobs and runs the reaper."""
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = CeleryDispatcher(session_factory=session_factory(), settings=get_settings(), celery=app)
    return _dispatcher


def run(job_id: str) -> str | None:
    """Run job ``job_id``; return its final state, or None when another delivery has it."""
    state = run_job(
        job_id, session_factory=session_factory(), store=get_store(), settings=get_settings(), shutdown_event=_shutdown
    )
    if state is JobState.QUEUED:  # interrupted by this worker's shutdown: another worker takes it
        dispatcher().submit(job_id)
    return None if state is None else state.value


for _kind in JobKind:
    app.task(name=task_name(_kind))(run)


@worker_init.connect
def _configure_process(**_: Any) -> None:
    """torch's threads, and the freed heap kept for the next batches as in the API process (bench/train_throughput.py
    at 8,192 x 20,000 faulted 5.04 million pages in again under glibc's own thresholds, 0.76 million so)."""
    settings = get_settings()
    keep_freed_memory(settings.heap_keep_bytes)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


@worker_process_init.connect
def _init_pool_process(**kwargs: Any) -> None:
    """A forked pool process must not share the parent's database connections."""
    session_factory().kw["bind"].dispose(close=False)
    _configure_process(**kwargs)


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    dispatcher().start()


@worker_shutting_down.connect
def _stop_jobs(**_: Any) -> None:
    _shutdown.set()


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    if _dispatcher is not None:
        _dispatcher.shutdown()
