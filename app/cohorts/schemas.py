"""Pydantic schemas of the cohort endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LabelColumnRead(BaseModel):
    name: str
    n_labelled: int = Field(description="Samples with a value in this column.")
    classes: dict[str, int] = Field(description="Sample count per value, most frequent first.")


class CohortRead(BaseModel):
    id: str
    name: str
    source_filename: str
    n_samples: int
    n_genes: int
    gene_id_type: str = Field(description="ensembl, symbol, probe or other: what most column names look like.")
    value_kind: str = Field(description="counts (non-negative integers) or continuous (already normalised/logged).")
    checksum: str = Field(description="sha256 of the canonical stored array.")
    label_columns: list[LabelColumnRead]
    group_column: str | None
    n_groups: int | None
    genes_preview: list[str] = Field(description="The first 20 gene names, in stored order.")
    created_at: datetime


class CohortSampleRead(BaseModel):
    sample_id: str
    group_id: str | None
    labels: dict[str, str | None]
