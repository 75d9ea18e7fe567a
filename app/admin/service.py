"""Read queries the admin pages need beyond the REST services; every one is scoped to a lab."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only

from app.db import orm


@dataclass(frozen=True)
class EfficiencyPoint:
    """One ready predictor on the label-efficiency plot."""

    series: str  # "<head> on <encoder method>", or the head alone for the encoder-free baseline
    fraction: float
    balanced_accuracy: float
    current: bool = False


def user_names(session: Session, *, lab_id: str) -> dict[str, str]:
    """Every user id of the lab with its name."""
    query = select(orm.User.id, orm.User.name).where(orm.User.lab_id == lab_id)
    return {user_id: name for user_id, name in session.execute(query)}


def encoder_methods(session: Session, *, lab_id: str, ids: Iterable[str | None]) -> dict[str, str]:
    """The SSL method of each of the lab's encoders among ``ids`` (those of one page: not all the lab's)."""
    query = select(orm.Encoder.id, orm.Encoder.method).where(
        orm.Encoder.lab_id == lab_id, orm.Encoder.id.in_({i for i in ids if i is not None})
    )
    return {encoder_id: method for encoder_id, method in session.execute(query)}


def predictors_on_encoder(session: Session, encoder: orm.Encoder) -> list[orm.Predictor]:
    """Predictors fitted on an encoder, newest first."""
    query = select(orm.Predictor).where(
        orm.Predictor.lab_id == encoder.lab_id, orm.Predictor.encoder_id == encoder.id
    )
    return list(session.scalars(query.order_by(orm.Predictor.created_at.desc(), orm.Predictor.id.desc())))


def continued_encoders(session: Session, encoder: orm.Encoder) -> list[orm.Encoder]:
    """Encoders whose pretraining continued ``encoder``, newest first."""
    query = select(orm.Encoder).where(
        orm.Encoder.lab_id == encoder.lab_id, orm.Encoder.parent_encoder_id == encoder.id
    )
    return list(session.scalars(query.order_by(orm.Encoder.created_at.desc(), orm.Encoder.id.desc())))


def series_name(head: str, method: str | None) -> str:
    return head if method is None else f"{head} on {method}"


def efficiency_points(session: Session, predictor: orm.Predictor) -> list[EfficiencyPoint]:
    """Balanced accuracy and label fraction of every ready predictor of the lab on the same cohort and label column."""
    query = select(orm.Predictor).where(
        orm.Predictor.lab_id == predictor.lab_id,
        orm.Predictor.cohort_id == predictor.cohort_id,
        orm.Predictor.label_column == predictor.label_column,
        orm.Predictor.status == orm.ArtifactStatus.READY,
    )
    rows = list(session.scalars(query.options(load_only(
        orm.Predictor.id, orm.Predictor.head, orm.Predictor.encoder_id, orm.Predictor.label_fraction,
        orm.Predictor.metrics, raiseload=True,
    ))))
    methods = encoder_methods(session, lab_id=predictor.lab_id, ids=[row.encoder_id for row in rows])
    points = []
    for row in rows:
        score = row.metrics.get("balanced_accuracy")
        if not isinstance(score, int | float) or not 0 < row.label_fraction <= 1:
            continue
        method = None if row.encoder_id is None else methods.get(row.encoder_id, "?")
        points.append(EfficiencyPoint(series_name(row.head, method), row.label_fraction, float(score),
                                      row.id == predictor.id))
    return points


def audit_actions(session: Session, *, lab_id: str) -> list[str]:
    """The distinct actions in the lab's audit log, for the filter, in order.

    A loose index scan: each step seeks the next action after the last one found on the (lab_id, action,
    at) index, so a log of any length costs one seek per distinct action, not a read of every event.
    """
    event = orm.AuditEvent
    found = select(func.min(event.action).label("action")).where(event.lab_id == lab_id).cte(recursive=True)
    after = select(func.min(event.action)).where(event.lab_id == lab_id, event.action > found.c.action)
    found = found.union_all(select(after.scalar_subquery()).where(found.c.action.is_not(None)))
    return list(session.scalars(select(found.c.action).where(found.c.action.is_not(None)).order_by(found.c.action)))


def cohort_names(session: Session, *, lab_id: str, ids: Iterable[str]) -> dict[str, str]:
    """The name of each of the lab's cohorts among ``ids`` (those of one page: not all the lab's)."""
    query = select(orm.Cohort.id, orm.Cohort.name).where(orm.Cohort.lab_id == lab_id, orm.Cohort.id.in_(set(ids)))
    return {cohort_id: name for cohort_id, name in session.execute(query)}

