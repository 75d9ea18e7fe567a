"""Read queries the admin pages need beyond the REST services; every one is scoped to a lab."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def encoder_methods(session: Session, *, lab_id: str) -> dict[str, str]:
    """Every encoder id of the lab with its SSL method."""
    query = select(orm.Encoder.id, orm.Encoder.method).where(orm.Encoder.lab_id == lab_id)
    return {encoder_id: method for encoder_id, method in session.execute(query)}


def predictors_on_encoder(session: Session, encoder: orm.Encoder) -> list[orm.Predictor]:
    """Predictors fitted on an encoder, newest first."""
    query = select(orm.Predictor).where(
        orm.Predictor.lab_id == encoder.lab_id, orm.Predictor.encoder_id == encoder.id
    )
    return list(session.scalars(query.order_by(orm.Predictor.created_at.desc(), orm.Predictor.id)))


def continued_encoders(session: Session, encoder: orm.Encoder) -> list[orm.Encoder]:
    """Encoders whose pretraining continued ``encoder``, newest first."""
    query = select(orm.Encoder).where(
        orm.Encoder.lab_id == encoder.lab_id, orm.Encoder.parent_encoder_id == encoder.id
    )
    return list(session.scalars(query.order_by(orm.Encoder.created_at.desc(), orm.Encoder.id)))


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
    methods = encoder_methods(session, lab_id=predictor.lab_id)
    points = []
    for row in session.scalars(query):
        score = row.metrics.get("balanced_accuracy")
        if not isinstance(score, int | float) or not 0 < row.label_fraction <= 1:
            continue
        method = None if row.encoder_id is None else methods.get(row.encoder_id, "?")
        points.append(EfficiencyPoint(series_name(row.head, method), row.label_fraction, float(score),
                                      row.id == predictor.id))
    return points


def audit_actions(session: Session, *, lab_id: str) -> list[str]:
    """The distinct actions in the lab's audit log, for the filter."""
    query = select(orm.AuditEvent.action).where(orm.AuditEvent.lab_id == lab_id).distinct()
    return sorted(session.scalars(query))


def cohort_names(session: Session, *, lab_id: str) -> dict[str, str]:
    """Every cohort id of the lab with its name."""
    query = select(orm.Cohort.id, orm.Cohort.name).where(orm.Cohort.lab_id == lab_id)
    return {cohort_id: name for cohort_id, name in session.execute(query)}

