"""Every registry table. Import as ``from app.db import orm``."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, UTCDateTime, new_id, utcnow

NAME_LENGTH = 200  # names of labs, users, keys, cohorts and models; the longest stored label or id


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain strings so PostgreSQL and SQLite migrate alike.
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class JobKind(enum.StrEnum):
    INGEST = "ingest"
    PRETRAIN = "pretrain"
    FIT = "fit"
    EVALUATE = "evaluate"
    PREDICT = "predict"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ArtifactStatus(enum.StrEnum):
    """Life of an encoder or predictor row, which exists from the moment its job is accepted."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(enum.StrEnum):
    """Members upload, train and predict; admins also manage users and keys and any job of their lab."""

    ADMIN = "admin"
    MEMBER = "member"


class Lab(Base):
    """A tenant: every row that holds data belongs to exactly one lab, and only its users see it."""

    __tablename__ = "lab"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    __tablename__ = "app_user"  # "user" is a reserved word in PostgreSQL
    __table_args__ = (UniqueConstraint("lab_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    role: Mapped[Role] = mapped_column(_enum(Role))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lab: Mapped[Lab] = relationship()


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; ``prefix`` (not secret) finds the row and names the key."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"), index=True)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class AdminSession(Base):
    """A login to the admin pages: the cookie holds a random token, of which only the SHA-256 is stored.

    It acts as the API key it was opened with, so revoking that key (or disabling its user) ends it too.
    """

    __tablename__ = "admin_session"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_key.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The outcome of the last form action ({"kind": "ok" | "error", "text": ...}), shown once on the next page:
    # kept here, not in a cookie, so that a long message (a refusal naming 20 rows) is shown whole.
    flash: Mapped[dict[str, Any] | None] = mapped_column()

    key: Mapped[ApiKey] = relationship()


