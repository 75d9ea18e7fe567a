"""Cohort queries. Repositories add and flush; services commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.db import orm, repository


def get(session: Session, cohort_id: str) -> orm.Cohort:
    return repository.get_or_404(session, orm.Cohort, cohort_id)


def list_all(session: Session, *, limit: int, offset: int) -> list[orm.Cohort]:
    return repository.newest(session, orm.Cohort, limit=limit, offset=offset)


def find_storage_key(session: Session, checksum: str) -> str | None:
    """Storage key of an identical matrix already stored, so it is not stored twice."""
    original = find_by_checksum(session, checksum)
    return None if original is None else original.storage_key


def find_by_checksum(session: Session, checksum: str) -> orm.Cohort | None:
    """The first cohort registered with this matrix checksum, if any."""
    query = select(orm.Cohort).where(orm.Cohort.checksum == checksum)
    return session.scalars(query.order_by(orm.Cohort.created_at, orm.Cohort.id).limit(1)).first()


def add_samples(session: Session, cohort_id: str, rows: Sequence[dict[str, object]]) -> None:
    if rows:
        session.execute(insert(orm.CohortSample), [{"cohort_id": cohort_id, **row} for row in rows])


def samples(session: Session, cohort_id: str) -> list[orm.CohortSample]:
    query = select(orm.CohortSample).where(orm.CohortSample.cohort_id == cohort_id)
    return list(session.scalars(query.order_by(orm.CohortSample.position)))
