"""Cohort endpoints: upload, list, describe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app import caches
from app.auth.deps import CallerDep
from app.cohorts import repository, service, upload
from app.cohorts.schemas import CohortRead, CohortSampleRead, CohortSummary, CohortUploadForm, upload_request_body
from app.db import orm
from app.deps import AfterQuery, SessionDep, SettingsDep, StoreDep
from app.errors import ErrorBody
from app.memory import release_freed_memory
from app.ratelimit import rate_limited

router = APIRouter(prefix="/cohorts", tags=["cohorts"])

FILE_FIELDS = ("expression", "labels")


def to_read(cohort: orm.Cohort) -> CohortRead:
    return CohortRead.model_validate(cohort, from_attributes=True)


async def staged_upload(
    request: Request, settings: SettingsDep, store: StoreDep, _caller: CallerDep
) -> AsyncIterator[upload.StagedForm]:
    """Stream the multipart body to staging files (callers with a valid key only); delete them afterwards."""
    form = await upload.receive_form(
        request,
        staging=store.staging_dir(),
        limit=settings.max_upload_bytes,
        file_fields=FILE_FIELDS,
        text_fields=CohortUploadForm.model_fields,
    )
    try:
        yield form
    finally:
        form.discard()


def _options(form: upload.StagedForm) -> CohortUploadForm:
    """Validate the text fields like FastAPI validates a form, with the same 422 body."""
    errors: list[dict[str, object]] = []
    if "expression" not in form.files:
        errors.append({"type": "missing", "loc": ("body", "expression"), "msg": "Field required", "input": None})
    try:
        options = CohortUploadForm.model_validate(form.fields)
    except ValidationError as exc:
        errors.extend({**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False))
    if errors:
        raise RequestValidationError(errors)
    return options


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CohortRead,
    openapi_extra={"requestBody": upload_request_body()},
    responses={
        413: {"model": ErrorBody, "description": "The upload exceeds EXPRSSL_MAX_UPLOAD_BYTES"},
        429: {"model": ErrorBody, "description": "Too many uploads (EXPRSSL_RATE_LIMIT_UPLOAD)"},
    },
    dependencies=[Depends(rate_limited("upload"))],
)
def upload_cohort(
    session: SessionDep,
    caller: CallerDep,
    store: StoreDep,
    settings: SettingsDep,
    form: Annotated[upload.StagedForm, Depends(staged_upload)],
) -> CohortRead:
    """Upload an expression matrix and optional phenotype labels as a new cohort.

    The body is multipart/form-data, streamed to disk as it arrives. A matrix identical to one already
    stored is not stored again: the response names the earlier cohort in ``duplicate_of``.
    """
    options = _options(form)
    labels = form.files.get("labels")
    if labels is not None and labels.size == 0 and not labels.filename:
        labels = None  # a form's empty file input
    expression = form.files["expression"]
    try:
        cohort = service.create_cohort(
            session=session,
            caller=caller,
            store=store,
            settings=settings,
            name=options.name,
            expression=service.StagedUpload(expression.filename, expression.path),
            labels=None if labels is None else service.StagedUpload(labels.filename, labels.path),
            group_column=options.group_column,
            options=service.IngestOptions(options.orientation, options.values, options.duplicate_genes),
        )
    finally:
        release_freed_memory()  # the parsed matrix is gone: give its pages back, refused or stored
    return to_read(cohort)


@router.get("", response_model=list[CohortSummary])
def list_cohorts(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[CohortSummary]:
    """List cohorts, newest first, without their ingest and gene resolution reports (``GET /cohorts/{id}`` has
    them)."""
    rows = repository.list_all(session, lab_id=caller.lab_id, limit=limit, offset=offset, after=after)
    return [CohortSummary.model_validate(row) for row in rows]


@router.get("/{cohort_id}", response_model=CohortRead)
def get_cohort(cohort_id: str, session: SessionDep, caller: CallerDep) -> CohortRead:
    """Describe one cohort: shape, identifiers, label columns with class counts."""
    return to_read(repository.get(session, cohort_id, lab_id=caller.lab_id))


@router.delete("/{cohort_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_cohort(
    cohort_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    force: Annotated[bool, Query(description="Admins: also delete the encoders, predictors, "
                                             "evaluations and predictions made from it.")] = False,
) -> None:
    """Delete a cohort. Refused (409, naming them) while models or predictions were made from it, unless forced."""
    removed = service.delete_cohort(session=session, store=store, caller=caller, cohort_id=cohort_id, force=force)
    caches.forget(settings, removed.artifact_keys, cohort_checksum=removed.checksum)


@router.get("/{cohort_id}/samples", response_model=list[CohortSampleRead])
def list_samples(
    cohort_id: str,
    request: Request,
    response: Response,
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Samples per page; the cohort's n_samples is the "
                                                              "total.")] = 1_000,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Samples to skip, in stored order.")] = 0,
) -> list[CohortSampleRead]:
    """List a page of a cohort's samples with their labels and group ids, in stored order; the headers give
    the total (``X-Total-Count``) and, while more follow, the next page (``Link: <...>; rel="next"``)."""
    cohort = repository.get(session, cohort_id, lab_id=caller.lab_id)
    page = repository.sample_page(session, cohort_id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(cohort.n_samples)
    if offset + limit < cohort.n_samples:
        following = request.url.include_query_params(limit=limit, offset=offset + limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return [CohortSampleRead.model_validate(s, from_attributes=True) for s in page]
