"""Fitting job: split a labelled cohort (by group when it has one), fit a head, score it on held-out data.

Splits, all group-aware: test (``test_size`` of the samples or groups) first; then a calibration split
(``calibration_size`` of the training pool) taken from the pool *before* the label-fraction subset, so its
size does not shrink with ``label_fraction`` and no head ever trains on it; then the label-fraction subset
of the rest, from which the torch heads carve their early-stopping validation split. The calibration split
fits the temperature and the conformal scores; the test split only measures.
"""

from __future__ import annotations

import hashlib
import platform
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import new_id
from app.errors import InvalidInput
from models import checkpoint
from models.classifiers import HeadParams, fit_encoder_classifier, fit_logistic_regression
from models.evaluation import (
    classification_metrics,
    label_fraction_subset,
    majority_baseline_accuracy,
    split_train_test,
    validation_split,
)
from models.gene_table import align_by_gene_key, gene_table_version
from models.preprocessing import Preprocessor
from models.uncertainty import (
    CALIBRATION_SHARE,
    bootstrap_intervals,
    calibration_split,
    fit_uncertainty,
    report_on_test,
)
from worker.context import JobContext, Recorder
from worker.pipelines.common import CohortData, load_cohort, require_coverage

MIN_CLASS_SIZE = 2


@dataclass(frozen=True)
class FitSpec:
    predictor_id: str
    cohort_id: str
    encoder_key: tuple[str, str] | None
    head: str
    label_column: str
    label_fraction: float
    test_size: float
    params: dict[str, Any]
    seed: int
    calibration_size: float = CALIBRATION_SHARE


@dataclass(frozen=True)
class LabelledSet:
    rows: np.ndarray  # positions in the cohort matrix
    y: np.ndarray  # class indices
    classes: list[str]
    groups: np.ndarray | None
    dropped: dict[str, int]


def _read_spec(ctx: JobContext) -> FitSpec:
    with ctx.session_factory() as session:
        p = session.scalars(select(orm.Predictor).where(orm.Predictor.job_id == ctx.job_id)).one()
        encoder_key = None
        if p.encoder_id is not None:
            encoder = session.get_one(orm.Encoder, p.encoder_id)
            if encoder.artifact_key is None or encoder.artifact_sha256 is None:
                raise InvalidInput(f"encoder {encoder.id} has no stored weights")
            encoder_key = (encoder.artifact_key, encoder.artifact_sha256)
        return FitSpec(
            p.id, p.cohort_id, encoder_key, p.head, p.label_column, p.label_fraction,
            float(str(ctx.params.get("test_size", 0.2))), dict(p.params), p.seed,
            float(str(ctx.params.get("calibration_size", CALIBRATION_SHARE))),
        )


def labelled_set(data: CohortData, label_column: str) -> LabelledSet:
    """Samples with a label, classes with at least ``MIN_CLASS_SIZE`` members (others reported as dropped)."""
    values = [labels.get(label_column) for labels in data.labels]
    counts = Counter(v for v in values if v is not None)
    classes = sorted(c for c, n in counts.items() if n >= MIN_CLASS_SIZE)
    dropped = {c: n for c, n in counts.items() if n < MIN_CLASS_SIZE}
    index = {c: i for i, c in enumerate(classes)}
    rows = np.array([i for i, v in enumerate(values) if v in index], dtype=np.int64)
    y = np.array([index[values[i]] for i in rows], dtype=np.int64)
    return LabelledSet(rows, y, classes, group_ids(data, rows), dropped)


def group_ids(data: CohortData, rows: np.ndarray) -> np.ndarray | None:
    """The group ids of matrix ``rows``, a sample without one its own group; None without a group column."""
    if data.group_column is None:
        return None
    return np.array([data.groups[i] or f"__sample_{i}" for i in rows], dtype=object)


