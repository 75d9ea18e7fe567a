"""Evaluation endpoints: start a label-efficiency study, read it, draw it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.auth.deps import CallerDep
from app.db import orm, repository
from app.deps import AfterQuery, DispatcherDep, SessionDep, StatusQuery, StoreDep
from app.evaluations import service
from app.evaluations.schemas import EvaluationAccepted, EvaluationCreate, EvaluationRead, EvaluationSummary
from app.jobs import service as jobs
from app.jobs.schemas import JobRead
from app.ratelimit import job_start_route

router = APIRouter(prefix="/evaluations", tags=["evaluations"])


@router.post("", response_model=EvaluationAccepted, **job_start_route())
def create_evaluation(
    request: EvaluationCreate, session: SessionDep, caller: CallerDep, dispatcher: DispatcherDep
) -> EvaluationAccepted:
    """Start the label-efficiency protocol on a cohort; answers at once with the queued job."""
    evaluation = service.start_evaluation(session=session, caller=caller, dispatcher=dispatcher, request=request)
    job = jobs.get_job(session, evaluation.job_id, lab_id=caller.lab_id)
    return EvaluationAccepted(evaluation=EvaluationRead.model_validate(evaluation), job=JobRead.model_validate(job))


@router.get("", response_model=list[EvaluationSummary])
def list_evaluations(
    session: SessionDep,
    caller: CallerDep,
    cohort_id: Annotated[str | None, Query(description="Only evaluations on this cohort.")] = None,
    label_column: Annotated[str | None, Query(description="Only evaluations of this label column.")] = None,
    state: StatusQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[EvaluationSummary]:
    """List evaluations, newest first, optionally filtered by cohort, label column and status, with their
    summaries and label savings but without per-run metrics and splits (``GET /evaluations/{id}`` has them)."""
    filters = {"cohort_id": cohort_id, "label_column": label_column, "status": state}
    rows = repository.listing(session, orm.Evaluation, lab_id=caller.lab_id, limit=limit, offset=offset,
                              filters=filters, after=after)
    return [EvaluationSummary.model_validate(row) for row in rows]


@router.get("/{evaluation_id}", response_model=EvaluationRead)
def get_evaluation(evaluation_id: str, session: SessionDep, caller: CallerDep) -> EvaluationRead:
    """Show an evaluation: per-run metrics, mean and std over seeds, label savings, splits."""
    return EvaluationRead.model_validate(service.get(session, evaluation_id, lab_id=caller.lab_id))


@router.get(
    "/{evaluation_id}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "Label-efficiency curves."}},
)
def get_plot(evaluation_id: str, session: SessionDep, caller: CallerDep) -> Response:
    """Draw the label-efficiency curves of a finished evaluation as a PNG."""
    evaluation = service.get(session, evaluation_id, lab_id=caller.lab_id)
    return Response(service.plot_png(evaluation), media_type="image/png")


@router.delete("/{evaluation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_evaluation(evaluation_id: str, session: SessionDep, store: StoreDep, caller: CallerDep) -> None:
    """Delete an evaluation and its results; refused while its job runs."""
    service.delete_evaluation(session=session, store=store, caller=caller, evaluation_id=evaluation_id)
