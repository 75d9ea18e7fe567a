"""Shared fixtures: a migrated SQLite registry per test, a TestClient with its in-process worker."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth.service import Caller
from app.cli import migrate
from app.config import Settings, get_settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TERMINAL = {"succeeded", "failed", "cancelled"}


SHARED_FOLDERS = ("all_leukemia", "nci60", "tissue_symbols", "airway", "genes")  # what the tests read of it


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without the real data the tests read: one clear message naming what is missing, not a
    skip here and a missing-file error there."""
    missing = [name for name in SHARED_FOLDERS if not (SHARED_DATA / name).is_dir()]
    if missing:
        raise pytest.UsageError(
            f"the tests read real expression data from {SHARED_DATA} (the folder shared/data beside this "
            f"checkout, described by its README.md); not found there: {', '.join(missing)}"
        )


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry migrated once per test session by Alembic; each test copies it."""
    path = tmp_path_factory.mktemp("template") / "exprssl.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a fresh data directory holding a copy of the migrated registry."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(migrated_template, data_dir / "exprssl.db")
    monkeypatch.setenv("EXPRSSL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("EXPRSSL_PROGRESS_INTERVAL_S", "0")
    # Test matrices are tiny: one torch thread is faster, and far faster when the 2 cores are shared.
    monkeypatch.setenv("EXPRSSL_TORCH_THREADS", "1")
    monkeypatch.delenv("EXPRSSL_DATABASE_URL", raising=False)
    monkeypatch.delenv("EXPRSSL_ARTIFACT_DIR", raising=False)
    monkeypatch.delenv("EXPRSSL_BROKER_URL", raising=False)  # the embedded default, whatever the shell says
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@dataclass(frozen=True)
class LabKey:
    """A lab made for a test, with its first admin's id and API key."""

    lab_id: str
    admin_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class UserKey:
    """A member made for a test, with their API key."""

    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_member(lab: LabKey, name: str = "member") -> UserKey:
    """Add a member to ``lab`` (by its admin) with one API key."""
    from app.auth import service
    from app.db import orm
    from app.db.session import session_factory

    with session_factory()() as session:
        admin = service.Caller.of(session.get_one(orm.User, lab.admin_id), "test")
        user = service.create_user(session, admin, name=name, role=orm.Role.MEMBER)
        _, token = service.create_key(session, admin, user_id=user.id, name="test")
    return UserKey(user.id, token)


def make_lab(name: str, admin: str = "admin") -> LabKey:
    """Create a lab and its admin in the configured registry (as ``exprssl admin create-lab`` does)."""
    from app.auth import service
    from app.db.session import session_factory

    with session_factory()() as session:
        lab, user, token = service.create_lab(session, name=name, admin_name=admin)
    return LabKey(lab.id, user.id, token)


def lab_caller(name: str = "lab-a") -> Caller:
    """A caller acting as the first admin of lab ``name`` (for tests that call services directly)."""
    from sqlalchemy import select

    from app.auth.service import Caller
    from app.db import orm
    from app.db.session import session_factory

    with session_factory()() as session:
        lab = session.scalars(select(orm.Lab).where(orm.Lab.name == name)).one()
        user = session.scalars(select(orm.User).where(orm.User.lab_id == lab.id).order_by(orm.User.created_at)).first()
        assert user is not None
        return Caller.of(user, "test")


@pytest.fixture
def lab_a(settings: Settings) -> LabKey:
    return make_lab("lab-a", "alice")


@pytest.fixture
def client(settings: Settings, lab_a: LabKey) -> Iterator[TestClient]:
    """The API with its in-process worker; requests carry lab A's admin key unless they say otherwise."""
    from app.main import create_app

    with TestClient(create_app(), headers=lab_a.headers) as test_client:
        yield test_client


def wait_for_job(client: TestClient, job_id: str, *, timeout: float = 300.0) -> dict[str, object]:
    """Poll a job until it ends; fail the test if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in TERMINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s: {job}")
