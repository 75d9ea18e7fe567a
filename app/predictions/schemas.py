"""Pydantic schemas of the prediction endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InlineSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_id: str = Field(min_length=1, max_length=200)
    values: list[float] = Field(description="Expression values in the order of `genes`.")


class PredictionCreate(BaseModel):
    """Either a stored cohort, or inline samples with the gene names their values follow."""

    model_config = ConfigDict(extra="forbid")

    cohort_id: str | None = None
    genes: list[str] | None = Field(default=None, description="Gene names of the inline values, in order.")
    samples: list[InlineSample] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PredictionCreate:
        inline = self.genes is not None or self.samples is not None
        if (self.cohort_id is not None) == inline:
            raise ValueError("give either cohort_id, or genes and samples")
        if inline and (not self.genes or not self.samples):
            raise ValueError("inline input needs non-empty genes and samples")
        return self


class SamplePrediction(BaseModel):
    sample_id: str
    label: str
    probabilities: dict[str, float]


class PredictionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    predictor_id: str
    cohort_id: str | None
    n_samples: int
    coverage: dict[str, Any] = Field(description="Panel genes found, imputed with the training mean, and dropped.")
    results: list[SamplePrediction]
    created_at: datetime
