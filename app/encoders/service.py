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
from app.lineage import repository as lineage
from app.lineage import service as deletion
from app.storage import ArtifactStore
from app.training_limits import check_training_bounds
from models.methods import METHODS
from worker.dispatch import Dispatcher


def validated_params(method: str, params: dict[str, object]) -> dict[str, object]:
    """Full, validated hyper-parameters of ``method`` (defaults filled in)."""
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    try:
        validated = METHODS[method].params_class.from_dict(params).to_dict()
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"params: {exc}") from exc
    check_training_bounds(validated)
    return validated


# Parameters that shape the encoder's weights: a continued encoder keeps its parent's.
ARCHITECTURE = ("hidden_dim", "n_layers")


def continued_params(*, method: str, requested: dict[str, object], parent: orm.Encoder) -> dict[str, object]:
    """Hyper-parameters of an encoder continuing ``parent``: the request's, else the parent's (same method) or
    the method's defaults, with the parent's architecture.

    Raises:
        InvalidInput: If the request changes the architecture, or on an invalid parameter.
    """
    changed = [k for k in ARCHITECTURE if k in requested and requested[k] != parent.params.get(k)]
    if changed:
        shown = ", ".join(f"{k}={requested[k]!r} (parent: {parent.params.get(k)!r})" for k in changed)
        raise InvalidInput(
            f"params: {shown}; continued pretraining keeps encoder {parent.id}'s architecture, leave them out"
        )
    base = dict(parent.params) if method == parent.method else {}
    architecture = {k: parent.params[k] for k in ARCHITECTURE if k in parent.params}
    return validated_params(method, {**base, **architecture, **requested})


def _check_parent_log1p(request: EncoderCreate, parent: orm.Encoder) -> None:
    """With the parent's statistics the parent's log1p applies; a request asking otherwise is refused."""
    parent_log1p = parent.preprocessing.get("log1p")
    if parent_log1p is None or request.standardise_on != "parent" or request.log1p == "auto":
        return
    if (request.log1p == "yes") != parent_log1p:
        raise InvalidInput(
            f"log1p={request.log1p!r} contradicts standardise_on='parent': encoder {parent.id} was pretrained "
            f"with log1p {'applied' if parent_log1p else 'not applied'}; leave log1p as 'auto' or standardise "
            "on the cohort"
        )


def _check_log1p_applies(request: EncoderCreate, cohort: orm.Cohort) -> None:
    """log1p='yes' on a cohort holding negative values is refused here, not by a failed job."""
    summary = (cohort.ingest or {}).get("values") or {}
    if request.log1p == "yes" and summary.get("n_negative"):
        raise InvalidInput(
            f"log1p='yes' needs non-negative values, but cohort {cohort.id} holds {summary['n_negative']:,} negative "
            f"ones (minimum {summary['minimum']:g}; its values are {cohort.value_kind}): leave log1p 'auto' or 'no'"
        )


def default_name(method: str, cohort: orm.Cohort, parent: orm.Encoder | None) -> str:
    """``<method>-<cohort>``; continued, ``<method>-<parent's name without its method>+<cohort>``: an
    encoder is named after its own method, which may differ from its parent's."""
    if parent is None:
        return f"{method}-{cohort.name}"
    return f"{method}-{parent.name.removeprefix(f'{parent.method}-')}+{cohort.name}"


def start_pretraining(
    *, session: Session, caller: Caller, dispatcher: Dispatcher, request: EncoderCreate
) -> orm.Encoder:
    """Register an encoder and queue the job that pretrains it (from scratch, or continuing another)."""
    parent = None if request.continue_from is None else get_ready(session, request.continue_from, lab_id=caller.lab_id)
    method = request.method or (parent.method if parent is not None else "scarf")
    if parent is None:
        params = validated_params(method, request.params)
    else:
        params = continued_params(method=method, requested=request.params, parent=parent)
        _check_parent_log1p(request, parent)
    cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
    if cohort.n_samples < 2:
        raise InvalidInput(f"cohort {cohort.id} holds {cohort.n_samples} sample; pretraining needs at least 2 "
                           "(BatchNorm normalises over a batch)")
    _check_log1p_applies(request, cohort)
    job_params: dict[str, object] = {"cohort_id": cohort.id, "method": method, "log1p": request.log1p}
    if parent is not None:
        job_params |= {"continue_from": parent.id, "standardise_on": request.standardise_on}
    job = jobs.create_job(session, caller, orm.JobKind.PRETRAIN, job_params)
    name = request.name or default_name(method, cohort, parent)[: orm.NAME_LENGTH]
    same_name = (orm.Encoder.lab_id == caller.lab_id, orm.Encoder.name == name)
    previous = session.scalar(select(func.max(orm.Encoder.version)).where(*same_name))
    encoder = orm.Encoder(
        lab_id=caller.lab_id,
        name=name,
        version=(previous or 0) + 1,
        method=method,
        params=params,
        seed=request.seed,
        cohort_id=cohort.id,
        parent_encoder_id=None if parent is None else parent.id,
        job_id=job.id,
        n_genes=cohort.n_genes if parent is None else parent.n_genes,
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


def delete_encoder(
    *, session: Session, store: ArtifactStore, caller: Caller, encoder_id: str, force: bool
) -> list[str]:
    """Delete an encoder; with ``force`` (admins) also the encoders continued from it and the predictors,
    evaluations and predictions made with them. Commits; returns the artifact keys deleted."""
    encoder = get(session, encoder_id, lab_id=caller.lab_id)
    found = lineage.of_encoder(session, encoder)
    return deletion.remove_made(session=session, store=store, caller=caller, row=encoder, found=found, force=force)
