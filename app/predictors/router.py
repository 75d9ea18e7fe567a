"""Predictor endpoints: start fitting, list, describe, predict."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from app import caches, ratelimit
from app.auth import service as auth
from app.auth.deps import CallerDep, bearer, bearer_key
from app.auth.service import Caller
from app.config import get_settings
from app.db import orm, repository
from app.db.session import session_factory
from app.deps import AfterQuery, DispatcherDep, SessionDep, SettingsDep, StatusQuery, StoreDep
from app.inputs import json_body, openapi_json_body, parse_json_body
from app.jobs import service as jobs
from app.jobs.schemas import JobRead
from app.predictions import service as predictions
from app.predictions.schemas import PredictionCreate, PredictionRead, PredictionSummary
from app.predictors import card, service
from app.predictors.schemas import Head, ModelCard, PredictorAccepted, PredictorCreate, PredictorRead, PredictorSummary
from app.ratelimit import RATE_LIMITED, job_start_route, rate_limited
from app.storage import get_store

router = APIRouter(prefix="/predictors", tags=["predictors"])


@router.post("", response_model=PredictorAccepted, **job_start_route())
def create_predictor(
    request: PredictorCreate, session: SessionDep, caller: CallerDep, dispatcher: DispatcherDep
) -> PredictorAccepted:
    """Start fitting a phenotype predictor; answers at once with the queued job."""
    predictor = service.start_fitting(session=session, caller=caller, dispatcher=dispatcher, request=request)
    job = jobs.get_job(session, predictor.job_id, lab_id=caller.lab_id)
    return PredictorAccepted(predictor=PredictorRead.model_validate(predictor), job=JobRead.model_validate(job))


@router.get("", response_model=list[PredictorSummary])
def list_predictors(
    session: SessionDep,
    caller: CallerDep,
    cohort_id: Annotated[str | None, Query(description="Only predictors fitted on this cohort.")] = None,
    encoder_id: Annotated[str | None, Query(description="Only predictors on this encoder.")] = None,
    head: Head | None = None,
    label_column: Annotated[str | None, Query(description="Only predictors of this label column.")] = None,
    state: StatusQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[PredictorSummary]:
    """List predictors, newest first, optionally filtered by cohort, encoder, head, label column and status,
    with their test metrics but without split, calibration, environment and loss curve (``GET
    /predictors/{id}`` has them)."""
    filters = {"cohort_id": cohort_id, "encoder_id": encoder_id, "head": head, "label_column": label_column,
               "status": state}
    rows = repository.listing(session, orm.Predictor, lab_id=caller.lab_id, limit=limit, offset=offset,
                              filters=filters, after=after)
    return [PredictorSummary.model_validate(row) for row in rows]


@router.get("/{predictor_id}", response_model=PredictorRead)
def get_predictor(predictor_id: str, session: SessionDep, caller: CallerDep) -> PredictorRead:
    """Describe a predictor: head, split, classes and test metrics."""
    return PredictorRead.model_validate(service.get(session, predictor_id, lab_id=caller.lab_id))


@router.get(
    "/{predictor_id}/card",
    response_model=ModelCard,
    responses={200: {
        "content": {"text/markdown": {"schema": {"type": "string"}}},
        "description": "The model card, as JSON, or as Markdown with format=markdown or Accept: text/markdown.",
    }},
)
def get_card(
    predictor_id: str,
    session: SessionDep,
    caller: CallerDep,
    settings: SettingsDep,
    format: Annotated[Literal["json", "markdown"] | None, Query(description="Overrides the Accept header.")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> ModelCard | PlainTextResponse:
    """Show a predictor's model card: data, encoder, split, metrics, calibration, sets, OOD, evaluation, limits."""
    model_card = card.build_card(
        session=session,
        predictor=service.get(session, predictor_id, lab_id=caller.lab_id),
        min_gene_coverage=settings.min_gene_coverage,
    )
    if format == "markdown" or (format is None and "text/markdown" in (accept or "")):
        return PlainTextResponse(card.render_markdown(model_card), media_type="text/markdown")
    return model_card


