"""The schema comes only from Alembic, round-trips, and matches the ORM."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from app.cli import alembic_config
from app.db import orm

TABLES = {
    "cohort", "cohort_sample", "job", "job_event", "encoder", "predictor", "prediction", "evaluation",
    "lab", "app_user", "api_key", "audit_event", "admin_session",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert _tables(url) == TABLES
    command.downgrade(config, "base")
    assert _tables(url) == set()
    command.upgrade(config, "head")
    assert _tables(url) == TABLES


def test_orm_matches_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, orm.Base.metadata)
    engine.dispose()
    assert diff == []


def test_rows_made_before_labs_go_to_a_default_lab(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    config = alembic_config(url)
    command.upgrade(config, "9b4e2f6a1c37")  # the last revision without labs
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO job (id, kind, state, params, progress, attempts, cancel_requested, created_at) "
            "VALUES ('j1', 'evaluate', 'succeeded', '{}', '{}', 1, 0, '2026-01-01 00:00:00')"
        ))
    command.upgrade(config, "head")
    with engine.connect() as connection:
        labs = connection.execute(text("SELECT id, name FROM lab")).all()
        owner = connection.execute(text("SELECT lab_id FROM job WHERE id = 'j1'")).scalar_one()
    engine.dispose()
    assert [name for _, name in labs] == ["default"] and owner == labs[0][0]


def test_an_empty_registry_gets_no_default_lab(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM lab")).scalar_one() == 0
    engine.dispose()
