"""Pydantic schemas of the predictor endpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.orm import ArtifactStatus
from app.jobs.schemas import JobRead


class Head(StrEnum):
    LINEAR_PROBE = "linear_probe"
    FINETUNE = "finetune"
    LOGISTIC_REGRESSION = "logistic_regression"


class PredictorCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort_id: str = Field(description="Labelled cohort to fit on.")
    label_column: str = Field(description="Phenotype column of the cohort's labels to predict.")
    head: Head = Field(
        description="linear_probe (frozen encoder + linear layer), finetune (encoder and linear layer trained "
        "together), logistic_regression (baseline on standardised log-expression; no encoder)."
    )
    encoder_id: str | None = Field(default=None, description="Required for linear_probe and finetune.")
    label_fraction: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Share of the labelled training pool used, per class."
    )
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of samples (or groups) held out.")
    seed: int = Field(default=0, ge=0)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Head hyper-parameters: lr, max_epochs, batch_size, patience, weight_decay (torch heads); "
        "C (logistic_regression).",
    )
    name: str | None = Field(default=None, max_length=200)


class PredictorRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    head: Head
    encoder_id: str | None
    cohort_id: str
    job_id: str
    label_column: str
    label_fraction: float
    params: dict[str, Any]
    seed: int
    status: ArtifactStatus
    classes: list[str]
    split: dict[str, Any] = Field(description="How samples were split; held-out sample ids included.")
    metrics: dict[str, Any] = Field(description="Test-split metrics and the chance level.")
    loss_curve: list[float]
    artifact_sha256: str | None
    created_at: datetime


class PredictorAccepted(BaseModel):
    predictor: PredictorRead
    job: JobRead
