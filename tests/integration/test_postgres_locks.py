"""Row locks that only PostgreSQL takes: an upload sharing a stored matrix holds off the deletion of its original."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.cohorts import repository as cohort_repository
from app.config import Settings
from app.db import orm
from app.db.session import session_factory
from app.storage import get_store

MATRIX = b"sample_id,TP53,MYC\ns1,1,2\ns2,3,4\n"


def upload(api: TestClient) -> Any:
    response = api.post("/cohorts", files={"expression": ("m.csv", MATRIX)})
    assert response.status_code == 201, response.text
    return response.json()


def test_deleting_the_original_waits_for_an_identical_upload_to_commit(
    api: TestClient, distributed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = upload(api)
    locked, finished = threading.Event(), {}
    find = cohort_repository.find_by_checksum

    def find_then_linger(session: Session, checksum: str, **kwargs: Any) -> orm.Cohort | None:
        row = find(session, checksum, **kwargs)
        locked.set()
        time.sleep(1.5)  # the deletion below starts meanwhile and must wait for this upload's commit
        return row

    def delete() -> None:
        locked.wait(30)
        response = api.delete(f"/cohorts/{original['id']}")
        finished["delete"] = (time.monotonic(), response.status_code)

    monkeypatch.setattr(cohort_repository, "find_by_checksum", find_then_linger)
    deleter = threading.Thread(target=delete)
    deleter.start()
    copy = upload(api)
    uploaded = time.monotonic()
    deleter.join(30)

    deleted_at, status = finished["delete"]
    assert status == 204 and deleted_at >= uploaded - 0.2  # held off by the lock, not done during the pause
    assert copy["duplicate_of"] == original["id"]
    with session_factory()() as session:
        key = session.get_one(orm.Cohort, copy["id"]).storage_key
    assert get_store().exists(key)  # the deletion saw the copy share it and kept the file
