"""The same Alembic migrations on PostgreSQL: upgrade, downgrade to nothing, upgrade again; ORM in step."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.cli import alembic_config, migrate
from app.db import orm
from tests.migrations.test_migrations import TABLES


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_round_trip_on_postgres(postgres_url: str) -> None:
    # The session database is already at head (`exprssl migrate`); take it down and up again.
    assert tables(postgres_url) == TABLES
    command.downgrade(alembic_config(postgres_url), "base")
    assert tables(postgres_url) == set()
    migrate(postgres_url)
    assert tables(postgres_url) == TABLES
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, orm.Base.metadata) == []
    engine.dispose()
