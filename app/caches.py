"""What the API process keeps loaded (predictors, encoders, ridge imputers), dropped when models or cohorts go."""

from __future__ import annotations

from collections.abc import Iterable

from app.config import Settings
from app.encoders.embeddings import get_encoder_cache
from app.predictions.imputation import get_ridge_cache
from app.predictions.service import get_cache


def forget(settings: Settings, artifact_keys: Iterable[str], *, cohort_checksum: str | None = None) -> None:
    """Drop the loaded artifacts of deleted models, the ridge imputers fitted for deleted predictors, and those
    fitted on a deleted cohort's matrix."""
    keys = list(artifact_keys)
    for key in keys:
        get_cache(settings).discard(key)
        get_encoder_cache(settings).discard(key)
    get_ridge_cache(settings).discard_artifacts(keys)
    if cohort_checksum is not None:
        get_ridge_cache(settings).discard_cohort(cohort_checksum)
