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
from app.cohorts import repository as cohorts
from app.config import Settings
from app.encoders import service as encoders
from app.errors import InvalidInput
from app.inputs import SamplesInput, model_input, refuse_out_of_range
from app.lru import ArtifactCache, cached
from app.predictions.imputation import CoverageGate
from app.predictions.service import coverage_report
from app.storage import ArtifactStore
from models import checkpoint
from models import encoders as ml_encoders
from models.encoders import MLPEncoder
from models.gene_table import gene_table_version
from models.preprocessing import Preprocessor

BATCH = 4096  # samples preprocessed and encoded at a time


@dataclass(frozen=True)
class LoadedEncoder:
    encoder: MLPEncoder
    preprocessor: Preprocessor


def load_encoder(data: bytes, device: torch.device) -> LoadedEncoder:
    """Load an encoder artifact onto ``device``, in eval mode."""
    encoder, preprocessor, _ = checkpoint.encoder_from_payload(checkpoint.loads(data))
    return LoadedEncoder(encoder.to(device).eval(), preprocessor)


def get_encoder_cache(settings: Settings) -> ArtifactCache[LoadedEncoder]:
    """Return the encoders kept loaded in this process (as many as predictors, EXPRSSL_PREDICTOR_CACHE_SIZE)."""
    return cached("encoders", settings, load_encoder)


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
    max_samples: int | None = None,
) -> Embeddings:
    """Encode the request's samples; refuse below the coverage gate, or a cohort over ``max_samples``."""
    row = encoders.get_ready(session, encoder_id, lab_id=caller.lab_id)
    if request.cohort_id is not None and max_samples is not None:
        cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
        if cohort.n_samples > max_samples:
            raise InvalidInput(
                f"cohort {cohort.id} has {cohort.n_samples:,} samples; JSON holds at most {max_samples:,} "
                "(EXPRSSL_MAX_INLINE_SAMPLES): ask for format=parquet or format=csv"
            )
    loaded = get_encoder_cache(settings).get(store, row.artifact_key or "", row.artifact_sha256 or "")
    aligned, report, sample_ids = model_input(
        session=session, caller=caller, store=store, settings=settings, request=request,
        preprocessor=loaded.preprocessor, fitted_on=row.cohort_id, model=f"encoder {row.id}", use="embed",
    )
    gate = CoverageGate.for_imputation(settings, "mean")
    warning = gate.check(report, "mean", model="encoder", ridge=False)
    coverage = coverage_report(
        report, "mean", warning, gene_table_version(), fitted_with=row.gene_table_version, model="encoder"
    )
    return Embeddings(sample_ids, encode(loaded, aligned, sample_ids, model=f"encoder {row.id}"), coverage)


def encode(loaded: LoadedEncoder, aligned: np.ndarray, sample_ids: list[str], *, model: str) -> np.ndarray:
    """Preprocess and encode ``aligned`` (samples x panel, NaN for missing genes, rows named by ``sample_ids``)
    a batch at a time; refuse values the model cannot compute with."""
    panel = loaded.preprocessor.genes

    def refuse(x: np.ndarray, rows: slice) -> None:
        refuse_out_of_range(x, aligned[rows], sample_ids[rows], panel, model=model)

    return ml_encoders.embed(
        loaded.encoder, aligned, preprocessor=loaded.preprocessor, batch_size=BATCH, check_batch=refuse
    )
