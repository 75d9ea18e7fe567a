"""Registry at scale: every list endpoint, admin page and forced delete on a registry filled like a busy lab's.

Fills a fresh registry, its schema made by the project's migrations (``app.cli.migrate``), through the ORM
tables with one big lab and a small second one (so that no ``lab_id`` predicate is trivially true). At
``--scale 1`` the big lab holds 30 users with a key each, 300 cohorts (lognormal sizes, median about 250
samples, and two of 10,000; 20,000 genes), 5,000 jobs with their events (one per encoder, predictor and
evaluation; the rest made models deleted since), 300 encoders, 1,000 predictors, 100 evaluations, 50,000
predictions and 50,000 audit events (the jobs', uploads', deletions' and cancellations' own, the rest admin
logins). Rows hold what the app and its pipelines write: cohorts their ingest report, label summary and
per-column gene keys, samples TCGA-like barcodes with their labels, encoders and predictors the hyper-parameters
the app validates, loss curves, splits naming the cohort's samples, metrics from a confusion matrix,
calibration and OOD summaries; evaluations the default protocol's runs, summarised by ``models.protocol``;
predictions per-sample results, coverage, uncertainty and drift. An artifact's status follows its job's
state. Every value, ids included, comes from ``random.Random(7)``; only the API keys (made by the app's auth
service, with their ``key.create`` audit events) differ from run to run.

Then times each case through ``TestClient`` (in process, no HTTP server) as the big lab's admin: the median
of 3 requests, and for the last of them the SQL statements it ran (a SQLAlchemy event listener on the app's
engine), the response size and its slowest statement. A read's statements are run again after the request
(median of 3) to time them with their rows fetched as the app gets them (SQLite's execute only steps to the
first row; psycopg decodes JSON columns at fetch). With ``--deletes``, forced deletes follow, once each,
their statements timed as they ran: the predictor with the most predictions, the encoder with the most
predictors and the two largest cohorts (both of 10,000 samples), each the first of its kind that no
unfinished job holds up (the app refuses those).

Database: by default a SQLite file in a temporary directory, deleted afterwards (no ANALYZE: the app runs
none). With a PostgreSQL URL the benchmark creates the database the URL names (default
``exprssl_bench_scale``), refusing one that exists, runs ANALYZE once filled (as autovacuum soon would), and
drops the database at the end; it touches no other database.

Usage: ``.venv/bin/python bench/registry_scale.py [--database-url URL] [--scale 1.0] [--deletes]``, e.g.
``--database-url postgresql+psycopg://postgres@127.0.0.1:5432/exprssl_bench_scale``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")  # Starlette asks for httpx2
from fastapi.testclient import TestClient  # noqa: E402 - after the path insert and the warning filter

from app.auth import service as auth  # noqa: E402
from app.cli import migrate  # noqa: E402
from app.config import get_settings  # noqa: E402
from app.db import orm  # noqa: E402
from app.db.session import session_factory  # noqa: E402
from app.encoders.service import validated_params as encoder_params  # noqa: E402
from app.evaluations.schemas import EvaluationCreate  # noqa: E402
from app.lineage import repository as lineage  # noqa: E402
from app.main import create_app  # noqa: E402
from app.predictors.schemas import Head  # noqa: E402
from app.predictors.service import validated_params as head_params  # noqa: E402
from models.gene_table import gene_table_version  # noqa: E402
from models.protocol import label_savings, summarise  # noqa: E402
from worker.pipelines.fit import environment  # noqa: E402

Row = dict[str, Any]

SEED = 7
END = datetime(2026, 11, 30, tzinfo=UTC)  # rows are dated over the two years before it
START = END - timedelta(days=730)
N_GENES = 20_000
BIG_COHORT = 10_000  # samples of each of the big lab's two TCGA-sized cohorts, whatever the scale
CANCER_TYPES = ("BRCA LUAD LUSC PRAD COAD READ KIRC KIRP KICH THCA HNSC LIHC STAD BLCA SKCM OV UCEC CESC GBM LGG "
                "PAAD PCPG SARC TGCT THYM ESCA MESO UVM ACC DLBC CHOL UCS LAML").split()
TISSUE = {"01A": "primary tumour", "11A": "solid tissue normal", "06A": "metastatic"}
METHODS = ("scarf", "vime", "byol")
JOB_STATES = {  # state: weight, for jobs whose model still exists (deleted models' jobs had all ended)
    orm.JobState.SUCCEEDED: 86, orm.JobState.FAILED: 7, orm.JobState.CANCELLED: 5,
    orm.JobState.RUNNING: 1, orm.JobState.QUEUED: 1,
}
STATUS = {
    orm.JobState.SUCCEEDED: orm.ArtifactStatus.READY, orm.JobState.FAILED: orm.ArtifactStatus.FAILED,
    orm.JobState.CANCELLED: orm.ArtifactStatus.CANCELLED, orm.JobState.RUNNING: orm.ArtifactStatus.PENDING,
    orm.JobState.QUEUED: orm.ArtifactStatus.PENDING,
}
FAILURES = ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "InvalidInput: cohort covers 41.2% of the encoder's 20000 genes; fitting needs at least 50%",
            "ArtifactIntegrityError: stored matrix of cohort does not match its registry checksum")


@dataclass(frozen=True)
class Sizes:
    """Rows of one lab."""

    users: int
    cohorts: int
    big_cohorts: int
    jobs: int
    encoders: int
    predictors: int
    evaluations: int
    predictions: int
    audit: int

    @classmethod
    def big_lab(cls, scale: float) -> Sizes:
        def n(count: int) -> int:
            return max(1, round(count * scale))

        made = n(300) + n(1000) + n(100)  # every encoder, predictor and evaluation has its job
        return cls(users=30, cohorts=max(3, n(300)), big_cohorts=2, jobs=max(n(5000), made), encoders=n(300),
                   predictors=n(1000), evaluations=n(100), predictions=n(50_000), audit=n(50_000))


SMALL_LAB = Sizes(users=3, cohorts=4, big_cohorts=0, jobs=20, encoders=3, predictors=6, evaluations=1,
                  predictions=40, audit=80)


class User(NamedTuple):
    id: str
    name: str
    key_id: str


@dataclass
class CohortSamples:
    """A generated cohort's sample ids in stored order and each label column's values."""

    ids: list[str]
    labels: dict[str, list[str]]


@dataclass
class Lab:
    """One lab's generated rows, kept while later rows refer to them; ``rng`` draws every value."""

    id: str
    token: str
    users: list[User]
    rng: random.Random
    cohorts: list[Row] = field(default_factory=list)
    samples: dict[str, CohortSamples] = field(default_factory=dict)
    jobs: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    encoders: list[Row] = field(default_factory=list)
    predictors: list[Row] = field(default_factory=list)
    evaluations: list[Row] = field(default_factory=list)
    audit: list[Row] = field(default_factory=list)

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def moment(self, after: datetime = START) -> datetime:
        """A time between ``after`` and END, uniformly."""
        return after + (END - after) * self.rng.random()

    def created(self, state: orm.JobState, after: datetime) -> datetime:
        """When a job now in ``state`` was created: an unfinished one within the last six hours."""
        if state in (orm.JobState.QUEUED, orm.JobState.RUNNING):
            return max(after, END - timedelta(hours=6 * self.rng.random()))
        return self.moment(after)

    def sha256(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    def record(self, action: str, object_type: str, object_id: str, details: Row, at: datetime, user: User) -> None:
        """An audit event, as ``app.auth.service.record`` writes it."""
        self.audit.append({"lab_id": self.id, "user_id": user.id, "key_id": user.key_id, "action": action,
                           "object_type": object_type, "object_id": object_id, "details": details, "at": at})


# ---- helpers


def chunked_insert(session: Session, table: type[orm.Base], rows: Sequence[Row], size: int = 1000) -> None:
    for start in range(0, len(rows), size):
        session.execute(insert(table), rows[start:start + size])


def gene_name(i: int) -> str:
    return f"ENSG{i:011d}"


def weighted_classes(rng: random.Random, names: Sequence[str]) -> tuple[list[str], list[float]]:
    """Some of ``names`` with skewed weights (a few common classes, a long tail)."""
    chosen = rng.sample(list(names), rng.randint(2, len(names)))
    return chosen, [rng.random() ** 2 + 0.01 for _ in chosen]


def curve(rng: random.Random, epochs: int, start: float, floor: float) -> list[float]:
    """A loss curve: exponential decay from ``start`` towards ``floor``, with noise."""
    tau = max(1.0, epochs / rng.uniform(3, 8))
    return [floor + (start - floor) * math.exp(-e / tau) + rng.gauss(0, 0.02 * floor) for e in range(epochs)]


# ---- users and labs


def make_lab(session: Session, rng: random.Random, name: str, n_users: int) -> Lab:
    """A lab and its users, the first its admin, each with an API key made by the app's auth service."""
    lab = Lab(f"{rng.getrandbits(128):032x}", "", [], rng)
    session.add(orm.Lab(id=lab.id, name=name, created_at=START))
    admin: auth.Caller | None = None
    for i in range(n_users):
        role = orm.Role.MEMBER if admin else orm.Role.ADMIN
        user = orm.User(id=lab.new_id(), lab_id=lab.id, name=f"user{i}" if admin else "admin", role=role,
                        created_at=START + timedelta(days=i))
        session.add(user)
        session.flush()
        admin = admin or auth.Caller.of(user, "bench")
        key, token = auth.create_key(session, admin, user_id=user.id, name="laptop")
        lab.token = lab.token or token
        lab.users.append(User(user.id, user.name, key.id))
        created = ("lab.create", "lab", lab.id, {"admin": user.name}) if role is orm.Role.ADMIN else \
            ("user.create", "app_user", user.id, {"name": user.name, "role": role.value})
        lab.record(*created, user.created_at, lab.users[0])
    return lab


# ---- cohorts and samples


def sample_labels(rng: random.Random, index: int, n: int, grouped: bool) -> tuple[list[Row], CohortSamples]:
    """Samples of cohort ``index``: TCGA-like barcodes, two per patient (tumour, normal or metastatic)."""
    classes, weights = weighted_classes(rng, CANCER_TYPES)
    cancer = rng.choices(classes, weights, k=n)
    kinds = rng.choices(list(TISSUE), [8, 2, 1], k=n)
    rows, ids = [], []
    for p in range(n):
        patient = f"TCGA-{index:03X}-{p // 2:05d}"
        sample_id = f"{patient}-{kinds[p]}-{p % 2}"
        labels = {"cancer_type": cancer[p], "tissue": TISSUE[kinds[p]], **({"patient": patient} if grouped else {})}
        rows.append({"position": p, "sample_id": sample_id, "group_id": patient if grouped else None,
                     "labels": labels})
        ids.append(sample_id)
    return rows, CohortSamples(ids, {"cancer_type": cancer, "tissue": [TISSUE[k] for k in kinds]})


def label_summary(samples: CohortSamples) -> list[Row]:
    """As ``app.cohorts.service.summarise_labels``: per column, samples labelled and each value's count."""
    return [{"name": name, "n_labelled": len(values), "classes": dict(Counter(values).most_common())}
            for name, values in samples.labels.items()]


def gene_resolution(rng: random.Random, id_type: str, merged: Row) -> Row:
    """As ``app.cohorts.service.resolution_report``."""
    n_unresolved = rng.randint(0, 60 if id_type == "ensembl" else 400)
    ambiguous = [] if id_type == "ensembl" else [
        {"name": f"MARCH{i}", "candidates": [{"key": str(55016 + i), "symbol": f"MARCHF{i}"},
                                             {"key": str(79139 + i), "symbol": f"DERL{i}"}]}
        for i in range(rng.randint(0, 8))]
    resolved = N_GENES - n_unresolved
    by_alias, by_previous = resolved // 100, resolved // 100
    rules = {"ensembl": resolved} if id_type == "ensembl" else {
        "symbol": resolved - by_alias - by_previous, "alias": by_alias, "previous_symbol": by_previous}
    return {
        "version": gene_table_version(), "n_columns": N_GENES, "n_resolved": resolved, "rules": rules,
        "n_ambiguous": len(ambiguous), "ambiguous": ambiguous, "n_unresolved": n_unresolved,
        "unresolved": [f"LOC{100_000 + i}" for i in range(min(n_unresolved, 50))], "merged": merged,
        "ensembl_alternates": {"n_groups": 0, "groups": {}, "note": "distinct Ensembl genes (alternate "
                               "haplotypes, patches) of one NCBI gene: kept apart, each keyed by its Ensembl id"},
    }


def value_report(rng: random.Random, kind: str, n_cells: int) -> Row:
    zeros = int(n_cells * rng.uniform(0.05, 0.4)) if kind != "log" else 0
    maximum = {"counts": float(rng.randint(10**5, 10**7)), "tpm": rng.uniform(1e4, 1e5), "log": rng.uniform(14, 20)}
    return {"kind": kind, "source": "detected", "minimum": 0.0 if kind != "log" else rng.uniform(0, 3),
            "maximum": maximum[kind], "integers": kind == "counts", "n_negative": 0, "n_zero": zeros,
            "zero_fraction": round(zeros / n_cells, 6)}


def ingest_report(rng: random.Random, n_samples: int, id_type: str, value_kind: str, orientation: str) -> Row:
    """As ``app.cohorts.service`` writes it: how the upload was read."""
    summed = rng.random() < 0.1
    n_groups = rng.randint(1, 120) if summed else 0
    groups = {gene_name(i): [f"{gene_name(i)}.{v}" for v in (1, 2)] for i in range(n_groups)}
    merged = {"policy": "sum" if summed else "refuse", "n_groups": len(groups),
              "n_genes_merged": 2 * len(groups), "groups": dict(list(groups.items())[:50])}
    file_format = rng.choice(["csv", "tsv", "parquet", "h5ad"])
    examples = [gene_name(i) for i in range(3)] if id_type == "ensembl" else ["TSPAN6", "TNMD", "DPM1"]
    return {
        "format": file_format, "bytes": n_samples * N_GENES * (2 if file_format in ("parquet", "h5ad") else 7),
        "orientation": orientation, "orientation_source": "detected", "skipped_columns": [],
        "gene_ids": {"id_type": id_type, "share": 1.0, "kinds": {id_type: N_GENES},
                     "n_versioned": N_GENES if id_type == "ensembl" else 0, "examples": {id_type: examples}},
        "duplicate_genes": merged, "labels": "file", "gene_resolution": gene_resolution(rng, id_type, merged),
        "values": value_report(rng, value_kind, n_samples * N_GENES),
    }


GENE_KEYS = {"keys": [str(1 + 3 * i) for i in range(N_GENES)], "merged": {}}  # NCBI gene ids, one per column


def cohort_row(lab: Lab, index: int, samples: CohortSamples, grouped: bool, user: User) -> Row:
    rng, n_samples = lab.rng, len(samples.ids)
    id_type = "ensembl" if rng.random() < 0.8 else "symbol"
    value_kind = rng.choice(["counts", "counts", "tpm", "log"])
    orientation = rng.choice(["samples_as_rows", "genes_as_rows"])
    checksum = lab.sha256()
    names = [gene_name(i) for i in range(20)] if id_type == "ensembl" else [f"GENE{i}" for i in range(20)]
    return {
        "id": lab.new_id(), "lab_id": lab.id, "created_by": user.id,
        "name": f"tcga-{index:03d}" if n_samples >= BIG_COHORT else f"cohort-{index:03d}",
        "source_filename": f"cohort_{index:03d}.{rng.choice(['csv.gz', 'tsv', 'parquet', 'h5ad'])}",
        "n_samples": n_samples, "n_genes": N_GENES, "gene_id_type": id_type, "value_kind": value_kind,
        "value_kind_source": "detected", "orientation": orientation, "checksum": checksum,
        "storage_key": f"cohorts/{lab.id}/{checksum}.arrow", "duplicate_of": None,
        "label_columns": label_summary(samples), "group_column": "patient" if grouped else None,
        "n_groups": (n_samples + 1) // 2 if grouped else None, "genes_preview": names,
        "ingest": ingest_report(rng, n_samples, id_type, value_kind, orientation),
        "gene_table_version": gene_table_version(),
        "gene_keys": {**GENE_KEYS, "rules": [id_type] * N_GENES}, "created_at": lab.moment(),
    }


def fill_cohorts(session: Session, lab: Lab, sizes: Sizes) -> None:
    """Cohorts (lognormal sizes, the first ``big_cohorts`` of 10,000 samples) with their samples."""
    for index in range(sizes.cohorts):
        rng = lab.rng
        n = BIG_COHORT if index < sizes.big_cohorts else min(4000, max(20, int(rng.lognormvariate(5.5, 1.0))))
        grouped = rng.random() < 0.8
        samples, labelled = sample_labels(rng, index, n, grouped)
        user = rng.choice(lab.users)
        row = cohort_row(lab, index, labelled, grouped, user)
        session.execute(insert(orm.Cohort), [row])
        chunked_insert(session, orm.CohortSample, [{"cohort_id": row["id"], **s} for s in samples], 5000)
        details = {"name": row["name"], "n_samples": n, "n_genes": N_GENES, "checksum": row["checksum"]}
        lab.record("cohort.upload", "cohort", row["id"], details, row["created_at"], user)
        lab.cohorts.append(row)
        lab.samples[row["id"]] = labelled
    session.commit()


# ---- jobs and their events


def job_progress(rng: random.Random, kind: orm.JobKind, state: orm.JobState, total: int) -> Row:
    if state is orm.JobState.QUEUED:
        return {}
    epoch = total if state is orm.JobState.SUCCEEDED else rng.randint(1, total)
    if kind is orm.JobKind.EVALUATE:
        return {"stage": f"seed {rng.randint(0, 4)}, 1 of labels: scarf/finetune", "epoch": epoch,
                "total_epochs": total, "loss": None}
    stage = "pretrain" if kind is orm.JobKind.PRETRAIN else "fit"
    return {"stage": stage, "epoch": epoch, "total_epochs": total, "loss": rng.uniform(0.2, 5.0)}


def job_events(job: Row, user: User, cancelled_by: User | None) -> list[Row]:
    """Its history, as ``app.jobs.service`` and the runner append it."""
    def event(at: datetime, message: str, moved: tuple[str, str] | None = None) -> Row:
        return {"job_id": job["id"], "at": at, "from_state": moved[0] if moved else None,
                "to_state": moved[1] if moved else None, "message": message}

    state = job["state"].value
    events = [event(job["created_at"], f"queued by {user.name}")]
    if job["started_at"] is not None:
        events.append(event(job["started_at"], f"claimed by {job['worker_id']}", ("queued", "running")))
    if cancelled_by is not None:
        events.append(event(job["finished_at"], f"cancellation requested by {cancelled_by.name}"))
        events.append(event(job["finished_at"], f"cancelled at epoch {job['progress']['epoch']}", ("running", state)))
    elif job["finished_at"] is not None:
        events.append(event(job["finished_at"], job["error"] or f"running -> {state}", ("running", state)))
    return events


def add_job(lab: Lab, kind: orm.JobKind, params: Row, state: orm.JobState, total: int, after: datetime) -> Row:
    """A job of ``kind`` in ``state``, created after ``after``, with its events and audit events (creation,
    cancellation)."""
    rng, user, created = lab.rng, lab.rng.choice(lab.users), lab.created(state, after)
    started = None if state is orm.JobState.QUEUED else created + timedelta(seconds=rng.uniform(1, 600))
    ended = started is not None and state is not orm.JobState.RUNNING
    finished = started + timedelta(seconds=rng.uniform(30, 6 * 3600)) if started and ended else None
    job: Row = {
        "id": lab.new_id(), "lab_id": lab.id, "created_by": user.id, "kind": kind, "state": state, "params": params,
        "progress": job_progress(rng, kind, state, total), "attempts": 0 if started is None else 1,
        "cancel_requested": state is orm.JobState.CANCELLED,
        "error": rng.choice(FAILURES) if state is orm.JobState.FAILED else None,
        "worker_id": None if started is None else f"gpu-{rng.randint(1, 8)}:{rng.randint(100, 9999)}:1397",
        "created_at": created, "started_at": started, "finished_at": finished,
        "heartbeat_at": finished or (started and started + timedelta(seconds=rng.uniform(0, 3600))),
        "dispatched_at": created, "checkpoint": None,
    }
    if state is orm.JobState.RUNNING and kind is orm.JobKind.PRETRAIN:
        job["checkpoint"] = {"key": f"checkpoints/{job['id']}/1.pt", "sha256": lab.sha256(),
                             "epoch": job["progress"]["epoch"]}
    canceller = rng.choice(lab.users) if state is orm.JobState.CANCELLED else None
    lab.jobs.append(job)
    lab.events += job_events(job, user, canceller)
    lab.record(f"job.create.{kind.value}", "job", job["id"], dict(params), created, user)
    if canceller is not None and finished is not None:
        lab.record("job.cancel", "job", job["id"], {"kind": kind.value, "state": "running"}, finished, canceller)
    return job


def draw_state(rng: random.Random, *, ended: bool = False) -> orm.JobState:
    states = [s for s in JOB_STATES if not ended or s not in (orm.JobState.RUNNING, orm.JobState.QUEUED)]
    return rng.choices(states, [JOB_STATES[s] for s in states])[0]


def plan_deleted_models_jobs(lab: Lab, n: int) -> None:
    """Ended pretraining and fitting jobs whose encoder or predictor was deleted since."""
    for _ in range(n):
        rng = lab.rng
        cohort = rng.choice(lab.cohorts)
        kind = rng.choice([orm.JobKind.PRETRAIN, orm.JobKind.FIT, orm.JobKind.FIT])
        params: Row = ({"cohort_id": cohort["id"], "method": rng.choice(METHODS), "log1p": "auto"}
                       if kind is orm.JobKind.PRETRAIN else
                       {"cohort_id": cohort["id"], "head": rng.choice(list(Head)).value, "test_size": 0.2,
                        "calibration_size": 0.2})
        job = add_job(lab, kind, params, draw_state(rng, ended=True), 100, cohort["created_at"])
        table = "encoder" if kind is orm.JobKind.PRETRAIN else "predictor"
        deleted_at = lab.moment(job["finished_at"] or job["created_at"])
        lab.record(f"{table}.delete", table, lab.new_id(), {"name": f"{table}-{job['id'][:6]}", "force": False,
                   "counts": {}, "deleted": []}, deleted_at, rng.choice(lab.users))


# ---- encoders


def encoder_row(lab: Lab, cohort: Row, parent: Row | None) -> Row:
    rng = lab.rng
    method = parent["method"] if parent else rng.choice(METHODS)
    epochs = rng.choice([100, 200, 500, 1000])
    params = encoder_params(method, {"epochs": epochs})
    job_params: Row = {"cohort_id": cohort["id"], "method": method, "log1p": "auto"}
    if parent:
        job_params |= {"continue_from": parent["id"], "standardise_on": "cohort"}
    after = max(cohort["created_at"], parent["created_at"] if parent else START)
    job = add_job(lab, orm.JobKind.PRETRAIN, job_params, draw_state(rng), epochs, after)
    name = f"{parent['name']}+{cohort['name']}" if parent else f"{method}-{cohort['name']}"
    row = {"id": lab.new_id(), "lab_id": lab.id, "name": name[: orm.NAME_LENGTH], "method": method,
           "params": params, "seed": 0, "cohort_id": cohort["id"], "parent_encoder_id": parent and parent["id"],
           "job_id": job["id"], "status": STATUS[job["state"]], "n_genes": N_GENES, "version": 1,
           "preprocessing": {"log1p": "auto"}, "loss_curve": [], "artifact_key": None, "artifact_sha256": None,
           "gene_table_version": None, "created_at": job["created_at"]}
    if row["status"] is orm.ArtifactStatus.READY:
        row |= trained_encoder(lab, row, cohort, parent, epochs)
    return row


def trained_encoder(lab: Lab, row: Row, cohort: Row, parent: Row | None, epochs: int) -> Row:
    """What the pretraining pipeline records."""
    log1p = cohort["value_kind"] in ("counts", "tpm")
    preprocessing: Row = {"log1p": log1p, "requested_log1p": "auto",
                          "standardise": "per-gene mean/std of the pretraining cohort",
                          "n_samples": cohort["n_samples"], "pretraining_cohorts": [cohort["id"]]}
    if parent:
        preprocessing |= {
            "standardise_on": "cohort", "continued_from": parent["id"],
            "standardise": "per-gene mean/std of this cohort; panel genes it lacks keep the parent encoder's",
            "pretraining_cohorts": [*parent["preprocessing"]["pretraining_cohorts"], cohort["id"]],
            "alignment": {"n_panel": N_GENES, "n_found": N_GENES, "n_missing": 0, "n_extra": 0, "coverage": 1.0,
                          "missing": [], "extra": [], "n_matched_directly": N_GENES, "n_matched_by_conversion": 0,
                          "conversions": []},
        }
    return {"preprocessing": preprocessing, "loss_curve": curve(lab.rng, epochs, 6.0, lab.rng.uniform(1, 4)),
            "artifact_key": f"encoders/{row['id']}/{lab.new_id()}.pt", "artifact_sha256": lab.sha256(),
            "gene_table_version": gene_table_version()}


def plan_encoders(lab: Lab, n: int) -> None:
    """Encoders, one in ten continued from an earlier ready one; versions count encoders of one name."""
    versions: Counter[str] = Counter()
    for _ in range(n):
        ready = [e for e in lab.encoders if e["status"] is orm.ArtifactStatus.READY]
        parent = lab.rng.choice(ready) if ready and lab.rng.random() < 0.1 else None
        row = encoder_row(lab, lab.rng.choice(lab.cohorts), parent)
        versions[row["name"]] += 1
        row["version"] = versions[row["name"]]
        lab.encoders.append(row)


# ---- predictors


def split_of(lab: Lab, cohort: Row, label_column: str, fraction: float) -> tuple[Row, list[str], list[str]]:
    """As the fitting pipeline records it; also the test split's true labels and the classes."""
    rng, samples = lab.rng, lab.samples[cohort["id"]]
    order = list(range(len(samples.ids)))
    rng.shuffle(order)
    n_test = max(1, round(0.2 * len(order)))
    test, pool = order[:n_test], order[n_test:]
    n_cal = max(1, round(0.2 * len(pool)))
    calibration, fit_pool = pool[:n_cal], pool[n_cal:]
    train = fit_pool[: max(2, round(fraction * len(fit_pool)))]
    labels = samples.labels[label_column]
    classes = sorted(set(labels))

    def counts(part: list[int]) -> Row:
        found = Counter(labels[i] for i in part)
        return {c: found[c] for c in classes}

    split = {
        "test_size": 0.2, "calibration_size": 0.2, "grouped_by": cohort["group_column"],
        "n_labelled": len(order), "n_train_pool": len(pool), "n_calibration": len(calibration),
        "n_train": len(train), "n_test": len(test), "dropped_classes": {},
        "class_counts": {"train": counts(train), "calibration": counts(calibration), "test": counts(test)},
        "gene_panel": {"n_genes": N_GENES, "sha256": hashlib.sha256(cohort["id"].encode()).hexdigest(),
                       "first": cohort["genes_preview"][:10]},
        "train_sample_ids": [samples.ids[i] for i in train],
        "calibration_sample_ids": [samples.ids[i] for i in calibration],
        "test_sample_ids": [samples.ids[i] for i in test],
    }
    return split, [labels[i] for i in test], classes


def metrics_of(rng: random.Random, truth: list[str], classes: list[str]) -> Row:
    """Test metrics as ``models.evaluation`` reports them, from a drawn confusion matrix."""
    skill = rng.uniform(0.4, 0.97)
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for label in truth:
        guess = index[label] if rng.random() < skill else rng.randrange(len(classes))
        matrix[index[label]][guess] += 1
    support = [sum(row) for row in matrix]
    predicted = [sum(col) for col in zip(*matrix, strict=True)]
    recall = [matrix[i][i] / support[i] if support[i] else 0.0 for i in range(len(classes))]
    precision = [matrix[i][i] / predicted[i] if predicted[i] else 0.0 for i in range(len(classes))]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]
    accuracy = sum(matrix[i][i] for i in range(len(classes))) / len(truth)
    balanced = statistics.fmean(r for r, s in zip(recall, support, strict=True) if s)
    return {
        "accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": statistics.fmean(f1),
        "auroc": min(1.0, 0.5 + skill / 2 + rng.uniform(0, 0.05)), "auroc_classes": sum(1 for s in support if s),
        "confusion_matrix": matrix,
        "per_class": {c: {"support": support[i], "recall": recall[i], "precision": precision[i]}
                      for i, c in enumerate(classes)},
        "n_samples": len(truth), "chance_accuracy": max(support) / len(truth),
        "bootstrap": {"accuracy": [accuracy * 0.9, min(1.0, accuracy * 1.1)],
                      "balanced_accuracy": [balanced * 0.88, min(1.0, balanced * 1.12)], "n_boot": 1000, "level": 0.95},
    }


