"""A running job's heartbeat: a thread that stamps ``heartbeat_at`` while the pipeline trains.

Progress writes heartbeat too, but one epoch on a large cohort can outlast the reaper's timeout. The
update is fenced by the attempt number: once the reaper has re-queued the job (or another worker has
claimed it), the update matches no row and the heartbeat tells its job to stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import db_utcnow

log = logging.getLogger(__name__)


def beat(session_factory: Callable[[], Session], job_id: str, attempt: int) -> bool:
    """Stamp the heartbeat of ``job_id`` if this attempt still owns it; False if it does not."""
    with session_factory() as session:
        result = session.execute(
            update(orm.Job)
            .where(orm.Job.id == job_id, orm.Job.state == orm.JobState.RUNNING, orm.Job.attempts == attempt)
            .values(heartbeat_at=db_utcnow(session))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class Heartbeat:
    """Beat every ``interval_s`` until stopped; call ``on_lost`` once if the job was taken away."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        job_id: str,
        attempt: int,
        *,
        interval_s: float,
        on_lost: Callable[[], None],
    ) -> None:
        self._args = (session_factory, job_id, attempt)
        self._interval_s = interval_s
        self._on_lost = on_lost
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                owned = beat(*self._args)
            except SQLAlchemyError as exc:  # a database blip: keep training, beat again later
                log.warning("heartbeat of job %s failed: %s", self._args[1], exc)
                continue
            if not owned:
                log.warning("job %s was taken from this worker (re-queued or failed); stopping it", self._args[1])
                self.lost.set()
                self._on_lost()
                return
