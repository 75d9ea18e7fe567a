"""Pydantic schemas of the encoder endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.db.orm import NAME_LENGTH, ArtifactStatus
from app.jobs.schemas import JobRead
from app.predictions.schemas import CoverageReport


class EncoderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort_id: str = Field(description="Cohort to pretrain on (its labels are not used).")
    method: str | None = Field(
        default=None,
        description="SSL method: scarf, vime or byol. Default: scarf, or the parent's method with continue_from.",
    )
    name: str | None = Field(default=None, max_length=NAME_LENGTH)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyper-parameters; omitted ones take the paper's defaults, listed by GET /methods "
        "(e.g. epochs, batch_size, lr, corruption_rate, hidden_dim, n_layers, dropout). With continue_from, "
        "omitted ones take the parent's values (its architecture always: hidden_dim and n_layers cannot change).",
    )
    log1p: Literal["auto", "yes", "no"] = Field(
        default="auto", description="log1p before standardising: auto applies it when values look like counts."
    )
    seed: int = Field(default=0, ge=0)
    continue_from: str | None = Field(
        default=None,
        description="Continued pretraining: id of a ready encoder of the lab to start from. The new encoder keeps "
        "its weights' architecture and its gene panel; the cohort's genes are matched to that panel by canonical "
        "gene key (symbols, Ensembl or NCBI ids alike), panel genes the cohort lacks are filled with the mean, and "
        "a cohort covering less of the panel than the prediction gate (EXPRSSL_MIN_GENE_COVERAGE) fails the job.",
    )
    standardise_on: Literal["cohort", "parent"] = Field(
        default="cohort",
        description="With continue_from: per-gene mean and standard deviation from this cohort (genes it lacks "
        "keep the parent's), or the parent's statistics and log1p for every gene.",
    )


    @model_validator(mode="after")
    def _standardise_on_needs_a_parent(self) -> EncoderCreate:
        if "standardise_on" in self.model_fields_set and self.continue_from is None:
            raise ValueError("standardise_on applies only with continue_from (continued pretraining)")
        return self


class EncoderSummary(BaseModel):
    """An encoder as listed: its loss curve reduced to its last value (``GET /encoders/{id}`` has it whole)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    method: str
    params: dict[str, Any]
    seed: int
    cohort_id: str
    parent_encoder_id: str | None = Field(
        default=None, description="Encoder this one continued pretraining from (None: pretrained from scratch)."
    )
    job_id: str
    status: ArtifactStatus
    n_genes: int = Field(description="Size of the gene panel.")
    preprocessing: dict[str, Any]
    artifact_sha256: str | None
    version: int
    gene_table_version: str | None = Field(
        default=None, description="Gene table snapshot its panel's names are matched with (None: older)."
    )
    created_at: datetime
    epochs_trained: int = Field(description="Epochs in its loss curve so far.")
    final_loss: float | None = Field(description="The last epoch's pretraining loss (None before the first).")

    @model_validator(mode="before")
    @classmethod
    def _curve_summary(cls, data: Any) -> Any:
        """Read an encoder row (or a mapping) with its loss curve's length and last value."""
        if isinstance(data, dict):
            values = dict(data)
        else:
            values = {name: getattr(data, name) for name in (*cls.model_fields, "loss_curve") if hasattr(data, name)}
        curve = list(values.get("loss_curve") or [])
        return {**values, "epochs_trained": len(curve), "final_loss": float(curve[-1]) if curve else None}


class EncoderRead(EncoderSummary):
    loss_curve: list[float]


class EncoderAccepted(BaseModel):
    encoder: EncoderRead
    job: JobRead


class MethodRead(BaseModel):
    name: str
    defaults: dict[str, Any] = Field(description="Every hyper-parameter with its default (the paper's settings).")


class EmbeddingRead(BaseModel):
    encoder_id: str
    n_samples: int
    dim: int = Field(description="Width of each vector (the encoder's hidden size).")
    coverage: CoverageReport = Field(description="How the input's genes matched the encoder's panel.")
    sample_ids: list[str] = Field(description="In input order (a cohort's stored order).")
    embeddings: list[list[float]] = Field(description="One vector per sample, in sample_ids order.")