def calibration_of(rng: random.Random, split: Row, n_classes: int, head: str) -> Row:
    """Temperature, test ECE/Brier/NLL, conformal coverage and the OOD scorer, as the fitting pipeline records."""
    def levels(low: float, high: float) -> Row:
        return {level: rng.uniform(low, high) for level in ("0.8", "0.9", "0.95")}

    before, after = rng.uniform(0.05, 0.3), rng.uniform(0.01, 0.1)
    temperature = rng.uniform(0.5, 2.5)
    return {
        "n_calibration": split["n_calibration"], "temperature": temperature, "temperature_fitted": True,
        "test": {"temperature": temperature, "n_bins": 15, "n_samples": split["n_test"], "ece_before": before,
                 "ece_after": after, "brier_before": before * 3, "brier_after": after * 3, "nll_before": before * 7,
                 "nll_after": after * 7},
        "conformal": {"method": "lac", "n_calibration": split["n_calibration"],
                      "max_finite_coverage": split["n_calibration"] / (split["n_calibration"] + 1),
                      "test_coverage": levels(0.78, 0.99), "test_mean_set_size": levels(1.0, n_classes / 2 + 1),
                      "test_share_single_label": levels(0.2, 0.9)},
        "ood": {"space": "input" if head == Head.LOGISTIC_REGRESSION else "embedding",
                "dim": 50 if head == Head.LOGISTIC_REGRESSION else 256, "n_classes": n_classes,
                "pca": head == Head.LOGISTIC_REGRESSION, "residual": False, "shrinkage": rng.uniform(0.01, 0.5),
                "n_reference": split["n_train_pool"], "percentile": 99.0, "test_flag_rate": rng.uniform(0, 0.03)},
    }


