"""Training checkpoints of a job: saved to the artifact store every N epochs and recorded on the job row.

A re-queued job (its worker was lost, or shut down) resumes from the latest one. Each save gets a new key
(the store never overwrites); the superseded blob is deleted once the job row points at its successor, and
the last one once the job has succeeded. Writes are fenced by the attempt number like the heartbeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import new_id
from app.jobs import service as jobs
from app.storage import ArtifactIntegrityError, delete_unreferenced
from models import checkpoint
from worker.context import JobContext

log = logging.getLogger(__name__)

KIND = "training_checkpoint"


@dataclass
class Resume:
    """Where an attempt starts: its attempt number and, if a checkpoint exists, the state and loss curve."""

    attempt: int
    state: dict[str, Any] | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        return 0 if self.state is None else int(self.state["epoch"])


def resume_point(ctx: JobContext) -> Resume:
    """Load the job's latest checkpoint; an unreadable one is reported and training starts afresh."""
    with ctx.session_factory() as session:
        job = session.get_one(orm.Job, ctx.job_id, populate_existing=True)
        attempt, info = job.attempts, job.checkpoint
    if not info:
        return Resume(attempt)
    try:
        payload = checkpoint.loads(ctx.store.get_bytes(info["key"], sha256=info["sha256"]))
        if payload.get("kind") != KIND:
            raise checkpoint.ArtifactError(f"kind {payload.get('kind')!r}")
        resume = Resume(attempt, payload["state"], [float(v) for v in payload["losses"]])
    except (ArtifactIntegrityError, checkpoint.ArtifactError, KeyError) as exc:
        _note(ctx, f"checkpoint {info['key']} unusable ({exc}); training starts from epoch 0")
        return Resume(attempt)
    _note(ctx, f"resumed from checkpoint at epoch {resume.epoch}")
    return resume


def save(ctx: JobContext, *, attempt: int, state: dict[str, Any], losses: list[float]) -> bool:
    """Store ``state`` (from ``SSLMethod.training_state``) and point the job at it; False if no longer ours."""
    epoch = int(state["epoch"])
    key = f"checkpoints/{ctx.job_id}/epoch-{epoch:06d}-{new_id()[:8]}.pt"
    data = checkpoint.dumps({"kind": KIND, "epoch": epoch, "state": state, "losses": [float(v) for v in losses]})
    sha256 = ctx.store.put_bytes(key, data)
    with ctx.session_factory() as session:
        previous = session.get_one(orm.Job, ctx.job_id, populate_existing=True).checkpoint
        result = session.execute(
            update(orm.Job)
            .where(orm.Job.id == ctx.job_id, orm.Job.state == orm.JobState.RUNNING, orm.Job.attempts == attempt)
            .values(checkpoint={"key": key, "sha256": sha256, "epoch": epoch})
            .execution_options(synchronize_session=False)
        )
        session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        ctx.store.delete(key)
        return False
    if previous and previous.get("key") != key:
        ctx.store.delete(previous["key"])
    return True


def discard_on_commit(session: Session, ctx: JobContext) -> None:
    """Clear the job's checkpoint in this transaction and delete its blob once the transaction commits."""
    job = session.get_one(orm.Job, ctx.job_id)
    info, job.checkpoint = job.checkpoint, None
    if info:
        what = f"a checkpoint of job {ctx.job_id}, which finished"
        event.listen(session, "after_commit", lambda _: delete_unreferenced(ctx.store, info["key"], what), once=True)


def _note(ctx: JobContext, message: str) -> None:
    log.info("job %s: %s", ctx.job_id, message)
    with ctx.session_factory() as session:
        jobs.add_event(session, session.get_one(orm.Job, ctx.job_id), message)
        session.commit()
