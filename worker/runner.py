"""Run one job by id: claim it, call its pipeline, record the outcome. Same code for every dispatcher."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import orm
from app.jobs import service as jobs
from app.storage import ArtifactStore, delete_unreferenced
from worker.context import JobCancelled, JobContext, JobInterrupted, Recorder
from worker.heartbeat import Heartbeat
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
    results are recorded together with the job's final transition, in one transaction. A heartbeat thread
    keeps the claim alive; every write after the claim is fenced by the attempt number, so a worker whose
    job was re-queued by the reaper (or claimed again elsewhere) records nothing and returns None.
    """
    with session_factory() as session:
        job = jobs.claim(session, job_id, worker_id=worker_id())
        if job is None:
            return None
        kind, params, attempt = job.kind, dict(job.params), job.attempts
    ctx = JobContext(
        job_id=job_id,
        params=params,
        store=store,
        session_factory=session_factory,
        cancel_event=cancel_event or threading.Event(),
        shutdown_event=shutdown_event or threading.Event(),
        progress_interval_s=settings.progress_interval_s,
        checkpoint_every_epochs=settings.checkpoint_every_epochs,
        min_gene_coverage=settings.min_gene_coverage,
        attempt=attempt,
    )
    heartbeat = Heartbeat(
        session_factory, job_id, attempt, interval_s=settings.heartbeat_interval_s, on_lost=ctx.cancel_event.set
    )
    recorded: list[bool] = []  # set when the results' transaction commits (before any after-commit cleanup)
    try:
        with heartbeat:
            record = PIPELINES[kind](ctx)
        with session_factory() as session:
            if (job := _owned(session, job_id, attempt)) is None:
                return None
            event.listen(session, "after_commit", lambda _: recorded.append(True), once=True)
            record(session)
            jobs.transition(session, job, orm.JobState.SUCCEEDED)
            session.commit()
            return orm.JobState.SUCCEEDED
    except JobCancelled as exc:
        if heartbeat.lost.is_set():
            return None
        return _finish(session_factory, job_id, attempt, orm.JobState.CANCELLED, str(exc))
    except JobInterrupted as exc:
        return _finish(session_factory, job_id, attempt, orm.JobState.QUEUED, str(exc))
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return _finish(session_factory, job_id, attempt, orm.JobState.FAILED, f"{type(exc).__name__}: {exc}")
    finally:
        if not recorded:  # no row points at what this attempt stored
            for key in ctx.written:
                delete_unreferenced(store, key, f"stored by job {job_id}, which recorded nothing")


def _owned(session: Session, job_id: str, attempt: int) -> orm.Job | None:
    """Lock and return the job if this attempt still runs it; None if the reaper or a retry took it."""
    query = select(orm.Job).where(
        orm.Job.id == job_id, orm.Job.state == orm.JobState.RUNNING, orm.Job.attempts == attempt
    )
    job = session.scalar(query.with_for_update().execution_options(populate_existing=True))
    if job is None:
        log.warning("job %s attempt %d no longer owns the job; its result is dropped", job_id, attempt)
    return job


def _finish(
    session_factory: sessionmaker[Session], job_id: str, attempt: int, state: orm.JobState, message: str
) -> orm.JobState | None:
    """End (or re-queue) the job this attempt still owns; mark its encoder/predictor unless re-queued. A job
    whose cancellation was asked for is cancelled rather than re-queued (a worker shutting down)."""
    with session_factory() as session:
        if (job := _owned(session, job_id, attempt)) is None:
            return None
        if state is orm.JobState.QUEUED and job.cancel_requested:
            state, message = orm.JobState.CANCELLED, f"cancelled: {message}; its cancellation was requested"
        jobs.transition(session, job, state, message=message)
        if state is not orm.JobState.QUEUED:
            cancelled = state is orm.JobState.CANCELLED
            jobs.mark_target(session, job, orm.ArtifactStatus.CANCELLED if cancelled else orm.ArtifactStatus.FAILED)
        session.commit()
    return state
