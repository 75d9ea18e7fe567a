"""Pydantic schemas of the evaluation endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.db.orm import NAME_LENGTH, ArtifactStatus
from app.jobs.schemas import JobRead
from models.protocol import DEFAULT_FRACTIONS

Baseline = Literal["mlp_scratch", "logistic_regression", "pca_logistic_regression"]
HeadName = Literal["linear_probe", "finetune"]


def _all_heads() -> list[HeadName]:
    return ["linear_probe", "finetune"]


def _all_baselines() -> list[Baseline]:
    return ["mlp_scratch", "logistic_regression", "pca_logistic_regression"]


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort_id: str = Field(description="Labelled cohort; its unlabelled samples join SSL pretraining.")
    label_column: str
    name: str | None = Field(default=None, max_length=NAME_LENGTH)
    methods: list[str] = Field(
        default_factory=lambda: ["scarf", "vime", "byol"],
        description="SSL methods pretrained inside the protocol, per seed, on non-test samples only.",
    )
    method_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Per-method overrides, e.g. {"scarf": {"epochs": 200}}.'
    )
    encoder_ids: list[str] = Field(
        default_factory=list, description="Registry encoders evaluated beside the methods (pretrained elsewhere)."
    )
    heads: list[HeadName] = Field(default_factory=_all_heads)
    baselines: list[Baseline] = Field(
        default_factory=_all_baselines,
        description="Supervised baselines; all three whenever methods or encoder_ids are given (SSL is always "
        "reported beside them), any of them in a baseline-only evaluation.",
    )
    fractions: list[float] = Field(
        default_factory=lambda: list(DEFAULT_FRACTIONS), min_length=1, max_length=20,
        description="Shares of each class of the labelled training pool, each in (0, 1].",
    )
    n_seeds: int = Field(default=5, ge=1, le=50)
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    head_params: dict[str, Any] = Field(
        default_factory=dict, description="lr, max_epochs, batch_size, patience, weight_decay of the torch heads."
    )
    logreg_c: float = Field(default=0.1, gt=0.0, allow_inf_nan=False)
    pca_components: int = Field(default=50, ge=1, le=1000)


class EvaluationSummary(BaseModel):
    """An evaluation as listed: its results per model and fraction, without the per-run metrics and splits."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    cohort_id: str
    label_column: str
    job_id: str
    status: ArtifactStatus
    config: dict[str, Any]
    summary: list[dict[str, Any]] = Field(description="Mean and std over seeds per model and fraction.")
    label_savings: dict[str, Any] = Field(
        description="Labels each model needs to reach the from-scratch MLP's best mean accuracy (label fraction "
        "and mean number of training labels) and the share of labels it saves, counted in labels used."
    )
    created_at: datetime


class EvaluationRead(EvaluationSummary):
    runs: list[dict[str, Any]] = Field(description="Every (model, fraction, seed) with its test metrics.")
    timings: dict[str, Any] = Field(description="Seconds per model, notes, the splits per seed, classes.")


class EvaluationAccepted(BaseModel):
    evaluation: EvaluationRead
    job: JobRead
