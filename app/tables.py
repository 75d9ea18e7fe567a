"""Per-sample results as downloadable tables (CSV or Parquet) beside their JSON form."""

from __future__ import annotations

import io
from typing import Any, Literal

import pandas as pd
from fastapi import Query, Response

PARQUET = "application/vnd.apache.parquet"
TableFormat = Literal["json", "csv", "parquet"]
TABLE_CONTENT: dict[str, Any] = {"text/csv": {}, PARQUET: {}}


def format_query(json_note: str = "") -> Any:
    """The ``format`` query parameter of endpoints that answer JSON or a table."""
    return Query(alias="format", description=f"json{json_note}, csv or parquet (one row per sample).")


def table_response(table: pd.DataFrame, table_format: TableFormat, headers: dict[str, str] | None = None) -> Response:
    """``table`` (no index) as CSV or Parquet."""
    if table_format == "csv":
        return Response(table.to_csv(index=False), media_type="text/csv", headers=headers)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return Response(buffer.getvalue(), media_type=PARQUET, headers=headers)
