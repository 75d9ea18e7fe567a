"""Pydantic schemas of the prediction endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.inputs import SamplesInput


class PredictionCreate(SamplesInput):
    """Samples to predict (a stored cohort, or inline samples) and how to report their uncertainty."""

    coverage: float = Field(
        default=0.9, gt=0.0, lt=1.0,
        description="Target coverage 1 - alpha of each sample's prediction set (split-conformal): on average over "
        "samples drawn like the predictor's training cohort, the set holds the true label at least this often.",
    )
    ood_percentile: float | None = Field(
        default=None, gt=0.0, lt=100.0,
        description="Flag a sample as out of distribution when its OOD score exceeds this percentile of the "
        "training samples' scores; the server's EXPRSSL_OOD_PERCENTILE (default 99) when unset.",
    )

    imputation: Literal["mean", "ridge"] = Field(
        default="mean",
        description="How panel genes missing from the input are filled in, on the model's input scale: mean (the "
        "training mean, z-score 0) or ridge (kernel ridge regression from the observed genes over the predictor's "
        "training samples; slower on first use for a set of genes, then cached). Ridge lowers the coverage gate "
        "(EXPRSSL_RIDGE_MIN_GENE_COVERAGE, default 30 %).",
    )


class SamplePrediction(BaseModel):
    sample_id: str = Field(description="The sample's id, as sent or as stored in the cohort.")
    label: str = Field(
        description="The only label of the prediction set; 'uncertain' when the set is empty or holds several "
        "labels. Predictors fitted without a calibration split give the most probable label."
    )
    top_label: str | None = Field(default=None, description="The most probable label (arg-max), whatever the set.")
    probabilities: dict[str, float] = Field(
        description="Class probabilities after temperature scaling (calibrated on the predictor's calibration split)."
    )
    prediction_set: list[str] | None = Field(
        default=None,
        description="Labels whose split-conformal score is within the threshold for the requested coverage, most "
        "probable first; None when the predictor has no calibration split.",
    )
    ood_score: float | None = Field(
        default=None,
        description="Out-of-distribution score: class-conditional Mahalanobis distance to the training samples "
        "(in the encoder's representation, or on principal components of the standardised expression plus the "
        "residual off them, for logistic regression); higher is further.",
    )
    ood_percentile: float | None = Field(
        default=None, description="Share (%) of the training samples' own (out-of-fold) scores below this score."
    )
    ood_flag: bool | None = Field(default=None, description="ood_percentile above the flag percentile.")


class PredictionUncertainty(BaseModel):
    """How the prediction sets and OOD flags of a prediction were made."""

    coverage: float = Field(description="Requested coverage of the prediction sets.")
    conformal_method: str | None = Field(description="lac (Sadinle et al. 2019) or aps (Romano et al. 2020).")
    n_calibration: int = Field(description="Calibration samples behind the sets (0: no sets).")
    threshold: float | None = Field(
        description="Conformal threshold on the score; None when the sets hold every label (coverage above "
        "n / (n + 1)) or there are no sets."
    )
    temperature: float = Field(description="Temperature dividing the log-probabilities (1: none).")
    ood_space: str | None = Field(description="embedding or expression: where OOD scores are computed.")
    ood_percentile: float = Field(description="Flag percentile applied.")
    share_flagged: float | None = Field(description="Share of samples flagged out of distribution.")
    share_uncertain: float = Field(description="Share of samples whose label is 'uncertain'.")
    mean_set_size: float | None = Field(description="Mean number of labels per prediction set.")
    notes: list[str] = Field(default_factory=list, description="Caveats of this prediction.")


class DriftGene(BaseModel):
    gene: str = Field(description="Panel gene id.")
    smd: float = Field(description="Standardised mean difference: (batch mean - reference mean) / reference std.")
    batch_mean: float = Field(description="Mean of the batch on the preprocessed (log) scale.")
    reference_mean: float = Field(description="The reference samples' mean on the same scale.")
    reference_std: float = Field(description="The reference samples' standard deviation on the same scale.")


class DriftSummary(BaseModel):
    """How a batch of two or more samples differs from the data the predictor's preprocessing was fitted on."""

    n_samples: int = Field(description="Samples in the batch.")
    share_flagged: float | None = Field(description="Share of the batch flagged out of distribution.")
    reference: str = Field(
        description="The samples the per-gene mean and std come from: the predictor's training samples "
        "(logistic regression) or the encoder's pretraining cohort."
    )
    n_genes_compared: int = Field(description="Panel genes present in the input (imputed genes are left out).")
    mean_abs_smd: float = Field(description="Mean |SMD| over the compared genes.")
    top_genes: list[DriftGene] = Field(description="The genes with the largest |SMD|, largest first.")


