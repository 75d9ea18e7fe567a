"""What was made from what, and deletion that keeps it whole.

Cohorts feed encoders (pretraining), encoders feed encoders (continued pretraining), predictors and
evaluations; predictors make predictions. Deleting a row is refused while anything made from it exists
(the message names them) unless an admin forces it, which deletes those too, newest lineage first; it is
refused in every case while a queued or running job reads the row or makes one of its dependents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from app.auth import service as auth
from app.auth.service import Caller
from app.db import orm
from app.errors import Conflict
from app.storage import ArtifactStore

Made = orm.Encoder | orm.Predictor | orm.Evaluation | orm.Prediction


@dataclass
class Dependents:
    """Rows made from one row, directly or through others."""

    encoders: list[orm.Encoder]  # parents before the encoders continued from them
    predictors: list[orm.Predictor]
    evaluations: list[orm.Evaluation]
    predictions: list[orm.Prediction]

    def rows(self) -> list[Made]:
        return [*self.encoders, *self.predictors, *self.evaluations, *self.predictions]

    def deletion_order(self) -> list[Made]:
        """Each row before the rows it references: continued encoders before their parents."""
        return [*self.predictions, *self.evaluations, *self.predictors, *reversed(self.encoders)]

    def job_ids(self) -> list[str]:
        return [e.job_id for e in self.encoders] + [p.job_id for p in self.predictors] + [
            e.job_id for e in self.evaluations
        ]

    def artifact_keys(self) -> list[str]:
        keys = [e.artifact_key for e in self.encoders] + [p.artifact_key for p in self.predictors]
        return [key for key in keys if key]


def encoders_from(session: Session, lab_id: str, roots: ColumnElement[bool]) -> list[orm.Encoder]:
    """The lab's encoders matching ``roots`` and every encoder continued from them, each after its parent
    (a chain may leave a cohort and come back to it, so the query's order is not enough)."""
    found = list(session.scalars(select(orm.Encoder).where(orm.Encoder.lab_id == lab_id, roots)))
    seen = {e.id for e in found}
    frontier = list(seen)
    while frontier:
        query = select(orm.Encoder).where(orm.Encoder.lab_id == lab_id, orm.Encoder.parent_encoder_id.in_(frontier))
        children = [e for e in session.scalars(query) if e.id not in seen]
        found += children
        frontier = [e.id for e in children]
        seen.update(frontier)
    parents = {e.id: e.parent_encoder_id for e in found}

    def depth(encoder_id: str) -> int:
        parent = parents[encoder_id]
        return 0 if parent is None or parent not in parents else 1 + depth(parent)

    return sorted(found, key=lambda e: (depth(e.id), e.created_at, e.id))


def _made_with(
    session: Session, lab_id: str, encoders: Sequence[orm.Encoder], *, cohort_id: str | None = None
) -> Dependents:
    """Predictors, evaluations and predictions made with ``encoders`` (or from the cohort ``cohort_id``)."""
    encoder_ids = {e.id for e in encoders}
    on_cohort = [] if cohort_id is None else [orm.Predictor.cohort_id == cohort_id]
    predictors = list(session.scalars(select(orm.Predictor).where(
        orm.Predictor.lab_id == lab_id, or_(orm.Predictor.encoder_id.in_(encoder_ids), *on_cohort)
    )))
    # An evaluation on another cohort may use an encoder of these (its config names it).
    evaluations = [
        e for e in session.scalars(select(orm.Evaluation).where(orm.Evaluation.lab_id == lab_id))
        if (cohort_id is not None and e.cohort_id == cohort_id) or set(e.config.get("encoder_ids", [])) & encoder_ids
    ]
    predictor_ids = [p.id for p in predictors]
    on_cohort = [] if cohort_id is None else [orm.Prediction.cohort_id == cohort_id]
    predictions = list(session.scalars(select(orm.Prediction).where(
        orm.Prediction.lab_id == lab_id, or_(orm.Prediction.predictor_id.in_(predictor_ids), *on_cohort)
    )))
    return Dependents(list(encoders), predictors, evaluations, predictions)


def of_cohort(session: Session, cohort: orm.Cohort) -> Dependents:
    """Everything made from a cohort: encoders trained on it (and continued from those), the predictors,
    evaluations and predictions made with them or on it."""
    encoders = encoders_from(session, cohort.lab_id, orm.Encoder.cohort_id == cohort.id)
    return _made_with(session, cohort.lab_id, encoders, cohort_id=cohort.id)


def of_encoder(session: Session, encoder: orm.Encoder) -> Dependents:
    """Everything made from an encoder: the encoders continued from it (not itself), and what they and it
    made."""
    lineage = encoders_from(session, encoder.lab_id, orm.Encoder.id == encoder.id)
    made = _made_with(session, encoder.lab_id, lineage)
    made.encoders = [e for e in lineage if e.id != encoder.id]
    return made


def of_predictor(session: Session, predictor: orm.Predictor) -> Dependents:
    """The predictions a predictor made."""
    query = select(orm.Prediction).where(
        orm.Prediction.lab_id == predictor.lab_id, orm.Prediction.predictor_id == predictor.id
    )
    return Dependents([], [], [], list(session.scalars(query)))


def unfinished_jobs(
    session: Session, lab_id: str, job_ids: Sequence[str], *, reads: Callable[[orm.Job], bool] | None = None
) -> list[orm.Job]:
    """Queued or running jobs of the lab among ``job_ids``, or for which ``reads(job)`` holds."""
    unfinished = select(orm.Job).where(
        orm.Job.lab_id == lab_id, orm.Job.state.in_([orm.JobState.QUEUED, orm.JobState.RUNNING])
    )
    wanted = set(job_ids)
    return [j for j in session.scalars(unfinished) if j.id in wanted or (reads is not None and reads(j))]


def names(rows: Sequence[Made]) -> str:
    """``table id (name)`` of each row, comma-separated."""
    named = [(row.__tablename__, row.id, getattr(row, "name", None)) for row in rows]
    return ", ".join(f"{table} {row_id}" + (f" ({name})" if name else "") for table, row_id, name in named)


def remove(
    *,
    session: Session,
    store: ArtifactStore,
    caller: Caller,
    target: orm.Cohort | Made,
    found: Dependents,
    running: Sequence[orm.Job],
    force: bool,
    keys: Sequence[str] = (),
    keep_file: Callable[[str], bool] = lambda _key: False,
) -> list[str]:
    """Delete ``target`` and, with ``force``, ``found``; record it in the audit log. Commits.

    Refused (Conflict) while ``running`` jobs use them, and without ``force`` while ``found`` holds rows. The
    artifacts (``keys``, the dependents' own and their jobs' checkpoints) are deleted after the commit, so that
    a failed commit loses no file, except those ``keep_file`` keeps (looked at after the commit).

    Returns:
        Every artifact key deleted (for the API process's caches to drop).
    """
    what = f"{target.__tablename__} {target.id}"
    if running:
        jobs = ", ".join(f"{j.id} ({j.kind.value}, {j.state.value})" for j in running)
        raise Conflict(f"{what} is in use by unfinished job(s) {jobs}; cancel them or let them end first")
    if found.rows() and not force:
        raise Conflict(
            f"{what} cannot be deleted: {names(found.rows())} were made from it. "
            "Delete those first, or have an admin delete with force=true, which deletes them too."
        )
    keys = [*keys, *found.artifact_keys()]
    for job in session.scalars(select(orm.Job).where(orm.Job.id.in_(found.job_ids()))):
        if job.checkpoint:
            keys.append(job.checkpoint["key"])
            job.checkpoint = None
    details = {"name": getattr(target, "name", None), "force": force,
               "deleted": [f"{r.__tablename__} {r.id}" for r in found.rows()]}
    for row in found.deletion_order():
        session.delete(row)
        session.flush()
    session.delete(target)
    auth.record(session, caller, f"{target.__tablename__}.delete", target, details)
    session.commit()
    removed = [key for key in keys if not keep_file(key)]
    for key in removed:
        store.delete(key)
    return removed


def remove_made(
    *,
    session: Session,
    store: ArtifactStore,
    caller: Caller,
    row: orm.Encoder | orm.Predictor | orm.Evaluation,
    found: Dependents,
    force: bool,
) -> list[str]:
    """Delete an encoder, predictor or evaluation (with ``force``, also ``found``). Commits.

    Members delete what their own jobs made; admins anything of the lab, and only admins force. Refused while
    the row's own job or a dependent's is unfinished (cancel it first).

    Returns:
        Every artifact key deleted.
    """
    job = session.get_one(orm.Job, row.job_id)
    what = f"{row.__tablename__} {row.id}"
    if job.created_by != caller.user_id:
        caller.require_admin(f"deleting {what}, which another user's job made")
    if force:
        caller.require_admin(f"forced deletion of {what} (which also deletes what was made from it)")
    keys = [row.artifact_key] if isinstance(row, orm.Encoder | orm.Predictor) and row.artifact_key else []
    if job.checkpoint:  # a failed or cancelled pretraining's last state
        keys.append(job.checkpoint["key"])
        job.checkpoint = None
    running = unfinished_jobs(session, row.lab_id, [row.job_id, *found.job_ids()])
    return remove(
        session=session, store=store, caller=caller, target=row, found=found, running=running, force=force, keys=keys
    )
