"""Representations from a pretrained encoder: samples in, the encoder's output vectors out.

The input (a stored cohort, or inline samples) is matched to the encoder's gene panel by gene key, missing
genes are filled with the pretraining mean under the same coverage gate as predictions, and the encoder's
own preprocessing is applied, so the vectors are those its predictors see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import parsing
from app.cohorts import repository as cohorts
from app.config import Settings
from app.encoders import service as encoders
from app.errors import InvalidInput
from app.predictions.imputation import CoverageGate
from app.predictions.lru import ArtifactCache
from app.predictions.schemas import SamplesInput
from app.predictions.service import coverage_report, inline_matrix
from app.storage import ArtifactStore
from models import checkpoint
from models.device import resolve_device
from models.encoders import MLPEncoder
from models.gene_table import align_by_gene_key, gene_table_version
from models.preprocessing import Preprocessor

BATCH = 4096


@dataclass(frozen=True)
class LoadedEncoder:
    encoder: MLPEncoder
    preprocessor: Preprocessor


def load_encoder(data: bytes, device: torch.device) -> LoadedEncoder:
    encoder, preprocessor, _ = checkpoint.encoder_from_payload(checkpoint.loads(data))
    return LoadedEncoder(encoder.to(device).eval(), preprocessor)


_cache: ArtifactCache[LoadedEncoder] | None = None


def get_encoder_cache(settings: Settings) -> ArtifactCache[LoadedEncoder]:
    """Encoders kept loaded in the API process (as many as predictors, EXPRSSL_PREDICTOR_CACHE_SIZE)."""
    global _cache
    device = resolve_device(settings.inference_device)
    if _cache is None or _cache.size != settings.predictor_cache_size or _cache.device != device:
        _cache = ArtifactCache(settings.predictor_cache_size, load_encoder, device)
    return _cache


@dataclass(frozen=True)
class Embeddings:
    sample_ids: list[str]
    vectors: np.ndarray  # float32 (n_samples, dim)
    coverage: dict[str, Any]


def embed(
    *,
    session: Session,
    caller: Caller,
    store: ArtifactStore,
    settings: Settings,
    encoder_id: str,
    request: SamplesInput,
) -> Embeddings:
    """The encoder's representation of each sample; refused below the coverage gate (mean imputation)."""
    row = encoders.get_ready(session, encoder_id, lab_id=caller.lab_id)
    if request.cohort_id is not None:
        cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
        matrix = parsing.read_matrix(store.local_path(cohort.storage_key))
        values, genes, sample_ids = matrix.values, matrix.genes, matrix.sample_ids
    else:
        n_inline = len(request.samples or [])
        if n_inline > settings.max_inline_samples:
            raise InvalidInput(
                f"samples: {n_inline:,} inline samples; at most {settings.max_inline_samples:,} per request "
                "(EXPRSSL_MAX_INLINE_SAMPLES): upload them as a cohort and embed it with cohort_id"
            )
        values, genes, sample_ids = inline_matrix(request)
    loaded = get_encoder_cache(settings).get(store, row.artifact_key or "", row.artifact_sha256 or "")
    try:
        aligned, report = align_by_gene_key(values, genes, loaded.preprocessor.genes)
    except ValueError as exc:
        raise InvalidInput(f"genes: {exc}") from exc
    warning = CoverageGate.for_imputation(settings, "mean").check(report, "mean", model="encoder")
    x = loaded.preprocessor.transform(aligned)
    device = next(loaded.encoder.parameters()).device
    parts = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], BATCH):
            batch = torch.from_numpy(x[start : start + BATCH]).to(device)
            parts.append(loaded.encoder(batch).float().cpu().numpy())
    vectors = np.concatenate(parts) if parts else np.zeros((0, loaded.encoder.out_dim), dtype=np.float32)
    coverage = coverage_report(
        report, "mean", warning, gene_table_version(), fitted_with=row.gene_table_version, model="encoder"
    )
    return Embeddings(list(sample_ids), vectors, coverage)
