"""Run one job by id: claim it, call its pipeline, record the outcome. Same code for every dispatcher."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import orm
from app.jobs import service as jobs
from app.storage import ArtifactStore
from worker.context import JobCancelled, JobContext, JobInterrupted, Recorder
from worker.pipelines import evaluate, fit, pretrain

log = logging.getLogger(__name__)

# A pipeline reads its inputs and trains with no transaction open, then returns its recorder.
Pipeline = Callable[[JobContext], Recorder]

PIPELINES: dict[orm.JobKind, Pipeline] = {
    orm.JobKind.PRETRAIN: pretrain.run,
    orm.JobKind.FIT: fit.run,
    orm.JobKind.EVALUATE: evaluate.run,
}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def run_job(
    job_id: str,
    *,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: Settings,
    cancel_event: threading.Event | None = None,
    shutdown_event: threading.Event | None = None,
) -> orm.JobState | None:
    """Execute job ``job_id`` if it is still queued; return its final state, or None if not claimed.

    Training runs with no open transaction: the pipeline opens short sessions to read its inputs; its
    results are recorded together with the job's final transition, in one transaction.
    """
    with session_factory() as session:
        job = jobs.claim(session, job_id, worker_id=worker_id())
        if job is None:
            return None
        kind, params = job.kind, dict(job.params)
    ctx = JobContext(
        job_id=job_id,
        params=params,
        store=store,
        session_factory=session_factory,
        cancel_event=cancel_event or threading.Event(),
        shutdown_event=shutdown_event or threading.Event(),
        progress_interval_s=settings.progress_interval_s,
    )
    try:
        record = PIPELINES[kind](ctx)
        with session_factory() as session:
            record(session)
            job = session.get_one(orm.Job, job_id, populate_existing=True)
            jobs.transition(session, job, orm.JobState.SUCCEEDED)
            session.commit()
            return orm.JobState.SUCCEEDED
    except JobCancelled as exc:
        return _finish(session_factory, job_id, orm.JobState.CANCELLED, str(exc))
    except JobInterrupted as exc:
        with session_factory() as session:
            job = session.get_one(orm.Job, job_id)
            jobs.transition(session, job, orm.JobState.QUEUED, message=str(exc))
            session.commit()
        return orm.JobState.QUEUED
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return _finish(session_factory, job_id, orm.JobState.FAILED, f"{type(exc).__name__}: {exc}")


def _finish(
    session_factory: sessionmaker[Session], job_id: str, state: orm.JobState, message: str
) -> orm.JobState:
    status = orm.ArtifactStatus.CANCELLED if state is orm.JobState.CANCELLED else orm.ArtifactStatus.FAILED
    with session_factory() as session:
        job = session.get_one(orm.Job, job_id)
        jobs.transition(session, job, state, message=message)
        jobs.mark_target(session, job, status)
        session.commit()
    return state
