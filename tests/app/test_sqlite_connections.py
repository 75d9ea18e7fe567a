"""What every SQLite connection of the embedded default is set to: readers beside one writer (WAL), a wait
instead of "database is locked", enforced foreign keys, and commits synced at checkpoints (NORMAL)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.db.session import make_engine


def pragmas(url: str, *, foreign_keys: bool = True) -> dict[str, object]:
    engine = make_engine(url, foreign_keys=foreign_keys)
    try:
        with engine.connect() as connection:
            return {name: connection.execute(text(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    finally:
        engine.dispose()


def test_registry_connections_are_wal_normal_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    # synchronous: 1 is NORMAL (2 FULL, the default); busy_timeout in ms.
    assert pragmas(url) == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 30000, "foreign_keys": 1}
    assert pragmas(url, foreign_keys=False)["foreign_keys"] == 0  # migrations check the keys themselves


def test_without_wal_commits_stay_fully_synced() -> None:
    # An in-memory database has no WAL (as a file system that refuses it): NORMAL would not be safe there.
    assert pragmas("sqlite://")["journal_mode"] == "memory"
    assert pragmas("sqlite://")["synchronous"] == 2
