"""Pydantic schemas of the predictor endpoints."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.db.orm import NAME_LENGTH, ArtifactStatus
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
    calibration_size: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Share of the training pool (samples or groups) held out, before the label-fraction subset, "
        "to fit the temperature and the conformal prediction sets; none is taken from pools under 20 samples.",
    )
    seed: int = Field(default=0, ge=0)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Head hyper-parameters: lr, max_epochs, batch_size, patience, weight_decay (torch heads); "
        "C (logistic_regression).",
    )
    name: str | None = Field(default=None, max_length=NAME_LENGTH)


class PredictorSummary(BaseModel):
    """A predictor as listed: what it is and its test metrics, without its split's sample ids, calibration,
    environment and loss curve (``GET /predictors/{id}`` has them)."""

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
    metrics: dict[str, Any] = Field(
        description="Test-split metrics, the chance level and bootstrap 95 % intervals of accuracy and balanced "
        "accuracy."
    )
    artifact_sha256: str | None
    gene_table_version: str | None = Field(
        default=None, description="Gene table snapshot its panel's names are matched with (None: older)."
    )
    created_at: datetime


class PredictorRead(PredictorSummary):
    split: dict[str, Any] = Field(description="How samples were split; held-out sample ids included.")
    calibration: dict[str, Any] = Field(
        description="Temperature (fitted on the calibration split), ECE (15 bins), Brier score and NLL before and "
        "after it on the test split; conformal coverage and set size on the test split at 80, 90 and 95 %; the "
        "OOD scorer (space, dimension, shrinkage) and its test-split flag rate. Empty for older predictors."
    )
    environment: dict[str, Any] = Field(description="Library versions the predictor was fitted with.")
    loss_curve: list[float]


class PredictorAccepted(BaseModel):
    predictor: PredictorRead
    job: JobRead


class CohortFacts(BaseModel):
    """A cohort as the registry knows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="Cohort id.")
    name: str = Field(description="Name given at upload.")
    n_samples: int = Field(description="Samples in the stored matrix.")
    n_genes: int = Field(description="Genes in the stored matrix.")
    gene_id_type: str = Field(description="ensembl, entrez, probe, symbol or other.")
    value_kind: str = Field(description="counts, tpm or log: how values were preprocessed (log1p or not).")
    checksum: str = Field(description="sha256 of the canonical stored matrix.")
    group_column: str | None = Field(description="Labels column of patient/group ids for leak-free splits, if any.")
    n_groups: int | None = Field(description="Distinct groups.")


class EncoderFacts(BaseModel):
    """The pretrained encoder under a linear-probe or fine-tuned predictor."""

    id: str = Field(description="Encoder id.")
    name: str = Field(description="Encoder name.")
    method: str = Field(description="SSL method: scarf, vime or byol.")
    params: dict[str, Any] = Field(description="Every pretraining hyper-parameter (defaults filled in).")
    seed: int = Field(description="Pretraining seed.")
    version: int = Field(description="Version among encoders of the same name.")
    n_genes: int = Field(description="Size of its gene panel.")
    final_loss: float | None = Field(description="Last epoch's pretraining loss.")
    artifact_sha256: str | None = Field(description="sha256 of the weights artifact.")
    pretraining_cohort: CohortFacts | None = Field(description="The cohort it was pretrained on.")
    parent_encoder_id: str | None = Field(
        default=None, description="The encoder its pretraining continued (None: pretrained from scratch)."
    )


class EvaluationFacts(BaseModel):
    """The newest ready label-efficiency evaluation on the predictor's cohort and label column."""

    id: str = Field(description="Evaluation id.")
    name: str = Field(description="Evaluation name.")
    created_at: datetime = Field(description="When it was requested.")
    n_seeds: int | None = Field(description="Seeds (random splits) per model and fraction.")
    fractions: list[float] = Field(description="Label fractions evaluated.")
    model: str | None = Field(description="The evaluation's model matching this predictor (e.g. scarf/finetune).")
    curve: list[dict[str, Any]] = Field(
        description="That model's mean and std of each metric over seeds, per label fraction."
    )
    at_fraction: list[dict[str, Any]] = Field(
        description="Every model of the evaluation at the fraction nearest this predictor's label fraction."
    )
    label_savings: dict[str, Any] = Field(
        description="Labels each model needs to reach the from-scratch MLP's best mean accuracy (label fraction "
        "and mean number of training labels) and the share of labels it saves, counted in labels used."
    )


class ModelCard(BaseModel):
    """What a predictor was trained on, how well it does, how calibrated it is, and its limits."""

    predictor_id: str = Field(description="Predictor id.")
    name: str = Field(description="Predictor name.")
    head: Head = Field(description="linear_probe, finetune or logistic_regression.")
    status: ArtifactStatus = Field(description="pending, ready, failed or cancelled.")
    created_at: datetime = Field(description="When fitting was requested.")
    artifact_sha256: str | None = Field(description="sha256 of the predictor artifact.")
    intended_use: str = Field(description="What the predictor is for, and what it is not.")
    label_column: str = Field(description="The phenotype column predicted.")
    classes: list[str] = Field(description="Labels it predicts, in probability order.")
    class_counts: dict[str, int] = Field(description="Labelled samples per class in the whole training cohort.")
    training_cohort: CohortFacts = Field(description="The labelled cohort it was fitted and tested on.")
    gene_panel: dict[str, Any] = Field(
        description="Size, sha256 of the ordered gene ids and the first ids of the panel inputs are aligned to."
    )
    encoder: EncoderFacts | None = Field(description="None for logistic regression (no encoder).")
    hyperparameters: dict[str, Any] = Field(description="The head's hyper-parameters and the seed.")
    split: dict[str, Any] = Field(
        description="How samples were split (test, calibration, training; by group when there is one), label "
        "fraction, dropped classes and per-class counts of each part. Sample ids are on GET /predictors/{id}."
    )
    metrics: dict[str, Any] = Field(
        description="Test-split accuracy, balanced accuracy, macro-F1, AUROC, chance level, bootstrap intervals."
    )
    calibration: dict[str, Any] = Field(
        description="Temperature, and ECE (15 bins), Brier score and NLL before and after it on the test split."
    )
    prediction_sets: dict[str, Any] | None = Field(
        description="Conformal method, calibration size, test-split coverage and mean set size at 80, 90, 95 %."
    )
    out_of_distribution: dict[str, Any] | None = Field(
        description="OOD score space, dimension, shrinkage, reference size and test-split flag rate."
    )
    evaluation: EvaluationFacts | None = Field(description="Label-efficiency result on the same cohort and label.")
    libraries: dict[str, str] = Field(description="Library versions at fit time.")
    limits: list[str] = Field(description="Conditions the figures above were measured under and do not cover.")
