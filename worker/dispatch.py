"""Dispatchers hand job ids to whatever runs them: threads in this process, or Celery (distributed mode)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import orm
from app.jobs import service as jobs
from app.storage import ArtifactStore
from worker.runner import run_job

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def submit(self, job_id: str) -> None: ...
    def cancel(self, job_id: str) -> None: ...


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
        event = threading.Event()
        with self._lock:
            self._cancel_events[job_id] = event
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
