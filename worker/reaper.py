"""The reaper of distributed mode: finds jobs whose worker vanished and jobs whose message was lost.

A running job whose heartbeat is older than ``heartbeat_timeout_s`` lost its worker: it goes back to the
queue (and resumes from its checkpoint) until it has been lost ``job_max_retries`` times; the next loss
fails it with the reason. A job still queued ``resend_queued_after_s`` after it was sent may have lost
its message (a broker restarted without persistence): it is sent again; the claim makes duplicates no-ops.
A job never sent (the broker was down when it was queued) is sent two sweeps after its creation.

Every API process and every worker runs one; the row lock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and
the state checks make concurrent sweeps safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import orm
from app.db.base import db_utcnow
from app.jobs import service as jobs

log = logging.getLogger(__name__)

LOST = "worker lost"
RETRIED = jobs.RETRIED_BY


@dataclass
class Sweep:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)


def _losses(session: Session, job_id: str) -> int:
    """How often this job's worker was lost since the job was queued by its user (created or retried)."""
    events = orm.JobEvent.job_id == job_id
    retried = select(func.max(orm.JobEvent.id)).where(events, orm.JobEvent.message.like(f"{RETRIED}%"))
    since = session.scalar(retried) or 0
    query = select(func.count()).where(events, orm.JobEvent.id > since, orm.JobEvent.message.like(f"{LOST}%"))
    return int(session.scalar(query) or 0)


def reap_lost(session: Session, settings: Settings, now: datetime, sweep: Sweep) -> None:
    """Re-queue, fail or cancel running jobs that stopped heartbeating. Commits."""
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    query = (
        select(orm.Job)
        .where(orm.Job.state == orm.JobState.RUNNING, orm.Job.heartbeat_at < cutoff)
        .with_for_update(skip_locked=True)
    )
    for job in list(session.scalars(query)):
        assert job.heartbeat_at is not None  # claim() stamps it
        silent = f"{job.worker_id} sent no heartbeat for {(now - job.heartbeat_at).total_seconds():.0f} s"
        losses = _losses(session, job.id) + 1
        if job.cancel_requested:
            to, message, bucket = orm.JobState.CANCELLED, f"cancelled; its worker was lost ({silent})", sweep.cancelled
        elif losses > settings.job_max_retries:
            to, message, bucket = orm.JobState.FAILED, f"{LOST} {losses} times; last: {silent}", sweep.failed
        else:
            retry = f"re-queued (retry {losses} of {settings.job_max_retries})"
            to, message, bucket = orm.JobState.QUEUED, f"{LOST}: {silent}; {retry}", sweep.requeued
        jobs.transition(session, job, to, message=message)
        if to is not orm.JobState.QUEUED:
            jobs.mark_target(session, job, orm.ArtifactStatus(to.value))
        bucket.append(job.id)
        log.warning("job %s: %s", job.id, message)
    session.commit()


def never_sent_grace_s(settings: Settings) -> float:
    """How long a queued job that was never sent (the broker was down when it was queued) waits for the sweep
    that sends it: two sweeps, time enough for the process that queued it to send it itself."""
    return min(settings.resend_queued_after_s, 2 * settings.reaper_interval_s)


def unsent(session: Session, settings: Settings, now: datetime) -> list[str]:
    """Queued jobs last sent more than ``resend_queued_after_s`` ago (their message may be lost), and queued
    jobs never sent, created more than :func:`never_sent_grace_s` ago (no message of theirs exists: waiting
    ``resend_queued_after_s`` for them held a job queued at a broker outage of seconds for 15 minutes)."""
    sent_cutoff = now - timedelta(seconds=settings.resend_queued_after_s)
    never_sent_cutoff = now - timedelta(seconds=never_sent_grace_s(settings))
    sent_at = func.coalesce(orm.Job.dispatched_at, orm.Job.created_at)
    due = or_(
        and_(orm.Job.dispatched_at.is_not(None), orm.Job.dispatched_at < sent_cutoff),
        and_(orm.Job.dispatched_at.is_(None), orm.Job.created_at < never_sent_cutoff),
    )
    query = select(orm.Job.id).where(orm.Job.state == orm.JobState.QUEUED, due).order_by(sent_at)
    return list(session.scalars(query))


def sweep(*, session_factory: Callable[[], Session], settings: Settings, send: Callable[[str], None]) -> Sweep:
    """One pass: reap lost jobs, then (re-)send the re-queued ones and those whose message may be lost."""
    result = Sweep()
    with session_factory() as session:
        now = db_utcnow(session)  # the clock heartbeats are stamped with
        reap_lost(session, settings, now, result)
        result.resent = [j for j in unsent(session, settings, now) if j not in result.requeued]
    for job_id in result.requeued + result.resent:
        send(job_id)
    return result


class Reaper:
    """Run :func:`sweep` now and every ``reaper_interval_s`` in a daemon thread until stopped."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], settings: Settings, send: Callable[[str], None]
    ) -> None:
        self._session_factory, self._settings, self._send = session_factory, settings, send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="exprssl-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            try:
                sweep(session_factory=self._session_factory, settings=self._settings, send=self._send)
            except Exception:  # the database or broker may be down for a while; try again next time
                log.exception("reaper sweep failed")
            if self._stop.wait(self._settings.reaper_interval_s):
                return