def predictor_row(lab: Lab, head: Head, encoder: Row | None, cohort: Row) -> Row:
    rng = lab.rng
    label_column = rng.choice(["cancer_type", "cancer_type", "tissue"])
    params = head_params(head, {})
    fraction = rng.choice([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.0, 1.0])
    job_params = {"cohort_id": cohort["id"], "head": head.value, "test_size": 0.2, "calibration_size": 0.2}
    max_epochs = params.get("max_epochs")
    total = max_epochs if isinstance(max_epochs, int) else 1  # logistic regression: one step
    after = max(cohort["created_at"], encoder["created_at"] if encoder else START)
    job = add_job(lab, orm.JobKind.FIT, job_params, draw_state(rng), total, after)
    row = {"id": lab.new_id(), "lab_id": lab.id, "name": f"{head.value}-{label_column}", "head": head.value,
           "encoder_id": encoder and encoder["id"], "cohort_id": cohort["id"], "job_id": job["id"],
           "label_column": label_column, "label_fraction": fraction, "params": params, "seed": rng.randint(0, 4),
           "status": STATUS[job["state"]], "classes": [], "split": {}, "metrics": {}, "calibration": {},
           "environment": {}, "loss_curve": [], "artifact_key": None, "artifact_sha256": None,
           "gene_table_version": None, "created_at": job["created_at"]}
    if row["status"] is orm.ArtifactStatus.READY:
        row |= fitted_predictor(lab, row, cohort, total)
    return row