PREDICT = "predict"  # the rate-limit bucket of predictions


class PredictionRoute(APIRoute):
    """The prediction endpoint's route: two worker-thread hops per request where FastAPI's dependency solving
    made six before the response for a body of 64 KiB or more (the session's opening, the key, the rate
    limit, the parse, the store, the endpoint; five for a smaller body, parsed on the event loop) and a
    seventh, the session's closing, after it. Side by side, a 100-sample prediction answers 1.7-1.9 ms
    sooner, of 30-38 (bench/RESULTS.md, "Sixth pass").

    Order and errors are those of the route's declared dependencies: a missing API key (401) before
    anything else; then, on a worker thread, the key's check (401) and the rate limit (429) before the body
    is read, so that neither an unknown key nor a limited user can make the server take in a body; then the
    body, and on a worker thread its parse and validation (422 in FastAPI's shape) and the endpoint, with one
    session. The declared signature still makes the OpenAPI operation. FastAPI's dependency overrides, its own
    ``max_body_size`` (the app bounds bodies with ``app.body_limit.BodyLimit``) and any dependency added where
    the router is included do not reach this route: a test compares the route's dependencies with the ones
    resolved here.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)  # 405 with Allow
            return
        http = Request(scope, receive, send)
        key = bearer_key(await bearer(http))
        caller = await run_in_threadpool(_counted_caller, key)
        body = await http.body()
        response = await run_in_threadpool(self._respond, scope["path_params"]["predictor_id"], caller, body)
        await response(scope, receive, send)

    def _respond(self, predictor_id: str, caller: Caller, body: bytes) -> Response:
        request = parse_json_body(PredictionCreate, body)
        with session_factory()() as session:
            response: Response = self.endpoint(
                predictor_id=predictor_id, request=request, session=session, caller=caller, store=get_store(),
                settings=get_settings(),
            )
            return response


def _counted_caller(key: str) -> Caller:
    """The caller behind ``key`` (401 unless valid), their request counted against the predict limit (429)."""
    with session_factory()() as session:
        caller = auth.authenticate(session, key)
    ratelimit.hit(get_settings(), PREDICT, caller.user_id)
    return caller


def predict(
    predictor_id: str,
    request: Annotated[PredictionCreate, Depends(json_body(PredictionCreate))],
    session: SessionDep,
    caller: CallerDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """Predict labels and class probabilities for inline samples or a stored cohort, and keep them."""
    prediction = predictions.predict(
        session=session, caller=caller, store=store, settings=settings, predictor_id=predictor_id, request=request
    )
    # Rendered here by pydantic-core: FastAPI would validate the PredictionRead again.
    body = prediction.model_dump_json()
    return Response(body, status_code=status.HTTP_201_CREATED, media_type="application/json")


router.add_api_route(
    "/{predictor_id}/predictions",
    predict,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=PredictionRead,
    dependencies=[Depends(rate_limited(PREDICT))],
    responses=RATE_LIMITED,
    openapi_extra={"requestBody": openapi_json_body(PredictionCreate)},
    route_class_override=PredictionRoute,
)


@router.get("/{predictor_id}/predictions", response_model=list[PredictionSummary])
def list_predictions(
    predictor_id: str,
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    after: AfterQuery = None,
) -> list[PredictionSummary]:
    """List a predictor's predictions, newest first, without their per-sample results (``GET
    /predictions/{id}`` has them, also as CSV or Parquet)."""
    service.get(session, predictor_id, lab_id=caller.lab_id)
    rows = predictions.list_for_predictor(session, predictor_id, lab_id=caller.lab_id, limit=limit, offset=offset,
                                          after=after)
    return [PredictionSummary.model_validate(p) for p in rows]


@router.delete("/{predictor_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_predictor(
    predictor_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    force: Annotated[bool, Query(description="Admins: also delete its stored predictions.")] = False,
) -> None:
    """Delete a predictor and its weights. Refused (409) while predictions made with it are stored, unless
    forced; refused while its fitting job runs."""
    keys = service.delete_predictor(session=session, store=store, caller=caller, predictor_id=predictor_id, force=force)
    caches.forget(settings, keys)
