"""Prediction endpoints: read a stored prediction, as JSON or as a table; delete one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from app.auth.deps import CallerDep
from app.deps import SessionDep, StoreDep
from app.predictions import service
from app.predictions.schemas import PredictionRead
from app.tables import TABLE_CONTENT, TableFormat, coverage_headers, format_query, table_response

router = APIRouter(prefix="/predictions", tags=["predictions"])


@router.get(
    "/{prediction_id}",
    response_model=PredictionRead,
    responses={200: {"content": TABLE_CONTENT, "description": "JSON; or, with format=csv|parquet, one row per "
                     "sample: label, top_label, prediction_set, OOD score, percentile and flag, p_<class>"}},
)
def get_prediction(
    prediction_id: str,
    session: SessionDep,
    caller: CallerDep,
    table_format: Annotated[TableFormat, format_query()] = "json",
) -> Response | PredictionRead:
    """Show a stored prediction: per-sample labels, probabilities and the input's gene coverage."""
    prediction = PredictionRead.model_validate(service.get(session, prediction_id, lab_id=caller.lab_id))
    if table_format == "json":
        return prediction
    headers = coverage_headers(prediction.coverage.model_dump())
    return table_response(service.results_table(prediction), table_format, headers)


@router.delete("/{prediction_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_prediction(prediction_id: str, session: SessionDep, store: StoreDep, caller: CallerDep) -> None:
    """Delete a stored prediction: members those they requested, admins any of the lab's."""
    service.delete_prediction(session=session, store=store, caller=caller, prediction_id=prediction_id)
