"""Encoder endpoints: start pretraining, list, describe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.auth.deps import CallerDep
from app.deps import DispatcherDep, SessionDep, SettingsDep, StoreDep
from app.encoders import service
from app.encoders.schemas import EncoderAccepted, EncoderCreate, EncoderRead, MethodRead
from app.jobs import service as jobs
from app.jobs.schemas import JobRead
from app.predictions.service import get_cache
from app.ratelimit import job_start_route
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


@router.get("", response_model=list[EncoderRead])
def list_encoders(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[EncoderRead]:
    """List encoders, newest first."""
    rows = service.list_all(session, lab_id=caller.lab_id, limit=limit, offset=offset)
    return [EncoderRead.model_validate(row) for row in rows]


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
    for key in keys:
        get_cache(settings).discard(key)
