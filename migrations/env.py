"""Alembic environment: the URL comes from the ``sqlalchemy.url`` option if set, else from Settings."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, DateTime

from app.config import get_settings
from app.db import orm
from app.db.base import UTCDateTime
from app.db.session import make_engine

config = context.config
target_metadata = orm.Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def _compare_type(ctx: Any, inspected: Any, metadata: Any, inspected_type: Any, metadata_type: Any) -> bool | None:
    if isinstance(metadata_type, UTCDateTime):
        return not isinstance(inspected_type, DateTime)
    return None


def _check_foreign_keys(connection: Connection) -> None:
    """SQLite migrations run without foreign-key enforcement (see make_engine): check every key afterwards.

    The check comes after the migration's commit (pysqlite runs DDL outside a transaction), so it cannot undo
    a migration that broke a key: it stops here, naming the rows, before the service starts on them.
    """
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        shown = "; ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken[:10])
        raise RuntimeError(f"migration left {len(broken)} broken foreign key(s): {shown}")


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_item=_render_item,
        compare_type=_compare_type,
        render_as_batch=True,
        **kwargs,
    )


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(_url(), foreign_keys=False)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)
    engine.dispose()
