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
from app.db.base import utcnow
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
    cancel_event: threading.Event = field(default_factory=threading.Event)
    shutdown_event: threading.Event = field(default_factory=threading.Event)
    progress_interval_s: float = 0.5
    _last_write: float = field(default=0.0, init=False)

    def report(self, epoch: int, loss: float, *, total_epochs: int, stage: str) -> None:
        """Record progress at most every ``progress_interval_s``; raise JobCancelled if asked to stop.

        The in-process event is checked every call (every epoch); the database flag, which another
        process may have set, whenever progress is written.
        """
        if self.cancel_event.is_set():
            raise JobCancelled(f"cancelled at {stage} epoch {epoch}")
        if self.shutdown_event.is_set():
            raise JobInterrupted(f"worker shut down at {stage} epoch {epoch}; the job will run again")
        now = time.monotonic()
        if now - self._last_write < self.progress_interval_s and epoch < total_epochs:
            return
        self._last_write = now
        progress = {"stage": stage, "epoch": epoch, "total_epochs": total_epochs, "loss": float(loss)}
        with self.session_factory() as session:
            session.execute(
                update(orm.Job)
                .where(orm.Job.id == self.job_id)
                .values(progress=progress, heartbeat_at=utcnow())
            )
            session.commit()
            if session.get_one(orm.Job, self.job_id).cancel_requested:
                raise JobCancelled(f"cancelled at {stage} epoch {epoch}")
