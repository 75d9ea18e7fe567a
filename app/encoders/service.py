"""Encoder use cases: accept a pretraining request, read the registry."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import repository as cohorts
from app.db import orm, repository
from app.encoders.schemas import EncoderCreate
from app.errors import Conflict, InvalidInput
from app.jobs import service as jobs
from models.methods import METHODS
from worker.dispatch import Dispatcher

LOG1P = {"auto": None, "yes": True, "no": False}


def validated_params(method: str, params: dict[str, object]) -> dict[str, object]:
    """Full, validated hyper-parameters of ``method`` (defaults filled in)."""
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[method].params_class.from_dict(params).to_dict()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"params: {exc}") from exc


def start_pretraining(
    *, session: Session, caller: Caller, dispatcher: Dispatcher, request: EncoderCreate
) -> orm.Encoder:
    """Register an encoder and queue the job that pretrains it."""
    params = validated_params(request.method, request.params)
    cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
    job = jobs.create_job(
        session,
        caller,
        orm.JobKind.PRETRAIN,
        {"cohort_id": cohort.id, "method": request.method, "log1p": request.log1p},
    )
    name = request.name or f"{request.method}-{cohort.name}"
    same_name = (orm.Encoder.lab_id == caller.lab_id, orm.Encoder.name == name)
    previous = session.scalar(select(func.max(orm.Encoder.version)).where(*same_name))
    encoder = orm.Encoder(
        lab_id=caller.lab_id,
        name=name,
        version=(previous or 0) + 1,
        method=request.method,
        params=params,
        seed=request.seed,
        cohort_id=cohort.id,
        job_id=job.id,
        n_genes=cohort.n_genes,
        preprocessing={"log1p": request.log1p},
        loss_curve=[],
    )
    session.add(encoder)
    session.commit()
    dispatcher.submit(job.id)
    return encoder


def get(session: Session, encoder_id: str, *, lab_id: str) -> orm.Encoder:
    return repository.get_or_404(session, orm.Encoder, encoder_id, lab_id=lab_id)


def get_ready(session: Session, encoder_id: str, *, lab_id: str) -> orm.Encoder:
    """An encoder of the lab whose weights exist; Conflict names its state and job otherwise."""
    encoder = get(session, encoder_id, lab_id=lab_id)
    if encoder.status is not orm.ArtifactStatus.READY:
        raise Conflict(f"encoder {encoder.id} is {encoder.status.value}, not ready (its job is {encoder.job_id})")
    return encoder


def list_all(session: Session, *, lab_id: str, limit: int, offset: int) -> list[orm.Encoder]:
    return repository.newest(session, orm.Encoder, lab_id=lab_id, limit=limit, offset=offset)
