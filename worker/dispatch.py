"""Dispatchers hand job ids to whatever runs them: threads in this process, or Celery (distributed mode)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import orm
from app.db.base import db_utcnow
from app.jobs import service as jobs
from app.storage import ArtifactStore
from worker.celery_app import QUEUES, create_celery, queue_of, task_name
from worker.reaper import Reaper
from worker.runner import run_job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """State of one dependency, for the readiness endpoint."""

    ok: bool
    detail: str


class Dispatcher(Protocol):
    def submit(self, job_id: str) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def checks(self, timeout_s: float) -> dict[str, Check]: ...


class InProcessDispatcher:
    """The embedded default: a small thread pool in the API process runs jobs one by one."""

    def __init__(self, *, session_factory: sessionmaker[Session], store: ArtifactStore, settings: Settings) -> None:
        self._session_factory = session_factory
        self._store = store
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="exprssl-job")
        self._cancel_events: dict[str, threading.Event] = {}
        self._futures: dict[str, Future[orm.JobState | None]] = {}
        self._lock = threading.Lock()
        self._shutdown = threading.Event()

    def start(self) -> None:
        """Recover after a restart: jobs left running died with the old process; queued ones run now."""
        with self._session_factory() as session:
            for job in session.scalars(select(orm.Job).where(orm.Job.state == orm.JobState.RUNNING)):
                jobs.transition(session, job, orm.JobState.FAILED, message="the process running it stopped")
                jobs.mark_target(session, job, orm.ArtifactStatus.FAILED)
            session.commit()
            queued = list(
                session.scalars(
                    select(orm.Job.id).where(orm.Job.state == orm.JobState.QUEUED).order_by(orm.Job.created_at)
                )
            )
        for job_id in queued:
            self.submit(job_id)

    def submit(self, job_id: str) -> None:
        with self._lock:
            # A retried job may still have its first submission waiting in the pool: both share one event,
            # cleared so that the old cancellation does not stop the retry. Only one of them can claim it.
            event = self._cancel_events.setdefault(job_id, threading.Event())
            event.clear()
            self._futures[job_id] = self._pool.submit(self._run, job_id, event)

    def _run(self, job_id: str, event: threading.Event) -> orm.JobState | None:
        try:
            return run_job(
                job_id,
                session_factory=self._session_factory,
                store=self._store,
                settings=self._settings,
                cancel_event=event,
                shutdown_event=self._shutdown,
            )
        finally:
            with self._lock:
                self._cancel_events.pop(job_id, None)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            event = self._cancel_events.get(job_id)
        if event is not None:
            event.set()

    def wait(self, job_id: str, timeout: float | None = None) -> orm.JobState | None:
        """Block until a job submitted here has finished (tests, the CLI)."""
        with self._lock:
            future = self._futures.get(job_id)
        return None if future is None else future.result(timeout=timeout)

    def shutdown(self) -> None:
        """Stop taking jobs; running ones stop at their next epoch and go back to the queue."""
        self._shutdown.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def checks(self, timeout_s: float) -> dict[str, Check]:
        """The in-process worker is ready while its thread pool takes jobs."""
        if self._shutdown.is_set():
            return {"workers": Check(False, "the in-process worker is shut down")}
        threads = self._settings.worker_threads
        return {"workers": Check(True, f"in-process worker, {threads} thread{'s' * (threads > 1)}")}


class CeleryDispatcher:
    """Distributed mode: job ids go to Celery workers through the broker, on their kind's queue.

    Cancellation needs no message: ``request_cancel`` sets the job's flag, which the worker running it
    polls (JobContext), on whatever machine. The reaper re-queues jobs whose worker vanished.
    """

    def __init__(
        self, *, session_factory: sessionmaker[Session], settings: Settings, celery: Celery | None = None
    ) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._owns_celery = celery is None
        self._celery = celery or create_celery(settings)
        self._reaper = Reaper(session_factory=session_factory, settings=settings, send=self.submit)

    def start(self) -> None:
        self._reaper.start()

    def shutdown(self) -> None:
        self._reaper.stop()
        if self._owns_celery:
            self._celery.close()

    def submit(self, job_id: str) -> None:
        """Send a queued job's id to its queue; if the broker is down it stays queued for the reaper."""
        with self._session_factory() as session:
            job = session.get(orm.Job, job_id)
            if job is None or job.state is not orm.JobState.QUEUED:
                return
            try:
                self._celery.send_task(task_name(job.kind), args=[job_id], queue=queue_of(job.kind, job.params))
            except Exception as exc:  # kombu raises many kinds; the job row keeps the truth
                log.warning("could not send job %s to the broker (%s); the reaper will re-send it", job_id, exc)
                return
            job.dispatched_at = db_utcnow(session)  # the clock the reaper's resend cutoff reads
            session.commit()

    def cancel(self, job_id: str) -> None:
        """Nothing to send: the worker polls the cancellation flag ``request_cancel`` has committed."""

    def checks(self, timeout_s: float) -> dict[str, Check]:
        """Broker reachable; some worker answers on each queue."""
        try:
            with self._celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        except Exception as exc:
            return {"broker": Check(False, f"unreachable: {exc}"), "workers": Check(False, "broker unreachable")}
        try:
            replies = self._active_queues(timeout_s)
        except Exception as exc:
            return {"broker": Check(True, "reachable"), "workers": Check(False, f"inspect failed: {exc}")}
        consumers = {q: sorted(w for w, qs in replies.items() if q in {x["name"] for x in qs}) for q in QUEUES}
        # A worker of the solo pool (the GPU workers) runs its job in the thread that would answer, so it
        # answers no inspection while it trains: its job's heartbeat tells that it is there, busy.
        busy = self._busy_workers([q for q, names in consumers.items() if not names])
        for queue, workers in busy.items():
            consumers[queue] = [f"busy ({worker} running a job)" for worker in workers]
        missing = [q for q, names in consumers.items() if not names]
        detail = "; ".join(f"{q}: {', '.join(names) or 'no worker'}" for q, names in consumers.items())
        return {"broker": Check(True, "reachable"), "workers": Check(not missing, detail)}

    def _active_queues(self, timeout_s: float) -> dict[str, Any]:
        """Each answering worker's queues. A pooled connection the broker dropped (it restarted, say) fails the
        first inspection made on it, though the broker answers again: that one is tried once more, on a fresh
        connection, rather than reported as the workers' failure."""
        try:
            return self._celery.control.inspect(timeout=timeout_s).active_queues() or {}
        except Exception:  # the transport's own error types (redis-py's, say); a silent worker raises none
            return self._celery.control.inspect(timeout=timeout_s).active_queues() or {}

    def _busy_workers(self, queues: list[str]) -> dict[str, list[str]]:
        """For each of ``queues``, the workers (``host:pid:thread``) running one of its jobs whose heartbeat is
        fresher than ``heartbeat_timeout_s`` (the reaper's limit; stamped and read with the database's clock)."""
        if not queues:
            return {}
        try:
            with self._session_factory() as session:
                cutoff = db_utcnow(session) - timedelta(seconds=self._settings.heartbeat_timeout_s)
                rows = session.execute(
                    select(orm.Job.kind, orm.Job.params, orm.Job.worker_id).where(
                        orm.Job.state == orm.JobState.RUNNING, orm.Job.heartbeat_at >= cutoff
                    )
                ).all()
        except SQLAlchemyError:  # the database check reports it
            return {}
        busy: dict[str, list[str]] = {}
        for kind, params, worker in rows:
            if (queue := queue_of(kind, params)) in queues:
                busy.setdefault(queue, []).append(str(worker))
        return {queue: sorted(set(workers)) for queue, workers in busy.items()}


def make_dispatcher(
    *, session_factory: sessionmaker[Session], store: ArtifactStore, settings: Settings
) -> InProcessDispatcher | CeleryDispatcher:
    """Celery when a broker is configured, else the embedded in-process worker."""
    if settings.broker_url:
        return CeleryDispatcher(session_factory=session_factory, settings=settings)
    return InProcessDispatcher(session_factory=session_factory, store=store, settings=settings)
