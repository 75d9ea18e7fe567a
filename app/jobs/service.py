"""Job state machine: one transition function, a compare-and-set claim, cancellation requests."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import orm, repository
from app.db.base import utcnow
from app.errors import Conflict

State = orm.JobState

TERMINAL: frozenset[State] = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ALLOWED: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    # RUNNING -> QUEUED is a re-queue after a lost worker.
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.QUEUED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


class InvalidTransition(Conflict):
    pass


def add_event(session: Session, job: orm.Job, message: str, *, to_state: State | None = None) -> None:
    session.add(
        orm.JobEvent(
            job_id=job.id,
            from_state=job.state.value if to_state else None,
            to_state=to_state.value if to_state else None,
            message=message,
        )
    )


def transition(session: Session, job: orm.Job, to: State, *, message: str | None = None) -> None:
    """Move ``job`` to state ``to`` if allowed, stamping times and appending an event. Does not commit."""
    if to not in ALLOWED[job.state]:
        raise InvalidTransition(f"job {job.id} cannot go from {job.state.value} to {to.value}")
    add_event(session, job, message or f"{job.state.value} -> {to.value}", to_state=to)
    now = utcnow()
    if to is State.RUNNING:
        job.started_at = now
        job.heartbeat_at = now
    if to in TERMINAL:
        job.finished_at = now
    if to is State.FAILED:
        job.error = message
    job.state = to


def create_job(session: Session, kind: orm.JobKind, params: dict[str, object]) -> orm.Job:
    """Add a queued job with its first event. Does not commit."""
    job = orm.Job(kind=kind, state=State.QUEUED, params=params, progress={}, attempts=0)
    session.add(job)
    session.flush()
    add_event(session, job, "queued")
    return job


def claim(session: Session, job_id: str, *, worker_id: str) -> orm.Job | None:
    """Atomically take a queued job; None if another worker has it or it is no longer queued. Commits."""
    now = utcnow()
    result = session.execute(
        update(orm.Job)
        .where(orm.Job.id == job_id, orm.Job.state == State.QUEUED)
        .values(
            state=State.RUNNING,
            attempts=orm.Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            worker_id=worker_id,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    job = session.get_one(orm.Job, job_id, populate_existing=True)
    session.add(orm.JobEvent(job_id=job.id, from_state="queued", to_state="running", message=f"claimed by {worker_id}"))
    session.commit()
    return job


def get_job(session: Session, job_id: str) -> orm.Job:
    return repository.get_or_404(session, orm.Job, job_id)


def list_jobs(
    session: Session, *, state: State | None, kind: orm.JobKind | None, limit: int, offset: int
) -> list[orm.Job]:
    where = [orm.Job.state == state] if state is not None else []
    if kind is not None:
        where.append(orm.Job.kind == kind)
    return repository.newest(session, orm.Job, limit=limit, offset=offset, where=where)


def request_cancel(session: Session, job_id: str) -> orm.Job:
    """Cancel a queued job at once; flag a running one for its worker to stop. Commits."""
    job = get_job(session, job_id)
    if job.state in TERMINAL:
        raise Conflict(f"job {job.id} already ended ({job.state.value}); nothing to cancel")
    if job.state is State.QUEUED:
        transition(session, job, State.CANCELLED, message="cancelled before it started")
        mark_target(session, job, orm.ArtifactStatus.CANCELLED)
    else:
        job.cancel_requested = True
        add_event(session, job, "cancellation requested")
    session.commit()
    return job


def mark_target(session: Session, job: orm.Job, status: orm.ArtifactStatus) -> None:
    """Give the encoder, predictor or evaluation a job produces the job's final status."""
    for row in (
        session.scalar(select(orm.Encoder).where(orm.Encoder.job_id == job.id)),
        session.scalar(select(orm.Predictor).where(orm.Predictor.job_id == job.id)),
        session.scalar(select(orm.Evaluation).where(orm.Evaluation.job_id == job.id)),
    ):
        if row is not None:
            row.status = status