class GeneConversion(BaseModel):
    input: str = Field(description="The input's name.")
    panel: str = Field(description="The panel's name for the same gene.")


class MissingReason(BaseModel):
    panel: str = Field(description="The missing panel gene, as the panel spells it.")
    input: list[str] = Field(description="The input's names of it, none of which was taken for it.")
    reason: str = Field(description="Why not.")


class CoverageReport(BaseModel):
    """How the input's genes were matched to the predictor's panel (by canonical gene key) and completed."""

    n_panel: int = Field(description="Genes in the predictor's panel.")
    n_found: int = Field(description="Panel genes present in the input.")
    n_missing: int = Field(description="Panel genes absent from the input.")
    n_extra: int = Field(description="Input genes not in the panel, ignored.")
    coverage: float = Field(description="n_found / n_panel.")
    missing: list[str] = Field(default_factory=list, description="First 50 missing panel genes.")
    extra: list[str] = Field(default_factory=list, description="First 50 ignored input genes.")
    n_matched_directly: int | None = Field(
        default=None, description="Found under the panel's own name (after version suffix and case)."
    )
    n_matched_by_conversion: int | None = Field(
        default=None,
        description="Found under another identifier of the same gene: Ensembl id for a symbol, previous symbol, "
        "NCBI id ...",
    )
    conversions: list[GeneConversion] = Field(default_factory=list, description="First 50 of those.")
    missing_reasons: list[MissingReason] = Field(
        default_factory=list,
        description="For listed missing genes the input does name, why none of its names was taken: a name of "
        "several genes (not guessed), another gene's current symbol, or distinct Ensembl genes of one gene.",
    )
    imputed: int | None = Field(default=None, description="Panel genes filled in (the missing ones).")
    imputation: str | None = Field(default=None, description="mean or ridge.")
    warning: str | None = Field(default=None, description="Set when coverage is under the warning level.")
    gene_table_version: str | None = Field(default=None, description="Gene table the names were resolved with.")
    gene_table_note: str | None = Field(
        default=None,
        description="Set when the predictor was fitted under another gene table than the one resolving names now.",
    )


class PredictionSummary(BaseModel):
    """A stored prediction without its per-sample results (as listed; ``GET /predictions/{id}`` has them)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    predictor_id: str
    created_by: str | None = Field(
        default=None, description="Id of the user who requested it (None for predictions made before this was "
        "recorded: only admins delete those)."
    )
    cohort_id: str | None
    n_samples: int
    coverage: CoverageReport = Field(
        description="Panel genes found (directly or under another identifier), imputed (and how), and ignored; "
        "a warning under the warning coverage. Fields added with gene tables are None for older predictions."
    )
    uncertainty: PredictionUncertainty | None = Field(
        default=None, description="Prediction-set and OOD settings and shares (None for older predictions)."
    )
    drift: DriftSummary | None = Field(default=None, description="Batch drift; None for a single sample.")
    gene_table_version: str | None = Field(default=None, description="Gene table snapshot used (None: older).")
    created_at: datetime

    @field_validator("uncertainty", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None


class PredictionRead(PredictionSummary):
    """A stored prediction with one result per sample."""

    results: list[SamplePrediction]
