"""All routers of the REST API."""

from __future__ import annotations

from fastapi import APIRouter

from app.cohorts.router import router as cohorts
from app.encoders.router import methods_router as methods
from app.encoders.router import router as encoders
from app.evaluations.router import router as evaluations
from app.health import router as health
from app.jobs.router import router as jobs
from app.predictions.router import router as predictions
from app.predictors.router import router as predictors

api_router = APIRouter()
for router in (health, cohorts, methods, encoders, predictors, predictions, evaluations, jobs):
    api_router.include_router(router)