def _fit_head(
    ctx: JobContext, spec: FitSpec, data: CohortData, labelled: LabelledSet, train: np.ndarray
) -> tuple[dict[str, Any], Preprocessor, Any, list[float]]:
    """Fit the requested head on ``train`` (indices into ``labelled``); return payload, preprocessing, model."""
    values, genes = data.matrix.values, data.matrix.genes
    rows_train = labelled.rows[train]
    meta = {"label_column": spec.label_column, "cohort_id": spec.cohort_id}
    if spec.encoder_key is None:
        preprocessor = Preprocessor.fit(values[rows_train], genes, log1p=data.log1p())
        pipeline = fit_logistic_regression(
            preprocessor.transform(values[rows_train]), labelled.y[train], C=spec.params["C"], seed=spec.seed
        )
        payload = checkpoint.logreg_payload(pipeline, preprocessor, labelled.classes, meta=meta)
        return payload, preprocessor, checkpoint.logreg_from_payload(payload)[0], []
    key, sha256 = spec.encoder_key
    artifact = ctx.store.get_bytes(key, sha256=sha256)
    encoder, preprocessor, _ = checkpoint.encoder_from_payload(checkpoint.loads(artifact))
    aligned, report = align_by_gene_key(values[rows_train], genes, preprocessor.genes)
    require_coverage(ctx, report, cohort_id=spec.cohort_id, model="the encoder", use="fitting")
    x = preprocessor.transform(aligned)
    y = labelled.y[train]
    groups = None if labelled.groups is None else labelled.groups[train]
    val = validation_split(y, groups, seed=spec.seed)
    params = HeadParams.from_dict(spec.params, linear_probe=spec.head == "linear_probe")
    classifier, losses = fit_encoder_classifier(
        encoder,
        x[val[0]] if val else x,
        y[val[0]] if val else y,
        x[val[1]] if val else None,
        y[val[1]] if val else None,
        len(labelled.classes),
        freeze_encoder=spec.head == "linear_probe",
        params=params,
        seed=spec.seed,
        on_epoch_end=lambda e, loss: ctx.report(e, loss, total_epochs=params.max_epochs, stage="fit"),
    )
    payload = checkpoint.classifier_payload(classifier, preprocessor, labelled.classes, head_kind=spec.head, meta=meta)
    return payload, preprocessor, classifier, losses


def _inputs(data: CohortData, rows: np.ndarray, preprocessor: Preprocessor) -> np.ndarray:
    """Cohort rows aligned to the predictor's panel by gene key and preprocessed (missing genes: training mean)."""
    matrix = data.matrix
    aligned, _ = align_by_gene_key(matrix.values[rows], matrix.genes, preprocessor.genes)
    return preprocessor.transform(aligned)


