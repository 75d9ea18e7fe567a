"""Prediction endpoints: read a stored prediction."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import CallerDep
from app.deps import SessionDep
from app.predictions import service
from app.predictions.schemas import PredictionRead

router = APIRouter(prefix="/predictions", tags=["predictions"])


@router.get("/{prediction_id}", response_model=PredictionRead)
def get_prediction(prediction_id: str, session: SessionDep, caller: CallerDep) -> PredictionRead:
    """Show a stored prediction: per-sample labels, probabilities and the input's gene coverage."""
    return PredictionRead.model_validate(service.get(session, prediction_id, lab_id=caller.lab_id))
