"""Settings: one object, read from ``EXPRSSL_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a deployment may change. Paths default to one data directory."""

    model_config = SettingsConfigDict(env_prefix="EXPRSSL_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Holds the SQLite registry and artifacts.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset.")
    artifact_dir: Path | None = Field(default=None, description="Artifact folder; data_dir/artifacts if unset.")
    broker_url: str | None = Field(default=None, description="Celery broker; jobs run in-process if unset.")
    host: str = "127.0.0.1"
    port: int = 8000
    # Gate on the share of a predictor's panel genes found in the input (after identifier resolution); the
    # levels come from bench/RESULTS.md, "Gene coverage and imputation (issue 9)".
    min_gene_coverage: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="Refuse a prediction whose input covers less of the panel (mean imputation). bench/RESULTS.md "
        "(Gene coverage and imputation): every cohort loses 12-38 points of balanced accuracy at 30 %, easy tasks "
        "at most 2 at 50 %.",
    )
    warn_gene_coverage: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="Warn (in the coverage report) below this coverage (mean imputation). bench/RESULTS.md: a "
        "hard task loses 6 points at 90 % coverage and 17 at 70 % with mean imputation.",
    )
    ridge_min_gene_coverage: float = Field(
        default=0.3, gt=0.0, le=1.0,
        description="Refuse below this coverage when ridge imputation is requested. bench/RESULTS.md: ridge "
        "keeps full-panel accuracy down to 30 %, the lowest coverage measured.",
    )
    ridge_warn_gene_coverage: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="Warn below this coverage when ridge imputation is requested (bench/RESULTS.md).",
    )
    imputer_cache_size: int = Field(
        default=8, ge=0, description="Ridge imputation solutions kept in memory, per (predictor, observed genes)."
    )
    ood_percentile: float = Field(
        default=99.0, gt=0.0, lt=100.0,
        description="Flag a predicted sample as out of distribution above this percentile of the training "
        "samples' OOD scores (a request may override it).",
    )
    admin_session_hours: float = Field(
        default=12.0, gt=0.0, le=24 * 30,
        description="Lifetime of an admin-pages login; logging out, revoking its key or disabling its user ends "
        "it sooner.",
    )
    admin_cookie_secure: bool | None = Field(
        default=None,
        description="Mark the admin-pages session cookie Secure (sent over HTTPS only). Unset: when the request "
        "reached the server over HTTPS; behind a TLS proxy that talks plain HTTP to it, set true.",
    )
    max_upload_bytes: int = Field(default=4 * 1024**3, gt=0, description="Largest cohort upload (request body).")
    max_upload_samples: int = Field(default=100_000, gt=0, description="Most samples a cohort upload may hold.")
    max_upload_genes: int = Field(default=100_000, gt=0, description="Most genes a cohort upload may hold.")
    max_upload_cells: int = Field(
        default=1_000_000_000, gt=0,
        description="Most values (samples x genes) a cohort upload may hold: 4 GB as float32; a TCGA-sized "
        "10,000 x 60,000 cohort holds 600 million. Reading one takes about twice its size in memory.",
    )
    max_epochs: int = Field(default=10_000, gt=0, description="Most epochs a pretraining or a head may ask for.")
    max_hidden_dim: int = Field(default=2048, gt=0, description="Widest encoder layer a pretraining may ask for.")
    max_layers: int = Field(default=12, gt=0, description="Most encoder layers a pretraining may ask for.")
    max_batch_size: int = Field(default=65_536, gt=0, description="Largest training batch a request may ask for.")
    max_json_bytes: int = Field(
        default=256 * 1024**2, gt=0,
        description="Largest request body other than a cohort upload (inline samples are JSON, parsed in memory).",
    )
    max_inline_samples: int = Field(default=10_000, gt=0, description="Most inline samples in one prediction.")
    heap_keep_bytes: int = Field(
        default=256 * 1024**2, ge=0, le=2**31 - 1,
        description="Freed C-heap memory the API process and the workers keep for their next requests and batches "
        "instead of handing it back to the system (glibc's trim threshold, main arena; one other arena keeps up "
        "to 64 MiB; blocks over 32 MiB are always handed back): pages handed back fault in again on a later "
        "request. 0: glibc's defaults.",
    )
    # Rate limits per user on the expensive endpoints, in the `limits` library's notation ("10/minute").
    rate_limit_upload: str = Field(default="60/hour", description="Cohort uploads per user.")
    rate_limit_train: str = Field(default="120/hour", description="Pretraining, fitting and evaluation jobs per user.")
    rate_limit_predict: str = Field(default="600/minute", description="Prediction requests per user.")
    rate_limit_storage: str = Field(
        default="memory://", description="Where counts live: memory:// (one process) or redis://host:6379 (shared)."
    )
    duplicate_genes: Literal["refuse", "sum", "mean"] = Field(
        default="refuse",
        description="Columns that resolve to the same gene (gene table): refuse the upload, or sum or average them.",
    )
    worker_threads: int = Field(default=1, ge=1, description="In-process jobs run concurrently.")
    torch_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads; all cores if unset.")
    predictor_cache_size: int = Field(default=16, ge=0)
    inference_device: str = Field(
        default="auto",
        description="Where the API process runs predictions: auto (CUDA when present, else CPU), cpu, cuda or "
        "cuda:<index>. Inference is float32 everywhere (calibration was fitted in float32).",
    )
    progress_interval_s: float = Field(default=0.5, ge=0.0, description="Least time between progress writes.")
    # Distributed mode (Celery): a worker that stops heartbeating loses its job to the reaper.
    broker_visibility_timeout_s: int = Field(
        default=7 * 24 * 3600, gt=0, description="Redis redelivers an unacknowledged task after this; > longest run."
    )
    heartbeat_interval_s: float = Field(default=15.0, gt=0.0, description="How often a running job heartbeats.")
    heartbeat_timeout_s: float = Field(default=120.0, gt=0.0, description="A running job silent this long is lost.")
    reaper_interval_s: float = Field(default=30.0, gt=0.0, description="How often lost and stuck jobs are swept.")
    job_max_retries: int = Field(default=3, ge=0, description="Re-queues of a job whose worker was lost.")
    resend_queued_after_s: float = Field(
        default=900.0, gt=0.0, description="Re-send a job still queued this long (its message may be lost)."
    )
    checkpoint_every_epochs: int = Field(default=25, ge=0, description="Pretraining checkpoints; 0 = none.")
    readiness_timeout_s: float = Field(default=2.0, gt=0.0, description="Wait for broker and workers in /ready.")

    @field_validator("rate_limit_upload", "rate_limit_train", "rate_limit_predict")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate such as '10/minute' or '100/hour'") from exc
        return value

    @field_validator("inference_device")
    @classmethod
    def _device(cls, value: str) -> str:
        from models.device import resolve_device

        try:
            resolve_device(value)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _coverage_levels(self) -> Settings:
        pairs = (("min_gene_coverage", "warn_gene_coverage"), ("ridge_min_gene_coverage", "ridge_warn_gene_coverage"))
        for refuse, warn in pairs:
            if getattr(self, refuse) > getattr(self, warn):
                raise ValueError(f"{refuse} must not exceed {warn}")
        return self

    @model_validator(mode="after")
    def _heartbeat_fits_timeout(self) -> Settings:
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ValueError("heartbeat_timeout_s must exceed twice heartbeat_interval_s")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'exprssl.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings; tests set the environment and clear this cache (endpoints read them
    through ``app.deps.settings_dependency``)."""
    return Settings()
