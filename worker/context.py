"""What a running pipeline may do: report progress, notice cancellation, reach the registry and store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import db_utcnow
from app.storage import ArtifactStore

# What a pipeline returns: records its results in the transaction of the job's final transition.
Recorder = Callable[[Session], None]


class JobCancelled(Exception):
    """Raised inside a pipeline when its job was asked to stop."""


class JobInterrupted(Exception):
    """Raised inside a pipeline when its worker shuts down; the job goes back to the queue."""


@dataclass
class JobContext:
    job_id: str
    params: dict[str, object]
    store: ArtifactStore
    session_factory: Callable[[], AbstractContextManager[Session]]
    min_gene_coverage: float  # share of an encoder's panel a cohort must cover (Settings.min_gene_coverage)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    shutdown_event: threading.Event = field(default_factory=threading.Event)
    progress_interval_s: float = 0.5
    checkpoint_every_epochs: int = 0  # pipelines that train save a resumable state this often
    attempt: int | None = None  # the claim's attempt number: progress is written only while it owns the job
    written: list[str] = field(default_factory=list, init=False)  # artifacts put by put_artifact
    _last_write: float = field(default=0.0, init=False)
    _last_poll: float = field(default=0.0, init=False)

    def put_artifact(self, key: str, data: bytes) -> str:
        """Store a result file (a trained model) and return its sha256; the runner removes it again if the job
        does not record it (failed, cancelled, or taken over meanwhile), so no file outlives its row."""
        self.written.append(key)
        return self.store.put_bytes(key, data)

    def _check_events(self, where: str) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(f"cancelled {where}")
        if self.shutdown_event.is_set():
            raise JobInterrupted(f"worker shut down {where}; the job will run again")

    def _cancel_flag_set(self, session: Session) -> bool:
        self._last_poll = time.monotonic()
        return session.get_one(orm.Job, self.job_id, populate_existing=True).cancel_requested

    def raise_if_stopped(self, where: str = "") -> None:
        """Raise JobCancelled or JobInterrupted when asked to stop; cheap enough to call every epoch.

        The in-process events are checked every call; the database flag, which another process may have
        set, at most every ``progress_interval_s``.
        """
        self._check_events(where)
        if time.monotonic() - self._last_poll >= self.progress_interval_s:
            with self.session_factory() as session:
                if self._cancel_flag_set(session):
                    raise JobCancelled(f"cancelled {where}")

    def report(self, epoch: int, loss: float | None, *, total_epochs: int, stage: str) -> None:
        """Record progress at most every ``progress_interval_s``; raise JobCancelled if asked to stop.

        The in-process events are checked every call (every epoch); when one is set, this epoch's progress is
        written first (if the attempt still owns the job), so a stopped job shows where it stopped. The
        database flag, which another process may have set, is checked whenever progress is written.
        """
        where = f"at {stage} epoch {epoch}"
        stopping = self.cancel_event.is_set() or self.shutdown_event.is_set()
        now = time.monotonic()
        if not stopping and now - self._last_write < self.progress_interval_s and epoch < total_epochs:
            return
        self._last_write = now
        progress = {
            "stage": stage,
            "epoch": epoch,
            "total_epochs": total_epochs,
            "loss": None if loss is None else float(loss),
        }
        with self.session_factory() as session:
            owned = self._write_progress(session, progress)
            self._check_events(where)
            if not owned:
                # Re-queued by the reaper (or retried) meanwhile: another attempt owns the job now.
                self.cancel_event.set()
                raise JobCancelled(f"attempt {self.attempt} no longer owns the job {where}")
            if self._cancel_flag_set(session):
                raise JobCancelled(f"cancelled {where}")

    def _write_progress(self, session: Session, progress: dict[str, object]) -> bool:
        """Write ``progress`` and a heartbeat while this attempt owns the job; whether it did."""
        owned = [orm.Job.id == self.job_id]
        if self.attempt is not None:
            owned += [orm.Job.state == orm.JobState.RUNNING, orm.Job.attempts == self.attempt]
        written = session.execute(
            update(orm.Job).where(*owned).values(progress=progress, heartbeat_at=db_utcnow(session))
        )
        session.commit()
        return bool(written.rowcount == 1)  # type: ignore[attr-defined]
