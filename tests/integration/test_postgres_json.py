"""JSON columns on PostgreSQL read back what was stored (PostgreSQL's JSON has no NaN or infinities)."""

from __future__ import annotations

from tests.app.test_json_columns import VALUE, round_trip


def test_json_columns_read_back_what_was_stored_on_postgres(postgres_url: str) -> None:
    assert round_trip(postgres_url, VALUE) == VALUE
