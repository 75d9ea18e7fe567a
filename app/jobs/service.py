"""Job state machine: one transition function, a compare-and-set claim, cancellation requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.auth import service as auth
from app.auth.service import Caller
from app.db import orm, repository
from app.db.base import db_utcnow, utcnow
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


RETRIED_BY = "retried by"  # the event that starts a job's retry; the reaper counts lost workers from it


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


def create_job(session: Session, caller: Caller, kind: orm.JobKind, params: dict[str, object]) -> orm.Job:
    """Add a queued job of the caller's lab with its first event and an audit event. Does not commit."""
    job = orm.Job(
        lab_id=caller.lab_id, created_by=caller.user_id, kind=kind, state=State.QUEUED, params=params,
        progress={}, attempts=0,
    )
    session.add(job)
    session.flush()
    add_event(session, job, f"queued by {caller.user_name}")
    auth.record(session, caller, f"job.create.{kind.value}", job, dict(params))
    return job


def claim(session: Session, job_id: str, *, worker_id: str) -> orm.Job | None:
    """Atomically take a queued job; None if another worker has it or it is no longer queued. Commits."""
    now = db_utcnow(session)  # its first heartbeat, on the clock the reaper compares with
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


def get_job(session: Session, job_id: str, *, lab_id: str) -> orm.Job:
    return repository.get_or_404(session, orm.Job, job_id, lab_id=lab_id)


@dataclass(frozen=True)
class JobFilter:
    """Which of a lab's jobs to list; every field is optional."""

    state: State | None = None
    kind: orm.JobKind | None = None
    user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[ColumnElement[bool]]:
        clauses = [
            orm.Job.state == self.state if self.state else None,
            orm.Job.kind == self.kind if self.kind else None,
            orm.Job.created_by == self.user_id if self.user_id else None,
            orm.Job.created_at >= self.since if self.since else None,
            orm.Job.created_at < self.until if self.until else None,
        ]
        return [c for c in clauses if c is not None]


def list_jobs(
    session: Session, *, lab_id: str, where: JobFilter, limit: int, offset: int, after: str | None = None
) -> list[orm.Job]:
    return repository.newest(
        session, orm.Job, lab_id=lab_id, limit=limit, offset=offset, where=where.where(), after=after
    )


def count_jobs(session: Session, *, lab_id: str, where: JobFilter) -> int:
    return repository.count(session, orm.Job, lab_id=lab_id, where=where.where())


def may_act_on(caller: Caller, job: orm.Job) -> bool:
    """Whether the caller may cancel or retry ``job``: their own, or any of the lab's for an admin."""
    return caller.is_admin or job.created_by == caller.user_id


def _own_or_admin(caller: Caller, job: orm.Job, action: str) -> None:
    if not may_act_on(caller, job):
        caller.require_admin(f"{action} another user's job")


def request_cancel(session: Session, caller: Caller, job_id: str) -> orm.Job:
    """Cancel a queued job at once; flag a running one for its worker to stop. Commits.

    Members cancel their own jobs; admins any job of their lab.
    """
    job = get_job(session, job_id, lab_id=caller.lab_id)
    _own_or_admin(caller, job, "cancelling")
    if job.state is State.QUEUED and _cancel_if_still_queued(session, job):
        mark_target(session, job, orm.ArtifactStatus.CANCELLED)
    else:
        if job.state is State.QUEUED:  # a worker claimed it since it was read: cancel it running
            session.refresh(job)
        if job.state in TERMINAL:
            raise Conflict(f"job {job.id} already ended ({job.state.value}); nothing to cancel")
        job.cancel_requested = True
        add_event(session, job, f"cancellation requested by {caller.user_name}")
    auth.record(session, caller, "job.cancel", job, {"kind": job.kind.value, "state": job.state.value})
    session.commit()
    return job


def _cancel_if_still_queued(session: Session, job: orm.Job) -> bool:
    """Cancel ``job`` if the registry still has it queued (compare-and-set, like :func:`claim`: a worker may
    have claimed it since it was read); False if not. Does not commit."""
    now = utcnow()
    result = session.execute(
        update(orm.Job)
        .where(orm.Job.id == job.id, orm.Job.state == State.QUEUED)
        .values(state=State.CANCELLED, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(session, job, "cancelled before it started", to_state=State.CANCELLED)
    set_committed_value(job, "state", State.CANCELLED)  # what the row now holds; nothing left to flush
    set_committed_value(job, "finished_at", now)
    return True


def retry(session: Session, caller: Caller, job_id: str) -> orm.Job:
    """Queue a failed or cancelled job again, under the same id; a pretraining that saved a checkpoint resumes
    from it. Commits.

    The encoder, predictor or evaluation it makes goes back to pending. Members retry their own jobs;
    admins any job of their lab.
    """
    job = get_job(session, job_id, lab_id=caller.lab_id)
    _own_or_admin(caller, job, "retrying")
    if job.state not in (State.FAILED, State.CANCELLED):
        raise Conflict(f"job {job.id} is {job.state.value}; only failed or cancelled jobs can be retried")
    if target(session, job) is None or session.get(orm.Cohort, job.params.get("cohort_id", "")) is None:
        raise Conflict(f"job {job.id} cannot be retried: its cohort or the row it makes was deleted")
    add_event(session, job, f"{RETRIED_BY} {caller.user_name}", to_state=State.QUEUED)
    previous = job.state.value
    job.state, job.error, job.cancel_requested = State.QUEUED, None, False
    job.started_at = job.finished_at = job.heartbeat_at = job.dispatched_at = None
    job.progress = {}
    mark_target(session, job, orm.ArtifactStatus.PENDING)
    auth.record(session, caller, "job.retry", job, {"kind": job.kind.value, "previous_state": previous})
    session.commit()
    return job


def target(session: Session, job: orm.Job) -> orm.Encoder | orm.Predictor | orm.Evaluation | None:
    """The encoder, predictor or evaluation a job makes, if it (still) exists."""
    encoder = session.scalar(select(orm.Encoder).where(orm.Encoder.job_id == job.id))
    predictor = session.scalar(select(orm.Predictor).where(orm.Predictor.job_id == job.id))
    evaluation = session.scalar(select(orm.Evaluation).where(orm.Evaluation.job_id == job.id))
    return encoder or predictor or evaluation


def mark_target(session: Session, job: orm.Job, status: orm.ArtifactStatus) -> None:
    """Give the encoder, predictor or evaluation a job produces the job's final status."""
    row = target(session, job)
    if row is not None:
        row.status = status
