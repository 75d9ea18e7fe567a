"""Liveness, readiness, and a 503 with a clear body when the registry database cannot be reached."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from app.db.session import get_session, make_engine


def test_database_outage_is_a_503_with_a_clear_body(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: every connection attempt is refused, as when PostgreSQL is down.
    down = sessionmaker(bind=make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))

    def broken_session():  # type: ignore[no-untyped-def]
        with down() as session:
            yield session

    client.app.dependency_overrides[get_session] = broken_session  # type: ignore[attr-defined]
    monkeypatch.setattr("app.health.session_factory", lambda: down)
    for path in ("/jobs", "/cohorts", "/encoders", "/health"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"] == {
            "code": "database_unavailable",
            "message": "the registry database is unreachable; try again shortly",
            "details": {"cause": "OperationalError"},
        }
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == {"ok": False, "detail": "unreachable (OperationalError)"}

    client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert client.get("/jobs").status_code == 200


def test_ready_reports_the_embedded_default(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True, "detail": "reachable"},
            "broker": {"ok": True, "detail": "none configured: jobs run in the API process"},
            "workers": {"ok": True, "detail": "in-process worker, 1 thread"},
        },
    }