def fitted_predictor(lab: Lab, row: Row, cohort: Row, max_epochs: int) -> Row:
    """What the fitting pipeline records."""
    rng = lab.rng
    split, truth, classes = split_of(lab, cohort, row["label_column"], row["label_fraction"])
    epochs = 0 if row["head"] == Head.LOGISTIC_REGRESSION else rng.randint(min(15, max_epochs), max_epochs)
    return {"classes": classes, "split": split, "metrics": metrics_of(rng, truth, classes),
            "calibration": calibration_of(rng, split, len(classes), row["head"]), "environment": environment(),
            "loss_curve": curve(rng, epochs, 3.0, rng.uniform(0.05, 1.0)),
            "artifact_key": f"predictors/{row['id']}/{lab.new_id()}.pt", "artifact_sha256": lab.sha256(),
            "gene_table_version": gene_table_version()}


def plan_predictors(lab: Lab, n: int) -> None:
    """Predictors: a quarter the encoder-free baseline, the rest a head on a ready encoder, half of those
    fitted on the encoder's own cohort."""
    ready = [e for e in lab.encoders if e["status"] is orm.ArtifactStatus.READY]
    by_id = {c["id"]: c for c in lab.cohorts}
    for i in range(n):
        rng = lab.rng
        encoder = rng.choice(ready) if ready and i % 4 else None
        head = rng.choice([Head.LINEAR_PROBE, Head.FINETUNE]) if encoder else Head.LOGISTIC_REGRESSION
        cohort = by_id[encoder["cohort_id"]] if encoder and rng.random() < 0.5 else rng.choice(lab.cohorts)
        lab.predictors.append(predictor_row(lab, head, encoder, cohort))


