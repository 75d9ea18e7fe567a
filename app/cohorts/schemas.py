"""Pydantic schemas of the cohort endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from app.db.orm import NAME_LENGTH

Orientation = Literal["auto", "samples_as_rows", "genes_as_rows"]
ValuesDeclaration = Literal["auto", "counts", "tpm", "log"]
DuplicateGenes = Literal["refuse", "sum", "mean"]


class CohortUploadForm(BaseModel):
    """The text fields of a cohort upload (the files travel beside them)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=NAME_LENGTH)
    group_column: str | None = Field(
        default=None,
        max_length=NAME_LENGTH,
        description="Labels column holding a patient/group id for leak-free splits.",
    )
    orientation: Orientation = Field(
        default="auto",
        description="Rows of a CSV/TSV/Parquet file are samples or genes; auto detects genes as rows from the "
        "id column's name (gene_id, Geneid, symbol, probe_id ...) or its Ensembl/probe ids.",
    )
    values: ValuesDeclaration = Field(
        default="auto",
        description="counts (raw read counts) or tpm (linear-scale TPM/FPKM/intensities) get log1p before "
        "standardising; log values do not; auto detects the kind from the values.",
    )
    duplicate_genes: DuplicateGenes | None = Field(
        default=None,
        description="Columns that resolve to the same gene with the gene table (version suffix, case, previous "
        "symbol or alias, symbol vs Ensembl or NCBI id): refuse the upload, or sum or average their columns; the "
        "server's EXPRSSL_DUPLICATE_GENES setting if unset.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: Any) -> Any:
        """Browsers send empty text inputs as empty strings."""
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].default
        return value


def upload_request_body() -> dict[str, Any]:
    """The OpenAPI request body of ``POST /cohorts``, which the endpoint parses while it streams in."""
    text = CohortUploadForm.model_json_schema()
    properties: dict[str, Any] = {
        "expression": {
            "type": "string",
            "format": "binary",
            "description": "The expression matrix: .csv, .tsv, .txt (optionally .gz), .parquet, .gct (.gct.gz) "
            "or .h5ad; samples as rows or genes as rows.",
        },
        "labels": {
            "type": "string",
            "format": "binary",
            "description": "Sample id, then one or more phenotype columns (.csv/.tsv). Without it, text "
            "columns of an .h5ad obs table or GCT 1.3 column metadata become the labels.",
        },
    }
    for name, schema in text["properties"].items():
        schema.pop("default", None)
        if "anyOf" in schema:  # optional: send nothing, or a value
            options = [option for option in schema.pop("anyOf") if option.get("type") != "null"]
            schema.update(options[0] if len(options) == 1 else {"anyOf": options})
        schema.pop("title", None)
        properties[name] = schema
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["expression"], "properties": properties}
            }
        },
    }


class LabelColumnRead(BaseModel):
    name: str
    n_labelled: int = Field(description="Samples with a value in this column.")
    classes: dict[str, int] = Field(description="Sample count per value, most frequent first.")


class GeneCandidateRead(BaseModel):
    key: str = Field(description="Canonical key: NCBI gene id, or Ensembl gene id when the gene has none.")
    symbol: str | None = Field(description="Current official symbol.")


class AmbiguousGeneRead(BaseModel):
    name: str = Field(description="The column name as uploaded.")
    candidates: list[GeneCandidateRead] = Field(description="The genes it may denote; none was chosen.")


class MergedGenesRead(BaseModel):
    policy: str = Field(description="refuse, sum or mean: what was done with columns of one gene.")
    n_groups: int = Field(description="Genes that had several columns.")
    n_genes_merged: int = Field(description="Columns merged into those genes.")
    groups: dict[str, list[str]] = Field(description="Stored column name -> original names (first 50 groups).")


class GeneResolutionRead(BaseModel):
    """How the upload's gene names were resolved to canonical gene keys (NCBI gene id, else Ensembl id)."""

    version: str = Field(description="Gene table snapshot used.")
    n_columns: int = Field(description="Gene columns uploaded (before merging).")
    n_resolved: int = Field(description="Columns that denote one gene (or a probe set by its own id).")
    rules: dict[str, int] = Field(
        description="Columns per rule: symbol, alias (previous symbol or synonym), ensembl, ensembl_par_y, "
        "ensembl_only, ncbi_id, tcga, loc_id, excel_date, probe (kept as is), ambiguous, unresolved."
    )
    n_ambiguous: int
    ambiguous: list[AmbiguousGeneRead] = Field(description="First 50 ambiguous names with their candidates.")
    n_unresolved: int
    unresolved: list[str] = Field(description="First 50 names no gene was found for; they match only themselves.")
    merged: MergedGenesRead
    ensembl_alternates: dict[str, Any] = Field(
        default_factory=dict,
        description="Genes several distinct Ensembl ids of the file belong to (alternate haplotypes, patches): "
        "n_groups and the first 50 groups; these columns are kept apart, keyed by their own Ensembl ids.",
    )


class CohortSummary(BaseModel):
    """A cohort as listed: without its ingest and gene resolution reports (``GET /cohorts/{id}`` has them)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    source_filename: str
    n_samples: int
    n_genes: int
    gene_id_type: str = Field(description="ensembl, entrez, probe, symbol or other: what most gene ids look like.")
    value_kind: str = Field(
        description="counts (raw read counts), tpm (linear-scale non-integer values) or log (already "
        "log-transformed or otherwise continuous, negatives allowed); counts and tpm get log1p downstream."
    )
    value_kind_source: str = Field(description="detected from the values, or declared by the uploader.")
    orientation: str = Field(description="samples_as_rows or genes_as_rows: how the uploaded file was laid out.")
    checksum: str = Field(description="sha256 of the canonical stored array.")
    duplicate_of: str | None = Field(
        description="The earlier cohort with the identical matrix, whose stored file this cohort shares."
    )
    label_columns: list[LabelColumnRead]
    group_column: str | None
    n_groups: int | None
    genes_preview: list[str] = Field(description="The first 20 gene names, in stored order.")
    gene_table_version: str | None = Field(
        default=None, description="Gene table snapshot the gene names were resolved with (None: older cohorts)."
    )
    created_at: datetime

    @computed_field(description="True when the matrix was already stored, so this upload stored nothing new.")
    def deduplicated(self) -> bool:
        return self.duplicate_of is not None


class CohortRead(CohortSummary):
    ingest: dict[str, Any] = Field(
        description="How the upload was read: format, orientation, gene-id kinds, merged duplicate genes, "
        "value statistics, where the labels came from."
    )
    gene_resolution: GeneResolutionRead | None = Field(
        default=None, description="How gene names were resolved and merged (None for cohorts uploaded before)."
    )


class CohortSampleRead(BaseModel):
    sample_id: str
    group_id: str | None
    labels: dict[str, str | None]
