"""Predictor use cases: accept a fitting request after checking it against the registry."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import repository as cohorts
from app.cohorts import service as cohort_service
from app.db import orm, repository
from app.encoders import service as encoders
from app.errors import InvalidInput
from app.jobs import service as jobs
from app.lineage import repository as lineage
from app.lineage import service as deletion
from app.predictors.schemas import Head, PredictorCreate
from app.storage import ArtifactStore
from app.training_limits import check_training_bounds
from models.classifiers import HeadParams
from worker.dispatch import Dispatcher

LOGREG_PARAMS = {"C"}


def validated_params(head: Head, params: dict[str, object]) -> dict[str, object]:
    """Full, validated hyper-parameters of a head (defaults filled in)."""
    if head is Head.LOGISTIC_REGRESSION:
        unknown = sorted(set(params) - LOGREG_PARAMS)
        if unknown:
            raise InvalidInput(f"params: unknown parameter(s) for logistic_regression: {unknown}; allowed: ['C']")
        c = params.get("C", 0.1)
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0 < c < math.inf:
            raise InvalidInput(f"params: C must be a finite number > 0, got {c!r}")
        return {"C": float(c)}
    try:  # the head's default learning rate is filled in, so the stored params name the rate used
        validated = HeadParams.from_dict(params, linear_probe=head is Head.LINEAR_PROBE).to_dict()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"params: {exc}") from exc
    check_training_bounds(validated)
    return validated


def _check_encoder(session: Session, caller: Caller, head: Head, encoder_id: str | None) -> orm.Encoder | None:
    if head is Head.LOGISTIC_REGRESSION:
        if encoder_id is not None:
            raise InvalidInput("encoder_id: logistic_regression is the encoder-free baseline; omit encoder_id")
        return None
    if encoder_id is None:
        raise InvalidInput(f"encoder_id is required for head {head.value}")
    return encoders.get_ready(session, encoder_id, lab_id=caller.lab_id)


def start_fitting(
    *, session: Session, caller: Caller, dispatcher: Dispatcher, request: PredictorCreate
) -> orm.Predictor:
    """Register a predictor and queue the job that fits it."""
    params = validated_params(request.head, request.params)
    cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
    cohort_service.check_label_column(cohort, request.label_column, test_size=request.test_size)
    encoder = _check_encoder(session, caller, request.head, request.encoder_id)
    job = jobs.create_job(
        session,
        caller,
        orm.JobKind.FIT,
        {
            "cohort_id": cohort.id,
            "head": request.head.value,
            "test_size": request.test_size,
            "calibration_size": request.calibration_size,
        },
    )
    predictor = orm.Predictor(
        lab_id=caller.lab_id,
        name=request.name or f"{request.head.value}-{request.label_column}"[: orm.NAME_LENGTH],
        head=request.head.value,
        encoder_id=None if encoder is None else encoder.id,
        cohort_id=cohort.id,
        job_id=job.id,
        label_column=request.label_column,
        label_fraction=request.label_fraction,
        params=params,
        seed=request.seed,
    )
    session.add(predictor)
    session.commit()
    dispatcher.submit(job.id)
    return predictor


def get(session: Session, predictor_id: str, *, lab_id: str) -> orm.Predictor:
    return repository.get_or_404(session, orm.Predictor, predictor_id, lab_id=lab_id)


def delete_predictor(
    *, session: Session, store: ArtifactStore, caller: Caller, predictor_id: str, force: bool
) -> list[str]:
    """Delete a predictor; with ``force`` (admins) also its stored predictions. Commits; returns the artifact
    keys deleted."""
    predictor = get(session, predictor_id, lab_id=caller.lab_id)
    found = lineage.of_predictor(session, predictor)
    return deletion.remove_made(session=session, store=store, caller=caller, row=predictor, found=found, force=force)
