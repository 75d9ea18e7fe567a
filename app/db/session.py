"""Engines and sessions. SQLite gets WAL and a busy timeout so the API and in-process workers share it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import anyio
import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings


def _sqlite_pragmas(foreign_keys: bool) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at each commit: a crash of the process loses nothing and
        # the file cannot be corrupted; a power cut may undo the last commits (SQLite's "WAL mode" notes).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    return on_connect


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """Create an engine for ``url``; SQLite files are shared between threads and enforce foreign keys unless
    ``foreign_keys`` is False (migrations: batch mode rebuilds a table by copy, drop and rename, and the drop
    of a referenced table would fail; they check the keys once done)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas(foreign_keys))
        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=make_engine(url), expire_on_commit=False)


def session_factory() -> sessionmaker[Session]:
    """Return the session factory for the configured database (one engine per URL)."""
    return _factory(get_settings().resolved_database_url)


async def get_session() -> AsyncIterator[Session]:
    """FastAPI dependency: a session per request. Services commit; nothing commits here.

    Async so that opening it costs no thread hop: a Session connects on first use, inside the sync code that
    uses it. Closing runs on the thread pool only when a transaction is still open (its rollback is I/O), and
    is shielded so that a request cancelled by a disconnecting client still returns its connection.
    """
    session = session_factory()()
    try:
        yield session
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)
        else:
            session.close()
