"""Cohort queries. Repositories add and flush; services commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.db import orm, repository


def get(session: Session, cohort_id: str, *, lab_id: str) -> orm.Cohort:
    return repository.get_or_404(session, orm.Cohort, cohort_id, lab_id=lab_id)


def list_all(
    session: Session, *, lab_id: str, limit: int, offset: int, after: str | None = None
) -> list[orm.Cohort]:
    """A page of the lab's cohorts, newest first, without their ingest reports (never loaded)."""
    return repository.newest(session, orm.Cohort, lab_id=lab_id, limit=limit, offset=offset,
                             unloaded=[orm.Cohort.ingest], after=after)


def find_by_checksum(session: Session, checksum: str, *, lab_id: str, lock: bool = False) -> orm.Cohort | None:
    """The lab's first cohort registered with this matrix checksum, if any (other labs' are never seen);
    ``lock``: its row is locked until the transaction ends (PostgreSQL ``FOR KEY SHARE``), so it cannot be
    deleted meanwhile; rows referring to it and other such locks are not held up."""
    query = select(orm.Cohort).where(orm.Cohort.checksum == checksum, orm.Cohort.lab_id == lab_id)
    query = query.order_by(orm.Cohort.created_at, orm.Cohort.id).limit(1)
    return session.scalars(query.with_for_update(read=True, key_share=True) if lock else query).first()


def repoint_duplicates(session: Session, cohort: orm.Cohort) -> None:
    """Make the oldest cohort deduplicated against ``cohort`` the original of the others (its own
    ``duplicate_of`` cleared), as before deleting ``cohort``."""
    query = select(orm.Cohort).where(orm.Cohort.lab_id == cohort.lab_id, orm.Cohort.duplicate_of == cohort.id)
    duplicates = list(session.scalars(query.order_by(orm.Cohort.created_at, orm.Cohort.id)))
    for duplicate in duplicates:
        duplicate.duplicate_of = duplicates[0].id if duplicate is not duplicates[0] else None
    session.flush()


def add_samples(session: Session, cohort_id: str, rows: Sequence[dict[str, object]]) -> None:
    if rows:
        session.execute(insert(orm.CohortSample), [{"cohort_id": cohort_id, **row} for row in rows])


def samples(session: Session, cohort_id: str) -> list[orm.CohortSample]:
    query = select(orm.CohortSample).where(orm.CohortSample.cohort_id == cohort_id)
    return list(session.scalars(query.order_by(orm.CohortSample.position)))


def sample_page(session: Session, cohort_id: str, *, limit: int, offset: int) -> list[orm.CohortSample]:
    """Samples at positions ``offset`` to ``offset + limit - 1`` in stored order (positions run 0..n-1, so a
    range on the (cohort_id, position) index reads only the page, however deep)."""
    query = select(orm.CohortSample).where(
        orm.CohortSample.cohort_id == cohort_id,
        orm.CohortSample.position >= offset,
        orm.CohortSample.position < offset + limit,
    )
    return list(session.scalars(query.order_by(orm.CohortSample.position)))


def storage_shared(session: Session, cohort: orm.Cohort) -> bool:
    """Whether another cohort (an identical upload) reads the same stored matrix."""
    query = select(orm.Cohort.id).where(orm.Cohort.storage_key == cohort.storage_key, orm.Cohort.id != cohort.id)
    return session.scalar(query.limit(1)) is not None
