"""Encoder endpoints: start pretraining, list, describe, delete, embed samples."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Depends, Query, Response, status

from app import caches
from app.auth.deps import CallerDep
from app.db import orm, repository
from app.deps import AfterQuery, DispatcherDep, SessionDep, SettingsDep, StatusQuery, StoreDep
from app.encoders import embeddings, service
from app.encoders.schemas import (
    EmbeddingRead,
    EncoderAccepted,
    EncoderCreate,
    EncoderRead,
    EncoderSummary,
    MethodRead,
)
from app.inputs import SamplesInput, json_body, openapi_json_body
from app.jobs import service as jobs
from app.jobs.schemas import JobRead
from app.predictions.schemas import CoverageReport
from app.ratelimit import RATE_LIMITED, job_start_route, rate_limited
from app.tables import TABLE_CONTENT, TableFormat, coverage_headers, format_query, table_response
from models.methods import METHODS

router = APIRouter(prefix="/encoders", tags=["encoders"])
methods_router = APIRouter(prefix="/methods", tags=["encoders"])


@methods_router.get("", response_model=list[MethodRead])
def list_methods() -> list[MethodRead]:
    """List the SSL methods with every hyper-parameter and its default."""
    return [MethodRead(name=name, defaults=cls.params_class().to_dict()) for name, cls in sorted(METHODS.items())]


@router.post("", response_model=EncoderAccepted, **job_start_route())
def create_encoder(
    request: EncoderCreate, session: SessionDep, caller: CallerDep, dispatcher: DispatcherDep
) -> EncoderAccepted:
    """Start pretraining an encoder on a cohort; answers at once with the queued job."""
    encoder = service.start_pretraining(session=session, caller=caller, dispatcher=dispatcher, request=request)
    job = jobs.get_job(session, encoder.job_id, lab_id=caller.lab_id)
    return EncoderAccepted(encoder=EncoderRead.model_validate(encoder), job=JobRead.model_validate(job))


@router.get("", response_model=list[EncoderSummary])
def list_encoders(
    session: SessionDep,
    caller: CallerDep,
    cohort_id: Annotated[
        str | None, Query(description="Only encoders whose (last) pretraining was on this cohort.")
    ] = None,
    method: Annotated[str | None, Query(description="Only this SSL method.")] = None,
    state: StatusQuery = None,
    parent_encoder_id: Annotated[str | None, Query(description="Only encoders continued from this one.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[EncoderSummary]:
    """List encoders, newest first, optionally filtered by cohort, method, status and parent, with the epochs
    trained and the last loss instead of the loss curve (``GET /encoders/{id}`` has it)."""
    filters = {"cohort_id": cohort_id, "method": method, "status": state, "parent_encoder_id": parent_encoder_id}
    rows = repository.listing(session, orm.Encoder, lab_id=caller.lab_id, limit=limit, offset=offset,
                              filters=filters, after=after)
    return [EncoderSummary.model_validate(row) for row in rows]


@router.get("/{encoder_id}", response_model=EncoderRead)
def get_encoder(encoder_id: str, session: SessionDep, caller: CallerDep) -> EncoderRead:
    """Describe an encoder: method, parameters, gene panel size, preprocessing and loss curve."""
    return EncoderRead.model_validate(service.get(session, encoder_id, lab_id=caller.lab_id))


@router.delete("/{encoder_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_encoder(
    encoder_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    force: Annotated[bool, Query(description="Admins: also delete the encoders continued from it and the "
                                             "predictors, evaluations and predictions made with them.")] = False,
) -> None:
    """Delete an encoder and its weights. Refused (409, naming them) while anything was made with it, unless
    forced; refused while a job pretrains it or uses it."""
    keys = service.delete_encoder(session=session, store=store, caller=caller, encoder_id=encoder_id, force=force)
    caches.forget(settings, keys)


@router.post(
    "/{encoder_id}/embeddings",
    response_model=EmbeddingRead,
    dependencies=[Depends(rate_limited("predict"))],
    openapi_extra={"requestBody": openapi_json_body(SamplesInput)},
    responses={
        **RATE_LIMITED,
        200: {"content": TABLE_CONTENT,
              "description": "JSON; or, with format=csv|parquet, a table of sample_id and z0 ... z<dim-1>, the "
                             "coverage report's figures, warning and note in X-Gene-* headers"},
    },
)
def create_embeddings(
    encoder_id: str,
    request: Annotated[SamplesInput, Depends(json_body(SamplesInput))],
    session: SessionDep,
    caller: CallerDep,
    store: StoreDep,
    settings: SettingsDep,
    table_format: Annotated[TableFormat, format_query(" (at most EXPRSSL_MAX_INLINE_SAMPLES samples)")] = "json",
) -> Response | EmbeddingRead:
    """Encode inline samples or a stored cohort's samples with the encoder (matched to its gene panel by gene
    key, missing genes filled with the pretraining mean, refused below the coverage gate)."""
    out = embeddings.embed(
        session=session, caller=caller, store=store, settings=settings, encoder_id=encoder_id, request=request,
        max_samples=settings.max_inline_samples if table_format == "json" else None,
    )
    if table_format == "json":
        return EmbeddingRead(
            encoder_id=encoder_id, n_samples=len(out.sample_ids), dim=out.vectors.shape[1],
            coverage=CoverageReport.model_validate(out.coverage),
            sample_ids=out.sample_ids, embeddings=out.vectors.tolist(),
        )
    table = pd.DataFrame(out.vectors, columns=[f"z{i}" for i in range(out.vectors.shape[1])])
    table.insert(0, "sample_id", out.sample_ids)
    return table_response(table, table_format, coverage_headers(out.coverage))
