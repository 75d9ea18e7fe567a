"""Prediction use case: align input genes to a predictor's panel, predict, keep the result."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cohorts import parsing
from app.cohorts import repository as cohorts
from app.config import Settings
from app.db import orm
from app.errors import Conflict, InvalidInput, NotFound
from app.predictions.schemas import PredictionCreate
from app.predictors import service as predictors
from app.storage import ArtifactStore
from models import checkpoint
from models.genes import align_to_panel
from models.preprocessing import Preprocessor


@dataclass(frozen=True)
class LoadedPredictor:
    """A predictor artifact loaded for inference: ``predict_proba`` takes ``preprocessor.transform`` output."""

    model: Any
    preprocessor: Preprocessor
    classes: list[str]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x))


def load_predictor(data: bytes) -> LoadedPredictor:
    model, preprocessor, info = checkpoint.predictor_from_payload(checkpoint.loads(data))
    return LoadedPredictor(model, preprocessor, list(info["classes"]))


class PredictorCache:
    """Loaded predictors by (artifact key, sha256), least recently used first out.

    Keys include the checksum, and artifacts are never overwritten, so an entry can never be stale; a
    deleted predictor's entry simply ages out (or is dropped with ``discard``).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], LoadedPredictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: ArtifactStore, key: str, sha256: str) -> LoadedPredictor:
        with self._lock:
            if (key, sha256) in self._items:
                self._items.move_to_end((key, sha256))
                return self._items[(key, sha256)]
        loaded = load_predictor(store.get_bytes(key, sha256=sha256))
        with self._lock:
            self._items[(key, sha256)] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def discard(self, key: str) -> None:
        with self._lock:
            for item in [k for k in self._items if k[0] == key]:
                del self._items[item]


_cache: PredictorCache | None = None


def get_cache(settings: Settings) -> PredictorCache:
    global _cache
    if _cache is None or _cache.size != settings.predictor_cache_size:
        _cache = PredictorCache(settings.predictor_cache_size)
    return _cache


def inline_matrix(request: PredictionCreate) -> tuple[np.ndarray, list[str], list[str]]:
    """Check inline samples and stack them as a float32 matrix (samples x genes)."""
    genes = [g.strip() for g in request.genes or []]
    samples = request.samples or []
    duplicate_genes = sorted({g for g in genes if genes.count(g) > 1}) if len(set(genes)) != len(genes) else []
    if duplicate_genes:
        raise InvalidInput(f"genes: duplicate gene names {duplicate_genes[:10]}")
    if "" in genes:
        raise InvalidInput(f"genes: empty gene name at position {genes.index('')}")
    sample_ids = [s.sample_id for s in samples]
    if len(set(sample_ids)) != len(sample_ids):
        seen: set[str] = set()
        dups = sorted({s for s in sample_ids if s in seen or seen.add(s)})  # type: ignore[func-returns-value]
        raise InvalidInput(f"samples: duplicate sample ids {dups[:10]}")
    for sample in samples:
        if len(sample.values) != len(genes):
            raise InvalidInput(
                f"sample {sample.sample_id!r} has {len(sample.values)} values but {len(genes)} genes were given"
            )
    values = np.asarray([s.values for s in samples], dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise InvalidInput(f"sample {sample_ids[row]!r}, gene {genes[col]!r}: value is not a finite number")
    return values, genes, sample_ids


def predict(
    *, session: Session, store: ArtifactStore, settings: Settings, predictor_id: str, request: PredictionCreate
) -> orm.Prediction:
    """Predict for inline samples or a cohort; refuse input covering too little of the panel."""
    predictor = predictors.get(session, predictor_id)
    if predictor.status is not orm.ArtifactStatus.READY or predictor.artifact_key is None:
        raise Conflict(f"predictor {predictor.id} is {predictor.status.value}, not ready (job {predictor.job_id})")
    if request.cohort_id is not None:
        cohort = cohorts.get(session, request.cohort_id)
        matrix = parsing.read_matrix(store.local_path(cohort.storage_key))
        values, genes, sample_ids = matrix.values, matrix.genes, matrix.sample_ids
    else:
        values, genes, sample_ids = inline_matrix(request)
    loaded = get_cache(settings).get(store, predictor.artifact_key, predictor.artifact_sha256 or "")
    try:
        aligned, report = align_to_panel(values, genes, loaded.preprocessor.genes)
    except ValueError as exc:
        raise InvalidInput(f"genes: {exc}") from exc
    if report.coverage < settings.min_gene_coverage:
        raise InvalidInput(
            f"input covers {report.coverage:.1%} of the predictor's {report.n_panel} panel genes "
            f"({report.n_found} found); at least {settings.min_gene_coverage:.0%} is required. "
            f"Missing genes include: {', '.join(report.missing[:10])}"
        )
    proba = loaded.predict_proba(loaded.preprocessor.transform(aligned))
    classes = list(loaded.classes)
    labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    results = [
        {"sample_id": sid, "label": str(label), "probabilities": dict(zip(classes, map(float, row), strict=True))}
        for sid, label, row in zip(sample_ids, labels, proba, strict=True)
    ]
    prediction = orm.Prediction(
        predictor_id=predictor.id,
        cohort_id=request.cohort_id,
        n_samples=len(sample_ids),
        coverage=report.to_dict(),
        results=results,
    )
    session.add(prediction)
    session.commit()
    return prediction


def get(session: Session, prediction_id: str) -> orm.Prediction:
    prediction = session.get(orm.Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"prediction {prediction_id} not found")
    return prediction


def list_for_predictor(session: Session, predictor_id: str, *, limit: int, offset: int) -> list[orm.Prediction]:
    query = (
        select(orm.Prediction)
        .where(orm.Prediction.predictor_id == predictor_id)
        .order_by(orm.Prediction.created_at.desc(), orm.Prediction.id)
    )
    return list(session.scalars(query.limit(limit).offset(offset)))
