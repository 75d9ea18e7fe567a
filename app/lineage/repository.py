"""Lineage queries: cohorts feed encoders (pretraining), encoders feed encoders (continued pretraining),
predictors and evaluations; predictors make predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import QueryableAttribute, Session, defer, load_only
from sqlalchemy.sql.base import ExecutableOption

from app.db import orm

Made = orm.Encoder | orm.Predictor | orm.Evaluation | orm.Prediction

# An evaluation's large JSON columns, which lineage never needs (loaded on access, should a caller want them).
EVALUATION_RESULTS = (orm.Evaluation.runs, orm.Evaluation.summary, orm.Evaluation.timings)


def _deferred(columns: Sequence[QueryableAttribute[Any]]) -> list[ExecutableOption]:
    return [defer(column) for column in columns]


@dataclass
class Dependents:
    """Rows made from one row, directly or through others."""

    encoders: list[orm.Encoder]  # parents before the encoders continued from them
    predictors: list[orm.Predictor]
    evaluations: list[orm.Evaluation]
    predictions: list[orm.Prediction]  # only their ids loaded (there may be very many)
    predictions_where: ColumnElement[bool] | None = None  # the condition that found them, to delete them by

    def rows(self) -> list[Made]:
        return [*self.encoders, *self.predictors, *self.evaluations, *self.predictions]

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


def ancestry(session: Session, encoder: orm.Encoder) -> list[orm.Encoder]:
    """The encoder, then the encoder it continued from, and so on back to one pretrained from scratch."""
    chain = [encoder]
    while chain[-1].parent_encoder_id is not None:
        chain.append(session.get_one(orm.Encoder, chain[-1].parent_encoder_id))
    return chain


def pretraining_overlap(session: Session, encoder: orm.Encoder, cohort: orm.Cohort) -> str | None:
    """Why the encoder's pretraining saw ``cohort``'s samples, or None: it, or an encoder it continued from,
    was pretrained on this cohort or on an identical upload of its matrix."""
    for depth, step in enumerate(ancestry(session, encoder)):
        trained_on = session.get(orm.Cohort, step.cohort_id)
        if step.cohort_id == cohort.id or (trained_on is not None and trained_on.checksum == cohort.checksum):
            where = "this cohort" if step.cohort_id == cohort.id else f"cohort {step.cohort_id}, the same matrix"
            who = f"continued from encoder {step.id}, pretrained" if depth else "pretrained"
            return f"{who} on {where}, so its pretraining (without labels) saw the test samples"
    return None


def _made_with(
    session: Session, lab_id: str, encoders: Sequence[orm.Encoder], *, cohort_id: str | None = None
) -> Dependents:
    """Predictors, evaluations and predictions made with ``encoders`` (or from the cohort ``cohort_id``)."""
    encoder_ids = {e.id for e in encoders}
    on_cohort = [] if cohort_id is None else [orm.Predictor.cohort_id == cohort_id]
    predictors = list(session.scalars(select(orm.Predictor).options(*_deferred(orm.PREDICTOR_DETAILS)).where(
        orm.Predictor.lab_id == lab_id, or_(orm.Predictor.encoder_id.in_(encoder_ids), *on_cohort)
    )))
    # An evaluation on another cohort may use an encoder of these (its config names it): every evaluation of
    # the lab is read, but not its results.
    evaluations = [
        e for e in session.scalars(
            select(orm.Evaluation).options(*_deferred(EVALUATION_RESULTS)).where(orm.Evaluation.lab_id == lab_id)
        )
        if (cohort_id is not None and e.cohort_id == cohort_id) or set(e.config.get("encoder_ids", [])) & encoder_ids
    ]
    predictor_ids = [p.id for p in predictors]
    on_cohort = [] if cohort_id is None else [orm.Prediction.cohort_id == cohort_id]
    where = and_(orm.Prediction.lab_id == lab_id, or_(orm.Prediction.predictor_id.in_(predictor_ids), *on_cohort))
    return Dependents(list(encoders), predictors, evaluations, _predictions(session, where), where)


def _predictions(session: Session, where: ColumnElement[bool]) -> list[orm.Prediction]:
    query = select(orm.Prediction).options(load_only(orm.Prediction.id)).where(where)
    return list(session.scalars(query.order_by(orm.Prediction.created_at, orm.Prediction.id)))


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
    where = and_(orm.Prediction.lab_id == predictor.lab_id, orm.Prediction.predictor_id == predictor.id)
    return Dependents([], [], [], _predictions(session, where), where)


def unfinished_jobs(
    session: Session, lab_id: str, job_ids: Sequence[str], *, reads: Callable[[orm.Job], bool] | None = None
) -> list[orm.Job]:
    """Queued or running jobs of the lab among ``job_ids``, or for which ``reads(job)`` holds."""
    unfinished = select(orm.Job).where(
        orm.Job.lab_id == lab_id, orm.Job.state.in_([orm.JobState.QUEUED, orm.JobState.RUNNING])
    )
    wanted = set(job_ids)
    return [j for j in session.scalars(unfinished) if j.id in wanted or (reads is not None and reads(j))]


def take_checkpoints(session: Session, job_ids: Sequence[str]) -> list[str]:
    """Clear the saved training states of these jobs; return their artifact keys."""
    keys = []
    for job in session.scalars(select(orm.Job).where(orm.Job.id.in_(job_ids))):
        if job.checkpoint:  # a failed or cancelled pretraining's last state
            keys.append(job.checkpoint["key"])
            job.checkpoint = None
    return keys


def delete_dependents(session: Session, found: Dependents) -> None:
    """Delete ``found``: predictions by the condition that found them (also any made since), evaluations in
    bulk, then predictors and encoders one by one, continued encoders before their parents."""
    if found.predictions_where is not None:
        session.execute(delete(orm.Prediction).where(found.predictions_where), execution_options={
            "synchronize_session": False})
    if found.evaluations:
        ids = [e.id for e in found.evaluations]
        session.execute(delete(orm.Evaluation).where(orm.Evaluation.id.in_(ids)), execution_options={
            "synchronize_session": False})
    for row in [*found.predictors, *reversed(found.encoders)]:
        session.delete(row)
        session.flush()