# ---- evaluations


def protocol_runs(rng: random.Random, config: Row, n_labelled: int, n_classes: int) -> list[Row]:
    """One run per model (baselines, then method/head), label fraction and seed, as ``models.protocol``."""
    models = [*config["baselines"], *(f"{m}/{h}" for m in config["methods"] for h in config["heads"])]
    n_test = round(config["test_size"] * n_labelled)
    runs = []
    for seed in range(config["n_seeds"]):
        for fraction in config["fractions"]:
            for model in models:
                accuracy = min(1.0, rng.uniform(0.4, 0.8) + 0.2 * fraction)
                runs.append({"model": model, "fraction": fraction, "seed": seed,
                             "n_train": max(2, round(fraction * (n_labelled - n_test))), "n_test": n_test,
                             "seconds": rng.uniform(0.5, 120), "accuracy": accuracy,
                             "balanced_accuracy": accuracy * 0.95, "macro_f1": accuracy * 0.9,
                             "auroc": min(1.0, accuracy + 0.1), "auroc_classes": n_classes})
    return runs


def evaluation_timings(lab: Lab, config: Row, cohort: Row, runs: list[Row]) -> Row:
    samples, rng = lab.samples[cohort["id"]], lab.rng
    splits = []
    for seed in range(config["n_seeds"]):
        order = rng.sample(samples.ids, len(samples.ids))
        n_test = round(config["test_size"] * len(order))
        splits.append({"seed": seed, "test_sample_ids": order[:n_test], "train_pool_sample_ids": order[n_test:],
                       "unlabelled_left_out_sample_ids": [], "n_unlabelled_used": 0})
    seconds: defaultdict[str, float] = defaultdict(float)
    for run in runs:
        seconds[run["model"]] += run["seconds"]
    return {"seconds": {**{f"{m}/pretrain": rng.uniform(60, 3600) for m in config["methods"]}, **seconds},
            "notes": {}, "splits": splits, "classes": sorted(set(samples.labels["cancer_type"])),
            "dropped_classes": {}, "n_labelled": len(samples.ids), "n_unlabelled": 0}


