"""Job endpoints: list, inspect, cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth.deps import CallerDep
from app.db.orm import JobKind, JobState
from app.deps import AfterQuery, DispatcherDep, SessionDep, UtcDateTime
from app.jobs import service
from app.jobs.schemas import JobDetail, JobRead
from app.ratelimit import RATE_LIMITED, rate_limited

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=list[JobRead])
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    state: JobState | None = None,
    kind: JobKind | None = None,
    user_id: Annotated[str | None, Query(description="Only jobs this user started.")] = None,
    since: Annotated[UtcDateTime | None, Query(description="Created at or after (ISO 8601; UTC if no zone).")] = None,
    until: Annotated[UtcDateTime | None, Query(description="Created before (ISO 8601; UTC if no zone).")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[JobRead]:
    """List the lab's jobs, newest first, optionally filtered by state, kind, user and creation time."""
    where = service.JobFilter(state, kind, user_id, since, until)
    jobs = service.list_jobs(session, lab_id=caller.lab_id, where=where, limit=limit, offset=offset, after=after)
    return [JobRead.model_validate(j) for j in jobs]


@router.get("/{job_id}", response_model=JobDetail)
def get_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobDetail:
    """Show a job: state, progress, error and its event history."""
    return JobDetail.model_validate(service.get_job(session, job_id, lab_id=caller.lab_id))


@router.post("/{job_id}/cancel", response_model=JobDetail)
def cancel_job(job_id: str, session: SessionDep, caller: CallerDep, dispatcher: DispatcherDep) -> JobDetail:
    """Cancel a job (your own; admins any of the lab's): a queued one at once, a running one at its next epoch."""
    job = service.request_cancel(session, caller, job_id)
    dispatcher.cancel(job_id)
    return JobDetail.model_validate(job)


@router.post(
    "/{job_id}/retry", response_model=JobDetail, dependencies=[Depends(rate_limited("train"))], responses=RATE_LIMITED
)
def retry_job(job_id: str, session: SessionDep, caller: CallerDep, dispatcher: DispatcherDep) -> JobDetail:
    """Queue a failed or cancelled job again (your own; admins any of the lab's); it resumes from its checkpoint."""
    job = service.retry(session, caller, job_id)
    dispatcher.submit(job.id)
    return JobDetail.model_validate(job)