class AuditEvent(Base):
    """Who did what to which object, when. Append-only; kept when the object is deleted."""

    __tablename__ = "audit_event"
    # The log's page, its filters by action and by user, each newest first.
    __table_args__ = (
        Index("ix_audit_event_lab_id_at", "lab_id", "at"),
        Index("ix_audit_event_lab_id_action_at", "lab_id", "action", "at"),
        Index("ix_audit_event_lab_id_user_id_at", "lab_id", "user_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    key_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cohort(Base):
    __tablename__ = "cohort"
    # Lists walk this index backwards: a lab's rows newest first, with no sort and no other lab's rows.
    __table_args__ = (Index("ix_cohort_lab_id_created_at", "lab_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    created_by: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    source_filename: Mapped[str] = mapped_column(String(300))
    n_samples: Mapped[int] = mapped_column(Integer)
    n_genes: Mapped[int] = mapped_column(Integer)
    gene_id_type: Mapped[str] = mapped_column(String(16))
    value_kind: Mapped[str] = mapped_column(String(16))
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(String(300), index=True)  # identical uploads share a file
    # [{name, n_labelled, classes: {value: count}}]: fixed at upload, like the labels themselves.
    label_columns: Mapped[list[Any]] = mapped_column(default=list)
    group_column: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    n_groups: Mapped[int | None] = mapped_column(Integer)
    genes_preview: Mapped[list[Any]] = mapped_column(default=list)
    # samples_as_rows | genes_as_rows: how the uploaded file was laid out (detected or given).
    orientation: Mapped[str] = mapped_column(String(16), default="samples_as_rows", server_default="samples_as_rows")
    # detected | declared: where value_kind (counts | tpm | log) came from.
    value_kind_source: Mapped[str] = mapped_column(String(16), default="detected", server_default="detected")
    # The first cohort uploaded with the same matrix (same checksum), whose stored file this one shares.
    duplicate_of: Mapped[str | None] = mapped_column(String(32))
    # How the upload was read: format, orientation, gene ids, merged duplicate genes, value statistics.
    ingest: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Gene table snapshot the identifiers were resolved with (None: uploaded before gene tables).
    gene_table_version: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # Per stored column, in order: {"keys": [...], "rules": [...], "merged": {position: [original names]}};
    # large for wide matrices, so loaded only when read.
    gene_keys: Mapped[dict[str, Any]] = mapped_column(default=dict, deferred=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # The database deletes a cohort's samples (ON DELETE CASCADE): up to 100,000 rows, never loaded for it.
    samples: Mapped[list[CohortSample]] = relationship(
        back_populates="cohort", order_by="CohortSample.position", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def gene_resolution(self) -> dict[str, Any] | None:
        """The upload's gene resolution report (kept in ``ingest``); None for cohorts uploaded before it."""
        return self.ingest.get("gene_resolution") if self.ingest else None


class CohortSample(Base):
    """One sample of a cohort: its row in the stored matrix, phenotype labels and group (patient) id."""

    __tablename__ = "cohort_sample"
    __table_args__ = (
        UniqueConstraint("cohort_id", "sample_id"),
        Index("ix_cohort_sample_cohort_id_position", "cohort_id", "position"),  # pages in stored order
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohort.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    sample_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    group_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)

    cohort: Mapped[Cohort] = relationship(back_populates="samples")


class Job(Base):
    """The truth about a unit of work; queues only carry its id."""

    __tablename__ = "job"
    # The reaper's scan by state; the lab's list newest first (see Cohort).
    __table_args__ = (
        Index("ix_job_state_created_at", "state", "created_at"),
        Index("ix_job_lab_id_created_at", "lab_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    created_by: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Last time the job's id was handed to the broker (distributed mode); a lost message is re-sent.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Latest training checkpoint in the artifact store: {"key", "sha256", "epoch"}; a retry resumes from it.
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column()

    events: Mapped[list[JobEvent]] = relationship(order_by="JobEvent.id", cascade="all, delete-orphan")


class JobEvent(Base):
    """Append-only history of a job: state transitions and notes."""

    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)


class Encoder(Base):
    """A pretrained (or pretraining) representation: method, panel, preprocessing, weights."""

    __tablename__ = "encoder"
    # The lab's list newest first (see Cohort).
    __table_args__ = (Index("ix_encoder_lab_id_created_at", "lab_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohort.id"), index=True)
    # Continued pretraining: the encoder whose weights and gene panel this one started from (None: scratch).
    parent_encoder_id: Mapped[str | None] = mapped_column(ForeignKey("encoder.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), unique=True)
    status: Mapped[ArtifactStatus] = mapped_column(_enum(ArtifactStatus), default=ArtifactStatus.PENDING)
    n_genes: Mapped[int] = mapped_column(Integer)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_curve: Mapped[list[Any]] = mapped_column(default=list)
    artifact_key: Mapped[str | None] = mapped_column(String(300))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Gene table snapshot in use when it was trained (its panel's names are matched through it).
    gene_table_version: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Predictor(Base):
    """A phenotype classifier: head on an encoder (or a baseline), its split and test metrics."""

    __tablename__ = "predictor"
    # The lab's list newest first (see Cohort).
    __table_args__ = (Index("ix_predictor_lab_id_created_at", "lab_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    head: Mapped[str] = mapped_column(String(32))
    encoder_id: Mapped[str | None] = mapped_column(ForeignKey("encoder.id"), index=True)
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohort.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), unique=True)
    label_column: Mapped[str] = mapped_column(String(NAME_LENGTH))
    label_fraction: Mapped[float]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[ArtifactStatus] = mapped_column(_enum(ArtifactStatus), default=ArtifactStatus.PENDING)
    classes: Mapped[list[Any]] = mapped_column(default=list)
    split: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Temperature, ECE and Brier before/after and conformal coverage on the test split; the OOD scorer.
    calibration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Library versions the predictor was fitted with (for its model card).
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_curve: Mapped[list[Any]] = mapped_column(default=list)
    artifact_key: Mapped[str | None] = mapped_column(String(300))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    # Gene table snapshot the fitting cohort was aligned to the encoder's panel with.
    gene_table_version: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# A predictor's large JSON columns (the split names every sample): lists and lineage leave them unloaded.
PREDICTOR_DETAILS = (Predictor.split, Predictor.calibration, Predictor.environment, Predictor.loss_curve)


class Prediction(Base):
    """Labels and class probabilities a predictor gave for a batch of samples."""

    __tablename__ = "prediction"
    # A predictor's predictions newest first; rows are found by predictor or cohort, never by lab alone.
    __table_args__ = (Index("ix_prediction_predictor_id_created_at", "predictor_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    predictor_id: Mapped[str] = mapped_column(ForeignKey("predictor.id"))
    # Who requested it (None: made before this was recorded; only admins delete those).
    created_by: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    cohort_id: Mapped[str | None] = mapped_column(ForeignKey("cohort.id"), index=True)
    n_samples: Mapped[int] = mapped_column(Integer)
    coverage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    results: Mapped[list[Any]] = mapped_column(default=list)
    # Prediction-set coverage level and threshold, OOD space and flag percentile, temperature, share flagged.
    uncertainty: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Batch drift against the training cohort (two or more samples), else None.
    drift: Mapped[dict[str, Any] | None] = mapped_column()
    # Gene table snapshot the input's names were matched to the panel with.
    gene_table_version: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Evaluation(Base):
    """A label-efficiency study: SSL methods and baselines over label fractions and seeds on one cohort."""

    __tablename__ = "evaluation"
    # The lab's list newest first (see Cohort).
    __table_args__ = (Index("ix_evaluation_lab_id_created_at", "lab_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    lab_id: Mapped[str] = mapped_column(ForeignKey("lab.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohort.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), unique=True)
    label_column: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[ArtifactStatus] = mapped_column(_enum(ArtifactStatus), default=ArtifactStatus.PENDING)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # One row per (method, head, fraction, seed) with its test metrics and sizes.
    runs: Mapped[list[Any]] = mapped_column(default=list)
    # Mean and standard deviation over seeds per (method, head, fraction) and metric.
    summary: Mapped[list[Any]] = mapped_column(default=list)
    label_savings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
