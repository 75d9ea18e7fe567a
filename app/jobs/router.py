"""Job endpoints: list, inspect, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.db.orm import JobKind, JobState
from app.deps import DispatcherDep, SessionDep
from app.jobs import service
from app.jobs.schemas import JobDetail, JobRead

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=list[JobRead])
def list_jobs(
    session: SessionDep,
    state: JobState | None = None,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[JobRead]:
    """List jobs, newest first, optionally filtered by state and kind."""
    jobs = service.list_jobs(session, state=state, kind=kind, limit=limit, offset=offset)
    return [JobRead.model_validate(j) for j in jobs]


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: str, session: SessionDep) -> JobDetail:
    """Show a job: state, progress, error and its event history."""
    return JobDetail.model_validate(service.get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobDetail)
def cancel_job(job_id: str, session: SessionDep, dispatcher: DispatcherDep) -> JobDetail:
    """Cancel a job: a queued one at once, a running one at its next epoch."""
    job = service.request_cancel(session, job_id)
    dispatcher.cancel(job_id)
    return JobDetail.model_validate(job)