def plan_evaluations(lab: Lab, n: int) -> None:
    """Label-efficiency studies with the protocol's defaults (3 methods x 2 heads, 3 baselines, 7 fractions,
    5 seeds: 315 runs)."""
    for _ in range(n):
        rng = lab.rng
        cohort = rng.choice(lab.cohorts)
        request = EvaluationCreate(cohort_id=cohort["id"], label_column="cancer_type")
        config = request.model_dump(exclude={"cohort_id", "label_column", "name"})
        config["fractions"] = sorted(set(config["fractions"]))
        job = add_job(lab, orm.JobKind.EVALUATE, {"cohort_id": cohort["id"]}, draw_state(rng), 315,
                      cohort["created_at"])
        row = {"id": lab.new_id(), "lab_id": lab.id, "name": "label-efficiency-cancer_type",
               "cohort_id": cohort["id"], "job_id": job["id"], "label_column": "cancer_type",
               "status": STATUS[job["state"]], "config": config, "runs": [], "summary": [], "label_savings": {},
               "timings": {}, "created_at": job["created_at"]}
        if row["status"] is orm.ArtifactStatus.READY:
            runs = protocol_runs(rng, config, cohort["n_samples"], len(cohort["label_columns"][0]["classes"]))
            summary = summarise(runs)
            row |= {"runs": runs, "summary": summary, "label_savings": label_savings(summary),
                    "timings": evaluation_timings(lab, config, cohort, runs)}
        lab.evaluations.append(row)


# ---- predictions


