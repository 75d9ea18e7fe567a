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


# Text cells a spreadsheet would run as a formula (OWASP "CSV injection"): written with a leading quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def table_response(table: pd.DataFrame, table_format: TableFormat, headers: dict[str, str] | None = None) -> Response:
    """Return ``table`` (no index) as CSV (text cells that would start a formula quoted) or Parquet (as is)."""
    if table_format == "csv":
        types = pd.api.types
        texts = [c for c in table.columns if types.is_object_dtype(table[c]) or types.is_string_dtype(table[c])]
        text = table.assign(**{str(c): table[c].map(_inert) for c in texts})
        return Response(text.to_csv(index=False), media_type="text/csv", headers=headers)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return Response(buffer.getvalue(), media_type=PARQUET, headers=headers)


def coverage_headers(coverage: dict[str, Any]) -> dict[str, str]:
    """Return a coverage report's figures, warning and gene-table note as (ASCII) response headers."""
    headers = {"X-Gene-Coverage": f"{coverage['coverage']:.6f}", "X-Genes-Imputed": str(coverage.get("imputed") or 0)}
    for header, field in (("X-Gene-Coverage-Warning", "warning"), ("X-Gene-Table-Note", "gene_table_note")):
        if coverage.get(field):
            headers[header] = str(coverage[field]).encode("ascii", "replace").decode()
    return headers
