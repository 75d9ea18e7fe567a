"""How the registry's lists and deletes query SQLite: an index gives each page in order (no sort over all of
a lab's rows, whatever its size), the audit filter's actions come from an index, and a cohort's samples
and a job's events are deleted by the database, not loaded and deleted one by one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select

from app.admin import service as admin
from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import upload
from tests.app.test_listing import made
from tests.conftest import LabKey

Statement = tuple[str, Any]


def engine() -> Engine:
    bound = session_factory().kw["bind"]
    assert isinstance(bound, Engine)
    return bound


@contextmanager
def statements() -> Iterator[list[Statement]]:
    """The SQL statements run meanwhile, with their parameters."""
    seen: list[Statement] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine(), "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine(), "before_cursor_execute", keep)


def plan(statement: Statement) -> str:
    with engine().connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement[0]}", statement[1]).all()
    return " | ".join(str(row[-1]) for row in rows)


def page_plan(client: TestClient, path: str, table: str) -> str:
    """The query plan of the statement that reads the page of ``table`` for ``GET path``."""
    with statements() as seen:
        response = client.get(path)
    assert response.status_code == 200, response.text
    [page] = [s for s in seen if f"FROM {table} " in s[0] and "ORDER BY" in s[0]]
    return plan(page)


def test_every_list_reads_its_page_from_an_index_in_order(client: TestClient, lab_a: LabKey) -> None:
    cohort = str(upload(client)["id"])
    predictor = made(client, "/predictors", {"cohort_id": cohort, "label_column": "tissue",
                                             "head": "logistic_regression"}, "predictor")
    client.post(f"/predictors/{predictor}/predictions", json={"cohort_id": cohort})
    expected = {
        "/cohorts": ("cohort", "ix_cohort_lab_id_created_at"),
        "/jobs": ("job", "ix_job_lab_id_created_at"),
        "/encoders": ("encoder", "ix_encoder_lab_id_created_at"),
        "/predictors": ("predictor", "ix_predictor_lab_id_created_at"),
        "/evaluations": ("evaluation", "ix_evaluation_lab_id_created_at"),
        f"/predictors/{predictor}/predictions": ("prediction", "ix_prediction_predictor_id_created_at"),
        f"/cohorts/{cohort}/samples?offset=100&limit=20": ("cohort_sample", "ix_cohort_sample_cohort_id_position"),
        "/audit?action=cohort.upload": ("audit_event", "ix_audit_event_lab_id_action_at"),
        f"/audit?user_id={lab_a.admin_id}": ("audit_event", "ix_audit_event_lab_id_user_id_at"),
    }

    newest = client.get("/cohorts", params={"limit": 1}).json()[0]["id"]
    expected[f"/cohorts?after={newest}"] = ("cohort", "ix_cohort_lab_id_created_at")  # a walk's next page too

    for path, (table, index) in expected.items():
        found = page_plan(client, path, table)
        assert f"USING INDEX {index}" in found and "TEMP B-TREE" not in found, (path, found)


def test_the_audit_filters_actions_are_the_logs_distinct_actions(client: TestClient, lab_a: LabKey) -> None:
    upload(client)
    assert client.delete(f"/cohorts/{upload(client)['id']}").status_code == 204
    with session_factory()() as session:
        everything = select(orm.AuditEvent.action).where(orm.AuditEvent.lab_id == lab_a.lab_id).distinct()
        logged = sorted(session.scalars(everything))

        actions = admin.audit_actions(session, lab_id=lab_a.lab_id)

        assert actions == logged and {"cohort.upload", "cohort.delete"} <= set(actions)
        assert admin.audit_actions(session, lab_id="no such lab") == []


def test_deleting_a_cohort_leaves_its_samples_to_the_database(client: TestClient) -> None:
    cohort = str(upload(client)["id"])

    with statements() as seen:
        assert client.delete(f"/cohorts/{cohort}").status_code == 204

    sample_statements = [s for s, _ in seen if "cohort_sample" in s]
    assert sample_statements == []  # neither loaded nor deleted row by row: ON DELETE CASCADE does it
    with session_factory()() as session:
        left = select(func.count()).select_from(orm.CohortSample).where(orm.CohortSample.cohort_id == cohort)
        assert session.scalar(left) == 0
