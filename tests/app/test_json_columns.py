"""JSON columns of the registry: what is stored reads back equal, NaN and infinities included (SQLite), and a
numpy scalar is refused rather than converted (pydantic-core writes what it knows: a datetime as ISO text, a
set or tuple as a list, an Enum as its value; the services store plain JSON types only)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from app.db.session import make_engine

VALUE = {
    "sample": "é 😀 \u2028 \"quoted\" \\ tab\t",
    "probabilities": {"ALL": 0.30000000000000004, "AML": 1e-05, "tiny": 5e-324, "big": 1.7976931348623157e308},
    "counts": [0, -1, 2**53 + 1, 10**30],
    "flags": [True, False, None],
    "nested": [{"a": []}, {}],
}


def round_trip(url: str, value: Any) -> Any:
    """``value`` written to a JSON column through :func:`make_engine` and read back."""
    engine = make_engine(url)
    table = Table("json_round_trip", MetaData(), Column("id", Integer, primary_key=True), Column("value", JSON))
    try:
        table.create(engine)
        with engine.begin() as connection:
            connection.execute(insert(table).values(id=1, value=value))
            return connection.execute(select(table.c.value)).scalar_one()
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()


def test_json_columns_read_back_what_was_stored(tmp_path: Path) -> None:
    assert round_trip(f"sqlite:///{tmp_path / 'r.db'}", VALUE) == VALUE


def test_nan_and_infinities_read_back_on_sqlite(tmp_path: Path) -> None:
    stored = round_trip(f"sqlite:///{tmp_path / 'r.db'}", {"auc": math.nan, "bounds": [-math.inf, math.inf]})
    assert math.isnan(stored["auc"]) and stored["bounds"] == [-math.inf, math.inf]


@pytest.mark.parametrize("value", [np.float32(0.5), np.int64(3)])
def test_a_numpy_scalar_is_refused_not_converted(tmp_path: Path, value: Any) -> None:
    with pytest.raises(StatementError, match="float32|int64"):
        round_trip(f"sqlite:///{tmp_path / 'r.db'}", {"score": value})