def _split_pool(spec: FitSpec, labelled: LabelledSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_pool, calibration, train, test)`` indices into ``labelled`` (see the module docstring)."""
    train_pool, test = split_train_test(labelled.y, labelled.groups, test_size=spec.test_size, seed=spec.seed)
    _require_every_class(spec, labelled, train_pool)
    groups = None if labelled.groups is None else labelled.groups[train_pool]
    fit_rel, cal_rel = calibration_split(
        labelled.y[train_pool], groups, share=spec.calibration_size, seed=spec.seed
    )
    fit_pool, calibration = train_pool[fit_rel], train_pool[cal_rel]
    train = fit_pool[label_fraction_subset(labelled.y[fit_pool], spec.label_fraction, seed=spec.seed)]
    return train_pool, calibration, train, test


def _require_every_class(spec: FitSpec, labelled: LabelledSet, train_pool: np.ndarray) -> None:
    """Refuse a test split that took every sample of a class (with groups, whole patients go: the request's
    check on class sizes cannot see that): the head would be scored on a class it never saw."""
    present = np.bincount(labelled.y[train_pool], minlength=len(labelled.classes))
    absent = [labelled.classes[c] for c in np.flatnonzero(present == 0)]
    if absent:
        grouped = " (its groups: whole patients go to one side)" if labelled.groups is not None else ""
        raise InvalidInput(
            f"the test split (test_size {spec.test_size:g}{grouped}) holds every sample of class(es) "
            f"{', '.join(map(repr, absent[:5]))} of {spec.label_column!r}, leaving none to train on: lower test_size"
        )


def _class_counts(labelled: LabelledSet, **parts: np.ndarray) -> dict[str, dict[str, int]]:
    """Samples per class in each named part of the split."""
    counts = {name: np.bincount(labelled.y[idx], minlength=len(labelled.classes)) for name, idx in parts.items()}
    return {name: dict(zip(labelled.classes, map(int, n), strict=True)) for name, n in counts.items()}


def gene_panel_snapshot(genes: list[str]) -> dict[str, Any]:
    """Size, sha256 of the newline-joined ordered ids, and the first ids of a gene panel."""
    digest = hashlib.sha256("\n".join(genes).encode()).hexdigest()
    return {"n_genes": len(genes), "sha256": digest, "first": genes[:10]}


def environment() -> dict[str, str]:
    """Versions of the libraries a predictor is fitted with."""
    versions = {"python": platform.python_version()}
    for name in ("exprssl", "torch", "scikit-learn", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def run(ctx: JobContext) -> Recorder:
    """Fit the predictor row attached to this job; return its recorder."""
    spec = _read_spec(ctx)
    data = load_cohort(ctx, spec.cohort_id)
    labelled = labelled_set(data, spec.label_column)
    train_pool, calibration, train, test = _split_pool(spec, labelled)
    payload, preprocessor, model, losses = _fit_head(ctx, spec, data, labelled, train)
    rows_test = labelled.rows[test]
    x_test = _inputs(data, rows_test, preprocessor)
    proba = model.predict_proba(x_test)
    metrics = classification_metrics(labelled.y[test], proba, labelled.classes)
    metrics["chance_accuracy"] = majority_baseline_accuracy(labelled.y[test])
    metrics["bootstrap"] = bootstrap_intervals(labelled.y[test], proba, seed=spec.seed)
    state = fit_uncertainty(
        model,
        _inputs(data, labelled.rows[train], preprocessor),
        labelled.y[train],
        _inputs(data, labelled.rows[calibration], preprocessor),
        labelled.y[calibration],
        seed=spec.seed,
    )
    payload["uncertainty"] = state.to_dict()
    calibration_summary = report_on_test(state, model, x_test, labelled.y[test], n_calibration=calibration.size)
    ids = data.matrix.sample_ids
    split = {
        "test_size": spec.test_size,
        "calibration_size": spec.calibration_size,
        "grouped_by": data.group_column,
        "n_labelled": int(labelled.rows.size),
        "n_train_pool": int(train_pool.size),
        "n_calibration": int(calibration.size),
        "n_train": int(train.size),
        "n_test": int(test.size),
        "dropped_classes": labelled.dropped,
        "class_counts": _class_counts(labelled, train=train, calibration=calibration, test=test),
        "gene_panel": gene_panel_snapshot(preprocessor.genes),
        "train_sample_ids": [ids[i] for i in labelled.rows[train]],
        "calibration_sample_ids": [ids[i] for i in labelled.rows[calibration]],
        "test_sample_ids": [ids[i] for i in rows_test],
    }
    key = f"predictors/{spec.predictor_id}/{new_id()}.pt"
    sha256 = ctx.put_artifact(key, checkpoint.dumps(payload))
    version = gene_table_version()

    def record(session: Session) -> None:
        row = session.get_one(orm.Predictor, spec.predictor_id)
        row.status = orm.ArtifactStatus.READY
        row.classes, row.split, row.metrics = labelled.classes, split, metrics
        row.calibration, row.environment = calibration_summary, environment()
        row.loss_curve = [float(v) for v in losses]
        row.artifact_key, row.artifact_sha256 = key, sha256
        row.gene_table_version = version

    return record
