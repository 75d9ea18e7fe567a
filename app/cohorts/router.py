"""Cohort endpoints: upload, list, describe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from app.cohorts import repository, service
from app.cohorts.schemas import CohortRead, CohortSampleRead
from app.db import orm
from app.deps import SessionDep, SettingsDep, StoreDep

router = APIRouter(prefix="/cohorts", tags=["cohorts"])


def to_read(cohort: orm.Cohort) -> CohortRead:
    return CohortRead.model_validate(cohort, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CohortRead)
def upload_cohort(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    expression: Annotated[
        UploadFile,
        File(description="Samples as rows, genes as columns, first column the sample id: .csv, .tsv, .txt, "
        ".parquet, optionally .gz."),
    ],
    labels: Annotated[
        UploadFile | None, File(description="Sample id, then one or more phenotype columns (.csv/.tsv).")
    ] = None,
    name: Annotated[str | None, Form(max_length=200)] = None,
    group_column: Annotated[
        str | None, Form(description="Labels column holding a patient/group id for leak-free splits.")
    ] = None,
) -> CohortRead:
    """Upload an expression matrix and optional phenotype labels as a new cohort."""
    cohort = service.create_cohort(
        session=session,
        store=store,
        settings=settings,
        name=name,
        expression=service.Upload(expression.filename or "", expression.file),
        labels=None if labels is None else service.Upload(labels.filename or "", labels.file),
        group_column=group_column or None,
    )
    return to_read(cohort)


@router.get("", response_model=list[CohortRead])
def list_cohorts(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[CohortRead]:
    """List cohorts, newest first."""
    return [to_read(c) for c in repository.list_all(session, limit=limit, offset=offset)]


@router.get("/{cohort_id}", response_model=CohortRead)
def get_cohort(cohort_id: str, session: SessionDep) -> CohortRead:
    """Describe one cohort: shape, identifiers, label columns with class counts."""
    return to_read(repository.get(session, cohort_id))


@router.get("/{cohort_id}/samples", response_model=list[CohortSampleRead])
def list_samples(cohort_id: str, session: SessionDep) -> list[CohortSampleRead]:
    """List a cohort's samples with their labels and group ids, in stored order."""
    repository.get(session, cohort_id)
    return [CohortSampleRead.model_validate(s, from_attributes=True) for s in repository.samples(session, cohort_id)]