def coverage_report(rng: random.Random) -> Row:
    """As ``models.genes.AlignmentReport`` with the imputation fields: most clients send the panel as is."""
    missing = 0 if rng.random() < 0.7 else rng.randint(1, 3000)
    by_symbol = rng.random() < 0.2
    return {"n_panel": N_GENES, "n_found": N_GENES - missing, "n_missing": missing, "n_extra": missing // 2,
            "coverage": (N_GENES - missing) / N_GENES, "missing": [gene_name(i) for i in range(min(missing, 50))],
            "extra": [f"LOC{100_000 + i}" for i in range(min(missing // 2, 50))],
            "n_matched_directly": 0 if by_symbol else N_GENES - missing,
            "n_matched_by_conversion": N_GENES - missing if by_symbol else 0,
            "conversions": [{"input": f"GENE{i}", "panel": gene_name(i)} for i in range(50)] if by_symbol else [],
            "imputed": missing, "imputation": "mean",
            "warning": "coverage below 90%: mean imputation" if missing > N_GENES // 10 else None,
            "gene_table_version": gene_table_version(), "gene_table_note": None}


def sample_results(rng: random.Random, ids: Sequence[str], classes: list[str]) -> list[Row]:
    """Per sample: label (or "uncertain"), top label, probabilities, prediction set, OOD score and flag."""
    results = []
    for sample_id in ids:
        weights = [rng.random() ** 3 for _ in classes]
        total = sum(weights)
        probabilities = {c: w / total for c, w in zip(classes, weights, strict=True)}
        ranked = sorted(classes, key=probabilities.__getitem__, reverse=True)
        prediction_set = ranked[: 1 if rng.random() < 0.7 else rng.randint(2, len(ranked))]
        ood = rng.uniform(0, 100)
        results.append({"sample_id": sample_id, "label": ranked[0] if len(prediction_set) == 1 else "uncertain",
                        "top_label": ranked[0], "probabilities": probabilities, "prediction_set": prediction_set,
                        "ood_score": rng.uniform(0.2, 3.0), "ood_percentile": ood, "ood_flag": ood > 99.0})
    return results


def prediction_row(lab: Lab, predictor: Row) -> Row:
    """Mostly a handful of inline samples; one in a hundred a whole cohort of the lab."""
    rng = lab.rng
    cohort = rng.choice(lab.cohorts) if rng.random() < 0.01 else None
    ids = lab.samples[cohort["id"]].ids if cohort else [f"patient-{rng.randint(1, 99_999)}"
                                                          for _ in range(rng.choice([1, 1, 1, 2, 5, 10, 20]))]
    results = sample_results(rng, ids, predictor["classes"])
    flagged = sum(r["ood_flag"] for r in results) / len(results)
    uncertain = sum(r["label"] == "uncertain" for r in results) / len(results)
    drift = None if len(ids) < 2 else {
        "n_samples": len(ids), "share_flagged": flagged,
        "reference": "training samples" if predictor["encoder_id"] is None else "encoder's pretraining cohort",
        "n_genes_compared": N_GENES, "mean_abs_smd": rng.uniform(0, 1),
        "top_genes": [{"gene": gene_name(rng.randrange(N_GENES)), "smd": rng.uniform(1, 5), "batch_mean": 6.0,
                       "reference_mean": 5.0, "reference_std": 0.5} for _ in range(20)]}
    return {
        "id": lab.new_id(), "lab_id": lab.id, "predictor_id": predictor["id"], "cohort_id": cohort and cohort["id"],
        "n_samples": len(ids), "coverage": coverage_report(rng), "results": results,
        "uncertainty": {"coverage": 0.9, "conformal_method": "lac",
                        "n_calibration": predictor["split"]["n_calibration"], "threshold": rng.uniform(0.5, 0.99),
                        "temperature": predictor["calibration"]["temperature"], "ood_space":
                        predictor["calibration"]["ood"]["space"], "ood_percentile": 99.0, "share_flagged": flagged,
                        "share_uncertain": uncertain, "mean_set_size": statistics.fmean(
                            len(r["prediction_set"]) for r in results), "notes": []},
        "drift": drift, "gene_table_version": gene_table_version(),
        "created_at": lab.moment(max(predictor["created_at"], cohort["created_at"] if cohort else START)),
    }


def fill_predictions(session: Session, lab: Lab, n: int, batch: int = 1000) -> None:
    """Predictions by ready predictors, a few busy ones taking most (Zipf-like), inserted and committed in batches."""
    ready = [p for p in lab.predictors if p["status"] is orm.ArtifactStatus.READY]
    weights = [1 / (rank + 1) for rank in range(len(ready))]
    for start in range(0, n, batch):
        chosen = lab.rng.choices(ready, weights, k=min(batch, n - start))
        chunked_insert(session, orm.Prediction, [prediction_row(lab, p) for p in chosen], 200)
        session.commit()


# ---- audit log


def fill_audit(session: Session, lab: Lab, n: int) -> None:
    """The audit events the rows above made, then admin logins (and one old, rare user.update) up to ``n``."""
    rng = lab.rng
    lab.record("user.update", "app_user", lab.users[-1].id, {"name": lab.users[-1].name, "disabled": False},
               START, lab.users[0])
    for _ in range(max(0, n - len(lab.audit))):
        at = lab.moment()
        lab.record("admin.login", "admin_session", lab.new_id(), {"expires_at": (at + timedelta(hours=12)).isoformat()},
                   at, rng.choice(lab.users))
    chunked_insert(session, orm.AuditEvent, lab.audit, 5000)
    session.commit()


# ---- one lab


def fill_lab(session: Session, lab: Lab, sizes: Sizes) -> None:
    """Every table of one lab, in foreign-key order."""
    fill_cohorts(session, lab, sizes)
    plan_encoders(lab, sizes.encoders)
    plan_predictors(lab, sizes.predictors)
    plan_evaluations(lab, sizes.evaluations)
    plan_deleted_models_jobs(lab, sizes.jobs - len(lab.jobs))
    for table, rows in ((orm.Job, lab.jobs), (orm.JobEvent, lab.events), (orm.Encoder, lab.encoders),
                        (orm.Predictor, lab.predictors), (orm.Evaluation, lab.evaluations)):
        chunked_insert(session, table, rows, 100)
    session.commit()
    fill_predictions(session, lab, sizes.predictions)
    fill_audit(session, lab, sizes.audit)


def fill(scale: float) -> Lab:
    """Both labs; returns the big one."""
    rng, sizes = random.Random(SEED), Sizes.big_lab(scale)
    with session_factory()() as session:
        big = make_lab(session, rng, "big-lab", sizes.users)
        small = make_lab(session, rng, "small-lab", SMALL_LAB.users)
        fill_lab(session, big, sizes)
        fill_lab(session, small, SMALL_LAB)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE"))
            session.commit()
    return big


# ---- measuring


class Statement(NamedTuple):
    ms: float
    sql: str
    parameters: Any
    many: bool


@dataclass
class StatementLog:
    """The SQL statements an engine runs while ``on``, each with its execute time in ms."""

    on: bool = False
    seen: list[Statement] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, _cursor: Any, _sql: str, _parameters: Any, _context: Any, _many: bool) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, many: bool) -> None:
        if self.on:
            ms = (time.perf_counter() - conn.info["bench_started"]) * 1000
            self.seen.append(Statement(ms, sql, parameters, many))


def full_ms(engine: Engine, statement: Statement, repeat: int = 3) -> float:
    """A read's time with its rows fetched as the app gets them (SQLite's execute only steps to the first row;
    psycopg's fetch decodes the JSON columns): the median of ``repeat`` runs after the request. Other
    statements keep their execute time."""
    if statement.many or not statement.sql.lstrip().upper().startswith(("SELECT", "WITH")):
        return statement.ms
    times = []
    with engine.connect() as connection:
        for _ in range(repeat):
            started = time.perf_counter()
            connection.exec_driver_sql(statement.sql, statement.parameters).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class Measured(NamedTuple):
    ms: float
    statements: int
    kib: float
    slowest: tuple[float, str]


def measure(client: TestClient, log: StatementLog, method: str, path: str, repeat: int, expect: int) -> Measured:
    """Median time of ``repeat`` requests; statements, size and slowest statement of the last (a read's
    statements run again to time their fetch too; a delete's as they ran, once)."""
    times = []
    for _ in range(repeat):
        log.seen.clear()
        log.on = True
        started = time.perf_counter()
        response = client.request(method, path)
        times.append((time.perf_counter() - started) * 1000)
        log.on = False
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    timed = [(full_ms(app_engine(), s) if method == "GET" else s.ms, " ".join(s.sql.split())) for s in log.seen]
    return Measured(statistics.median(times), len(log.seen), len(response.content) / 1024, max(timed, default=(0, "")))


@dataclass(frozen=True)
class Targets:
    """The big lab's rows the cases look at."""

    big_cohort: str
    small_cohort: str
    busiest_predictor: str
    busiest_encoder: str
    deleted_cohorts: list[tuple[str, int]]  # (id, samples)
    job: str
    evaluation: str
    user: str
    n_jobs: int
    n_audit: int


def deletable(session: Session, row: orm.Cohort | orm.Encoder) -> bool:
    """Whether no unfinished job holds up its forced delete (the app refuses it until they end)."""
    if isinstance(row, orm.Cohort):
        found = lineage.of_cohort(session, row)
        reads = lineage.unfinished_jobs(session, row.lab_id, found.job_ids(),
                                        reads=lambda job: job.params.get("cohort_id") == row.id)
        return not reads
    return not lineage.unfinished_jobs(session, row.lab_id, [row.job_id, *lineage.of_encoder(session, row).job_ids()])


def by_use(session: Session, column: Any, lab_id: str) -> list[str]:
    """Values of ``column`` (of a table with a lab_id) in the lab's rows, the most frequent first."""
    query = select(column).where(column.is_not(None), column.class_.lab_id == lab_id).group_by(column)
    return list(session.scalars(query.order_by(func.count().desc(), column)))


def targets(session: Session, lab: Lab) -> Targets:
    def count(table: Any, lab_id: Any) -> int:
        return session.scalar(select(func.count()).select_from(table).where(lab_id == lab.id)) or 0

    by_size = sorted(lab.cohorts, key=lambda c: (-c["n_samples"], c["id"]))
    encoders = (session.get_one(orm.Encoder, e) for e in by_use(session, orm.Predictor.encoder_id, lab.id))
    cohorts = (session.get_one(orm.Cohort, c["id"]) for c in by_size)
    ready = [p for p in lab.predictors if p["status"] is orm.ArtifactStatus.READY]
    return Targets(
        big_cohort=by_size[0]["id"], small_cohort=by_size[-1]["id"],
        busiest_predictor=by_use(session, orm.Prediction.predictor_id, lab.id)[0],
        busiest_encoder=next(e.id for e in encoders if deletable(session, e)),
        deleted_cohorts=[(c.id, c.n_samples) for c in cohorts if deletable(session, c)][:2],
        job=ready[0]["job_id"], user=lab.users[3].id,
        evaluation=next(e["id"] for e in lab.evaluations if e["status"] is orm.ArtifactStatus.READY),
        n_jobs=count(orm.Job, orm.Job.lab_id), n_audit=count(orm.AuditEvent, orm.AuditEvent.lab_id),
    )


def cases(t: Targets) -> list[tuple[str, str]]:
    """(case, path) of every read; deep pages are near the end of the big lab's rows."""
    big, pred, enc = t.big_cohort, t.busiest_predictor, t.busiest_encoder
    since = (END - timedelta(days=30)).date().isoformat()
    job_page, audit_page = max(1, math.ceil(t.n_jobs / 25)), max(1, math.ceil(t.n_audit / 100) - 10)
    return [
        ("GET /jobs", "/jobs"), ("GET /jobs limit=500", "/jobs?limit=500"),
        (f"GET /jobs offset={t.n_jobs - 100}", f"/jobs?offset={t.n_jobs - 100}"),
        ("GET /jobs state=failed", "/jobs?state=failed"), ("GET /jobs kind=evaluate", "/jobs?kind=evaluate"),
        ("GET /jobs user_id=..", f"/jobs?user_id={t.user}"), (f"GET /jobs since={since}", f"/jobs?since={since}"),
        ("GET /jobs/{id}", f"/jobs/{t.job}"),
        ("GET /cohorts", "/cohorts"), ("GET /cohorts limit=500", "/cohorts?limit=500"),
        ("GET /cohorts/{10k}", f"/cohorts/{big}"), ("GET /cohorts/{10k}/samples", f"/cohorts/{big}/samples"),
        ("GET /cohorts/{10k}/samples offset=9000", f"/cohorts/{big}/samples?offset=9000"),
        ("GET /cohorts/{10k}/samples limit=10000", f"/cohorts/{big}/samples?limit=10000"),
        ("GET /encoders", "/encoders"), ("GET /encoders limit=500", "/encoders?limit=500"),
        ("GET /encoders method=vime", "/encoders?method=vime"), ("GET /encoders/{busiest}", f"/encoders/{enc}"),
        ("GET /predictors", "/predictors"), ("GET /predictors limit=500", "/predictors?limit=500"),
        ("GET /predictors cohort_id={10k}", f"/predictors?cohort_id={big}"),
        ("GET /predictors label_column=tissue", "/predictors?label_column=tissue"),
        ("GET /predictors/{busiest}", f"/predictors/{pred}"),
        ("GET /predictors/{busiest}/card", f"/predictors/{pred}/card"),
        ("GET /predictors/{busiest}/predictions", f"/predictors/{pred}/predictions"),
        ("GET /predictors/{busiest}/predictions limit=500", f"/predictors/{pred}/predictions?limit=500"),
        ("GET /evaluations", "/evaluations"), ("GET /evaluations/{id}", f"/evaluations/{t.evaluation}"),
        ("GET /audit", "/audit"), (f"GET /audit offset={t.n_audit - 1000}", f"/audit?offset={t.n_audit - 1000}"),
        ("GET /audit action=user.update (rare)", "/audit?action=user.update"),
        ("GET /audit user_id=..", f"/audit?user_id={t.user}"), ("GET /users", "/users"), ("GET /keys", "/keys"),
        ("ADMIN /admin/jobs", "/admin/jobs"), (f"ADMIN /admin/jobs page={job_page}", f"/admin/jobs?page={job_page}"),
        ("ADMIN /admin/jobs state=failed", "/admin/jobs?state=failed"),
        ("ADMIN /admin/jobs/{id}", f"/admin/jobs/{t.job}"),
        ("ADMIN /admin/cohorts", "/admin/cohorts"), ("ADMIN /admin/cohorts/{10k}", f"/admin/cohorts/{big}"),
        ("ADMIN /admin/cohorts/{smallest}", f"/admin/cohorts/{t.small_cohort}"),
        ("ADMIN /admin/encoders", "/admin/encoders"), ("ADMIN /admin/encoders/{busiest}", f"/admin/encoders/{enc}"),
        ("ADMIN /admin/predictors", "/admin/predictors"),
        ("ADMIN /admin/predictors/{busiest}", f"/admin/predictors/{pred}"),
        ("ADMIN /admin/predictors/{busiest}/label-efficiency.svg", f"/admin/predictors/{pred}/label-efficiency.svg"),
        ("ADMIN /admin/users", "/admin/users"), ("ADMIN /admin/audit", "/admin/audit"),
        (f"ADMIN /admin/audit page={audit_page}", f"/admin/audit?page={audit_page}"),
        ("ADMIN /admin/audit action=user.update", "/admin/audit?action=user.update"),
    ]


def deletes(t: Targets) -> list[tuple[str, str]]:
    """Forced deletes of the busiest predictor and encoder and of the two largest cohorts (which the app would
    refuse while an unfinished job uses them: those are passed over)."""
    return [("DELETE /predictors/{busiest} force", f"/predictors/{t.busiest_predictor}?force=true"),
            ("DELETE /encoders/{busiest} force", f"/encoders/{t.busiest_encoder}?force=true"),
            *((f"DELETE /cohorts/{{{n:,} samples #{i}}} force", f"/cohorts/{c}?force=true")
              for i, (c, n) in enumerate(t.deleted_cohorts, 1))]


def table_row(case: str, m: Measured) -> str:
    statement = m.slowest[1][:80].replace("|", "\\|")
    return f"| {case} | {m.ms:.1f} | {m.statements} | {m.kib:.1f} | {m.slowest[0]:.1f} ms `{statement}` |"


# ---- databases and the header


@contextmanager
def own_postgres_database(url: str) -> Iterator[str]:
    """Create the database ``url`` names (refusing one that exists), yield its URL, drop it at the end."""
    target = make_url(url)
    target = target.set(database=target.database or "exprssl_bench_scale")
    server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = server.dialect.identifier_preparer.quote(target.database or "")
    try:
        with server.connect() as connection:
            exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
            if exists:
                raise SystemExit(f"database {target.database} exists; this benchmark creates its own: drop it or "
                                 "name another in --database-url")
            connection.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield target.render_as_string(hide_password=False)
        finally:
            with server.connect() as connection:
                connection.execute(text(f"DROP DATABASE {name}"))
    finally:
        server.dispose()


@contextmanager
def registry(url: str | None) -> Iterator[str]:
    """A fresh, migrated registry and the app configured on it (data folder: a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="exprssl-bench-") as tmp:
        sqlite = nullcontext(f"sqlite:///{Path(tmp) / 'registry.db'}")
        with (own_postgres_database(url) if url else sqlite) as database_url:
            os.environ.update(EXPRSSL_DATA_DIR=tmp, EXPRSSL_DATABASE_URL=database_url)
            get_settings.cache_clear()
            migrate(database_url)
            try:
                yield database_url
            finally:
                app_engine().dispose()  # its pooled connections would keep the database from being dropped


def app_engine() -> Engine:
    bound = session_factory().kw["bind"]
    assert isinstance(bound, Engine)
    return bound


def header(session: Session, scale: float, fill_s: float) -> str:
    tables = (("cohorts", orm.Cohort), ("samples", orm.CohortSample), ("jobs", orm.Job), ("job events", orm.JobEvent),
              ("encoders", orm.Encoder), ("predictors", orm.Predictor), ("evaluations", orm.Evaluation),
              ("predictions", orm.Prediction), ("audit events", orm.AuditEvent), ("users", orm.User))
    counts = ", ".join(f"{session.scalar(select(func.count()).select_from(t)):,} {name}" for name, t in tables)
    if session.get_bind().dialect.name == "postgresql":
        database = f"PostgreSQL {session.scalar(text('SHOW server_version'))}"
    else:
        database = f"SQLite {sqlite3.sqlite_version}"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return (f"Registry at --scale {scale:g} (two labs): {counts}. {database}, commit "
            f"{commit.stdout.strip() or 'unknown'}, filled in {fill_s:.0f} s; ms: median of 3 requests "
            "through TestClient (deletes: once); SQL statements, KiB and slowest statement: the last request.")


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    lab = fill(args.scale)
    fill_s = time.perf_counter() - started
    with session_factory()() as session:
        found = targets(session, lab)
        print(header(session, args.scale, fill_s) + "\n", flush=True)
    log = StatementLog()
    log.attach(app_engine())
    client = TestClient(create_app(), headers={"Authorization": f"Bearer {lab.token}"})
    login = client.post("/admin/login", data={"api_key": lab.token}, follow_redirects=False)
    assert login.status_code == 303, login.text  # the client keeps the session cookie for the admin pages
    print("| case | ms (median of 3) | SQL statements | KiB | slowest statement |")
    print("|---|---|---|---|---|")
    for case, path in cases(found):
        print(table_row(case, measure(client, log, "GET", path, 3, 200)), flush=True)
    for case, path in deletes(found) if args.deletes else []:
        print(table_row(case, measure(client, log, "DELETE", path, 1, 204)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="PostgreSQL URL of the database to create (and drop); default: "
                        "a SQLite file in a temporary directory")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the big lab's row counts")
    parser.add_argument("--deletes", action="store_true", help="also time forced deletes (after the reads)")
    args = parser.parse_args()
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url: a postgresql:// URL (SQLite is the default)")
    with registry(args.database_url):
        run(args)


if __name__ == "__main__":
    main()
