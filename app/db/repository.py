"""Queries every registry table shares: one row by id (or 404), the newest rows first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.db import orm
from app.errors import NotFound

Row = TypeVar("Row", orm.Cohort, orm.Job, orm.Encoder, orm.Predictor, orm.Prediction, orm.Evaluation)


def get_or_404(session: Session, table: type[Row], row_id: str) -> Row:
    """The row of ``table`` with id ``row_id``; NotFound names the table and the id."""
    row = session.get(table, row_id)
    if row is None:
        raise NotFound(f"{table.__tablename__} {row_id} not found")
    return row


def newest(
    session: Session, table: type[Row], *, limit: int, offset: int, where: Sequence[ColumnElement[bool]] = ()
) -> list[Row]:
    """A page of ``table``'s rows matching ``where``, newest first (ties broken by id)."""
    query = select(table).where(*where).order_by(table.created_at.desc(), table.id)
    return list(session.scalars(query.limit(limit).offset(offset)))
