"""Declarative base, naming convention and column types shared by every table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class UTCDateTime(TypeDecorator[datetime]):
    """Store naive UTC (SQLite has no time zones), hand back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_utcnow(session: Session) -> datetime:
    """The database server's clock, in UTC, on PostgreSQL: times that one host stamps and another compares
    (heartbeats and the reaper's cutoff) then agree whatever the hosts' clocks say. On SQLite one host does
    both, so this process's clock."""
    if session.get_bind().dialect.name == "postgresql":
        # clock_timestamp(), not now(): now() is when the transaction began, which may be long before the
        # stamp (a job sent to a slow broker within its transaction would look sent earlier than it was).
        stamped = session.scalar(select(func.clock_timestamp()))
        if isinstance(stamped, datetime):
            return stamped.astimezone(UTC)
    return utcnow()


def new_id() -> str:
    """Random ids: they do not reveal how many rows another lab has."""
    return uuid.uuid4().hex
