"""Cohort queries. Repositories add and flush; services commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, insert, or_, select
from sqlalchemy.orm import Session

from app.db import orm, repository


def get(session: Session, cohort_id: str, *, lab_id: str) -> orm.Cohort:
    return repository.get_or_404(session, orm.Cohort, cohort_id, lab_id=lab_id)


def list_all(session: Session, *, lab_id: str, limit: int, offset: int) -> list[orm.Cohort]:
    return repository.newest(session, orm.Cohort, lab_id=lab_id, limit=limit, offset=offset)


def find_by_checksum(session: Session, checksum: str, *, lab_id: str) -> orm.Cohort | None:
    """The lab's first cohort registered with this matrix checksum, if any (other labs' are never seen)."""
    query = select(orm.Cohort).where(orm.Cohort.checksum == checksum, orm.Cohort.lab_id == lab_id)
    return session.scalars(query.order_by(orm.Cohort.created_at, orm.Cohort.id).limit(1)).first()


def add_samples(session: Session, cohort_id: str, rows: Sequence[dict[str, object]]) -> None:
    if rows:
        session.execute(insert(orm.CohortSample), [{"cohort_id": cohort_id, **row} for row in rows])


def samples(session: Session, cohort_id: str) -> list[orm.CohortSample]:
    query = select(orm.CohortSample).where(orm.CohortSample.cohort_id == cohort_id)
    return list(session.scalars(query.order_by(orm.CohortSample.position)))


@dataclass
class Dependents:
    """Everything derived from a cohort: models trained on it (and on those), studies and predictions."""

    encoders: list[orm.Encoder]  # parents before the encoders continued from them
    predictors: list[orm.Predictor]
    evaluations: list[orm.Evaluation]
    predictions: list[orm.Prediction]

    def rows(self) -> list[orm.Encoder | orm.Predictor | orm.Evaluation | orm.Prediction]:
        return [*self.encoders, *self.predictors, *self.evaluations, *self.predictions]


def dependents(session: Session, cohort: orm.Cohort) -> Dependents:
    """Rows of the cohort's lab that were made from it, directly or through an encoder trained on it
    (or continued from such an encoder)."""
    lab = cohort.lab_id
    encoders = _encoders_from(session, lab, orm.Encoder.cohort_id == cohort.id)
    encoder_ids = [e.id for e in encoders]
    predictors = list(session.scalars(select(orm.Predictor).where(
        orm.Predictor.lab_id == lab,
        or_(orm.Predictor.cohort_id == cohort.id, orm.Predictor.encoder_id.in_(encoder_ids)),
    )))
    predictor_ids = [p.id for p in predictors]
    # An evaluation on another cohort may use an encoder trained on this one (its config names it).
    evaluations = [
        e for e in session.scalars(select(orm.Evaluation).where(orm.Evaluation.lab_id == lab))
        if e.cohort_id == cohort.id or set(e.config.get("encoder_ids", [])) & set(encoder_ids)
    ]
    predictions = list(session.scalars(select(orm.Prediction).where(
        orm.Prediction.lab_id == lab,
        or_(orm.Prediction.cohort_id == cohort.id, orm.Prediction.predictor_id.in_(predictor_ids)),
    )))
    return Dependents(encoders, predictors, evaluations, predictions)


def _encoders_from(session: Session, lab: str, trained_on: ColumnElement[bool]) -> list[orm.Encoder]:
    """The lab's encoders matching ``trained_on`` and every encoder continued from them, each after its parent
    (a chain may leave the cohort and come back to it, so the query's order is not enough)."""
    found = list(session.scalars(select(orm.Encoder).where(orm.Encoder.lab_id == lab, trained_on)))
    seen = {e.id for e in found}
    frontier = list(seen)
    while frontier:
        query = select(orm.Encoder).where(orm.Encoder.lab_id == lab, orm.Encoder.parent_encoder_id.in_(frontier))
        children = [e for e in session.scalars(query) if e.id not in seen]
        found += children
        frontier = [e.id for e in children]
        seen.update(frontier)
    parents = {e.id: e.parent_encoder_id for e in found}

    def depth(encoder_id: str) -> int:
        parent = parents[encoder_id]
        return 0 if parent is None or parent not in parents else 1 + depth(parent)

    return sorted(found, key=lambda e: (depth(e.id), e.created_at, e.id))


def active_jobs(session: Session, cohort: orm.Cohort, job_ids: Sequence[str]) -> list[orm.Job]:
    """Queued or running jobs of the lab that read the cohort or make one of ``job_ids``'s rows."""
    unfinished = select(orm.Job).where(
        orm.Job.lab_id == cohort.lab_id, orm.Job.state.in_([orm.JobState.QUEUED, orm.JobState.RUNNING])
    )
    return [j for j in session.scalars(unfinished) if j.id in job_ids or j.params.get("cohort_id") == cohort.id]


def storage_shared(session: Session, cohort: orm.Cohort) -> bool:
    """Whether another cohort (an identical upload) reads the same stored matrix."""
    query = select(orm.Cohort.id).where(orm.Cohort.storage_key == cohort.storage_key, orm.Cohort.id != cohort.id)
    return session.scalar(query.limit(1)) is not None
