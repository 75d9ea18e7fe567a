"""Queries every lab-owned table shares: one row by id (or 404), the newest rows first; both scoped to a lab.
Also what a prediction reads of its predictor, in one query (:func:`predictor_to_predict`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session, defer

from app.db import orm
from app.errors import Conflict, InvalidInput, NotFound

Row = TypeVar(
    "Row", orm.Cohort, orm.Job, orm.Encoder, orm.Predictor, orm.Prediction, orm.Evaluation, orm.User, orm.ApiKey
)


def get_or_404(
    session: Session, table: type[Row], row_id: str, *, lab_id: str, deferred: Sequence[QueryableAttribute[Any]] = ()
) -> Row:
    """The row of ``table`` with id ``row_id`` if it belongs to lab ``lab_id``; ``deferred`` columns are read
    only when first used.

    Another lab's row is NotFound, exactly like a missing one, so that ids do not leak across labs.
    """
    row = session.get(table, row_id, options=_deferring(tuple(deferred)))
    if row is None or row.lab_id != lab_id:
        raise _not_found(table, row_id)
    return row


def _not_found(table: type[Any], row_id: str) -> NotFound:
    return NotFound(f"{table.__tablename__} {row_id} not found")


@dataclass(frozen=True)
class PredictorToPredict:
    """What a prediction reads of its predictor; ``fitted_on``: the cohort its z-scores come from (its own for
    a head on genes, else its encoder's pretraining cohort)."""

    id: str
    lab_id: str
    status: orm.ArtifactStatus
    job_id: str
    cohort_id: str
    artifact_key: str | None
    artifact_sha256: str | None
    gene_table_version: str | None
    fitted_on: str


# Plain columns in one query, built once. The predictor's ORM row (decoding its JSON columns) and a second
# query for its encoder's cohort took about twice as long, on every prediction.
_PREDICTOR_TO_PREDICT = (
    select(
        orm.Predictor.id, orm.Predictor.lab_id, orm.Predictor.status, orm.Predictor.job_id, orm.Predictor.cohort_id,
        orm.Predictor.artifact_key, orm.Predictor.artifact_sha256, orm.Predictor.gene_table_version,
        case((orm.Predictor.encoder_id.is_(None), orm.Predictor.cohort_id), else_=orm.Encoder.cohort_id).label(
            "fitted_on"
        ),
    )
    .outerjoin(orm.Encoder, orm.Encoder.id == orm.Predictor.encoder_id)
    .where(orm.Predictor.id == bindparam("predictor_id"))
)


def predictor_to_predict(session: Session, predictor_id: str, *, lab_id: str) -> PredictorToPredict:
    """What a prediction reads of predictor ``predictor_id``; NotFound as :func:`get_or_404`."""
    row = session.execute(_PREDICTOR_TO_PREDICT, {"predictor_id": predictor_id}).one_or_none()
    if row is None or row.lab_id != lab_id:
        raise _not_found(orm.Predictor, predictor_id)
    if row.fitted_on is None:  # its encoder's row is gone: foreign keys make this unreachable
        raise Conflict(f"predictor {predictor_id}: its encoder is missing from the registry")
    return PredictorToPredict(**row._mapping)


@functools.cache
def _deferring(columns: tuple[QueryableAttribute[Any], ...]) -> tuple[Any, ...]:
    """Loader options deferring ``columns``, made once per set of columns (options are immutable): making
    them took 0.2 of a prediction request's 1.3 ms reading its predictor."""
    return tuple(defer(column) for column in columns)


def newest(
    session: Session,
    table: type[Row],
    *,
    lab_id: str,
    limit: int,
    offset: int,
    where: Sequence[ColumnElement[bool]] = (),
    unloaded: Sequence[QueryableAttribute[Any]] = (),
    after: str | None = None,
) -> list[Row]:
    """A page of lab ``lab_id``'s rows of ``table`` matching ``where``, newest first (ties broken by id, so
    the (lab_id, created_at, id) index gives the order); ``unloaded`` columns are never read (reading one
    raises), for lists that leave out large JSON. ``after``, the id of the last row of the previous page:
    the rows older than it, a walk that rows added meanwhile cannot shift (as ``offset`` can)."""
    query = select(table).where(table.lab_id == lab_id, *where).order_by(table.created_at.desc(), table.id.desc())
    if after is not None:
        query = query.where(_older_than(session, table, after, lab_id=lab_id))
    options = [defer(column, raiseload=True) for column in unloaded]
    return list(session.scalars(query.options(*options).limit(limit).offset(offset)))


# The large JSON columns a list of each table never reads (reading one raises): a predictor's split names every
# sample, an evaluation's runs and timings hold every run's metrics and every seed's split.
LISTED_WITHOUT: dict[type[Any], tuple[QueryableAttribute[Any], ...]] = {
    orm.Predictor: orm.PREDICTOR_DETAILS,
    orm.Evaluation: (orm.Evaluation.runs, orm.Evaluation.timings),
}


def listing(
    session: Session,
    table: type[Row],
    *,
    lab_id: str,
    limit: int,
    offset: int,
    filters: Mapping[str, object] | None = None,
    after: str | None = None,
) -> list[Row]:
    """A page of lab ``lab_id``'s rows of ``table`` as lists give them: newest first (see :func:`newest`),
    whose columns equal ``filters`` (None: any), without the table's :data:`LISTED_WITHOUT` columns."""
    return newest(session, table, lab_id=lab_id, limit=limit, offset=offset, where=equals(table, **(filters or {})),
                  unloaded=LISTED_WITHOUT.get(table, ()), after=after)


def _older_than(session: Session, table: type[Row], row_id: str, *, lab_id: str) -> ColumnElement[bool]:
    """Rows listed after ``row_id`` newest first; InvalidInput when the lab has no such row."""
    found = session.execute(select(table.created_at, table.id).where(table.id == row_id, table.lab_id == lab_id))
    row = found.first()
    if row is None:
        raise InvalidInput(f"after: no {table.__tablename__} {row_id} in this lab to continue after")
    return or_(table.created_at < row.created_at, and_(table.created_at == row.created_at, table.id < row.id))


def equals(table: type[Row], **values: object) -> list[ColumnElement[bool]]:
    """``column == value`` for each named column of ``table`` whose value is not None (a list's filters)."""
    return [getattr(table, name) == value for name, value in values.items() if value is not None]


def count(session: Session, table: type[Row], *, lab_id: str, where: Sequence[ColumnElement[bool]] = ()) -> int:
    """How many of lab ``lab_id``'s rows of ``table`` match ``where`` (the total behind :func:`newest`'s pages)."""
    query = select(func.count()).select_from(table).where(table.lab_id == lab_id, *where)
    return session.scalar(query) or 0
