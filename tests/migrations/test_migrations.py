"""The schema comes only from Alembic, round-trips, and matches the ORM."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from app.cli import alembic_config
from app.db import orm
from app.db.session import make_engine

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


def test_table_rebuilds_keep_a_registry_whose_rows_reference_each_other(tmp_path: Path) -> None:
    """SQLite batch migrations rebuild a table (copy, drop, rename); the drop must not trip over the rows that
    reference it (a predictor on an encoder, an encoder continued from another)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = make_engine(url)  # foreign keys enforced, as the app runs
    with Session(engine) as session:
        lab = orm.Lab(name="lab")
        user = orm.User(lab=lab, name="ann", role=orm.Role.ADMIN)
        session.add_all([lab, user])
        session.flush()
        jobs = [orm.Job(lab_id=lab.id, kind=orm.JobKind.PRETRAIN, state=orm.JobState.SUCCEEDED) for _ in range(3)]
        cohort = orm.Cohort(lab_id=lab.id, name="c", source_filename="c.csv", n_samples=2, n_genes=2,
                            gene_id_type="symbol", value_kind="log", checksum="0" * 64, storage_key="k")
        session.add_all([*jobs, cohort])
        session.flush()
        parent = orm.Encoder(lab_id=lab.id, name="p", method="scarf", cohort_id=cohort.id, job_id=jobs[0].id, n_genes=2)
        session.add(parent)
        session.flush()
        child = orm.Encoder(lab_id=lab.id, name="c", method="scarf", cohort_id=cohort.id, job_id=jobs[1].id,
                            n_genes=2, parent_encoder_id=parent.id)
        session.add(child)
        session.flush()
        session.add(orm.Predictor(lab_id=lab.id, name="p", head="linear_probe", encoder_id=child.id,
                                  cohort_id=cohort.id, job_id=jobs[2].id, label_column="t", label_fraction=1.0))
        session.commit()
    engine.dispose()

    command.downgrade(config, "d5a8e3f1b7c2")  # drops encoder.parent_encoder_id: rebuilds the encoder table
    command.upgrade(config, "head")  # adds it back: rebuilds it again

    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM encoder")).scalar_one() == 2
        assert connection.execute(text("SELECT count(*) FROM predictor")).scalar_one() == 1
        assert connection.execute(text("PRAGMA foreign_key_check")).all() == []
        assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    engine.dispose()
    assert "_alembic_tmp_encoder" not in _tables(url)
