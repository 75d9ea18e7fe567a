"""All routers of the REST API, and the error responses every operation documents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.auth.deps import get_caller
from app.auth.router import router as access
from app.cohorts.router import router as cohorts
from app.encoders.router import methods_router as methods
from app.encoders.router import router as encoders
from app.errors import ErrorBody
from app.evaluations.router import router as evaluations
from app.genes.router import router as genes
from app.health import router as health
from app.jobs.router import router as jobs
from app.predictions.router import router as predictions
from app.predictors.router import router as predictors

# Documented on every operation, so that clients (and schema-driven tests) know the error body's shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad request"},
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key"},
    403: {"model": ErrorBody, "description": "The caller's role does not allow this"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Conflict with the registry's state"},
    422: {"model": ErrorBody, "description": "Invalid input: a malformed field, file, column or value"},
    503: {"model": ErrorBody, "description": "The registry database is unreachable"},
}

api_router = APIRouter(responses=ERROR_RESPONSES)
api_router.include_router(health)
# Every other endpoint needs a valid API key, whether or not it reads the caller itself.
for router in (access, cohorts, methods, encoders, predictors, predictions, evaluations, jobs, genes):
    api_router.include_router(router, dependencies=[Depends(get_caller)])
