"""Distributed mode for real: a fresh PostgreSQL database per session, a Redis database, Celery worker processes.

The services are found at ``EXPRSSL_TEST_POSTGRES_URL`` (an admin connection; default the local server as
``postgres``) and ``EXPRSSL_TEST_REDIS_URL`` (default database 13 of the local Redis, flushed before and
after each test). Unreachable services skip these tests with the reason, or fail them when
``EXPRSSL_REQUIRE_SERVICES=1`` (as .ci/run sets).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.config import Settings, get_settings
from app.db import orm
from app.db.session import session_factory
from tests.conftest import make_lab

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = os.environ.get("EXPRSSL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("EXPRSSL_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
REQUIRED = os.environ.get("EXPRSSL_REQUIRE_SERVICES") == "1"

# Short clocks so that lost workers are noticed within seconds.
FAST_CLOCKS = {
    "EXPRSSL_PROGRESS_INTERVAL_S": "0.1",
    "EXPRSSL_HEARTBEAT_INTERVAL_S": "0.5",
    "EXPRSSL_HEARTBEAT_TIMEOUT_S": "3",
    "EXPRSSL_REAPER_INTERVAL_S": "0.5",
    "EXPRSSL_RESEND_QUEUED_AFTER_S": "3",
    "EXPRSSL_CHECKPOINT_EVERY_EPOCHS": "10",
    "EXPRSSL_READINESS_TIMEOUT_S": "1",
    "EXPRSSL_TORCH_THREADS": "1",
}


def unavailable(service: str, reason: object) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{service} is unreachable ({reason}) and EXPRSSL_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{service} is unreachable ({reason}); start it, or set EXPRSSL_REQUIRE_SERVICES=1 to fail")


def admin_connection() -> psycopg.Connection:
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database ``exprssl_test_<random>``, migrated by Alembic, dropped at the end of the session."""
    name = f"exprssl_test_{uuid.uuid4().hex[:10]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        # The one-shot migrate step of docker-compose.yml, as a process of its own.
        data_dir = tmp_path_factory.mktemp("migrate")
        env = {**os.environ, "EXPRSSL_DATABASE_URL": rendered, "EXPRSSL_DATA_DIR": str(data_dir)}
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, timeout=120)
        yield rendered
    finally:
        # FORCE ends the connections our pools and workers still hold.
        with admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url}", exc)
    return client


@pytest.fixture
def broker_url() -> Iterator[str]:
    """The test Redis database, empty before and after the test."""
    client = redis_client(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def distributed(
    postgres_url: str, broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings of distributed mode (PostgreSQL, Redis, a shared artifact folder) on empty tables."""
    env = {
        "EXPRSSL_DATABASE_URL": postgres_url,
        "EXPRSSL_BROKER_URL": broker_url,
        "EXPRSSL_DATA_DIR": str(tmp_path / "data"),
        "EXPRSSL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        **FAST_CLOCKS,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    tables = ", ".join(t.name for t in orm.Base.metadata.sorted_tables)
    with session_factory()() as session:
        session.execute(text(f"TRUNCATE {tables} CASCADE"))
        session.commit()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def api(distributed: Settings) -> Iterator[TestClient]:
    """The API in distributed mode: jobs go to Celery; its reaper sweeps every half second."""
    from app.main import create_app

    with TestClient(create_app(), headers=make_lab("lab-a").headers) as client:
        yield client


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acknowledgement, no last words."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"worker {self.name} did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """The test is over: SIGKILL spares the seconds a Python process with torch loaded takes to exit."""
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def start_worker(distributed: Settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start ``celery -A worker.celery_app worker`` processes (solo pool, as on a GPU machine)."""
    workers: list[Worker] = []

    def start(name: str = "w1", queues: str = "gpu,cpu", broker: str | None = None, wait: bool = True) -> Worker:
        env = {**os.environ, "EXPRSSL_BROKER_URL": broker or str(distributed.broker_url)}
        log = tmp_path / f"worker-{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo", "--concurrency=1",
            "-Q", queues, "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--loglevel=INFO",
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        worker = Worker(name, process, log)
        workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server of our own (no persistence, like the CI one), so a test may restart it freely."""

    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--dir", str(self.folder), "--daemonize", "yes", "--logfile", str(self.folder / "redis.log")]
        subprocess.run(command, check=True)
        deadline = time.monotonic() + 10
        while not self.listening():
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"worker {self.name} did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE: every message in it is lost, as when a server without persistence restarts."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"SHUTDOWN NOSAVE\r\n")
            s.recv(1024)  # the server closes the connection as it exits
        deadline = time.monotonic() + 10
        while self.listening():
            assert time.monotonic() < deadline, "private redis-server did not stop"
            time.sleep(0.02)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server (to restart a private instance)", "not installed")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
