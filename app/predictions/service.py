"""Prediction use case: align input genes to a predictor's panel by gene key, impute, predict, keep the result."""

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
from app.db import orm, repository
from app.errors import Conflict, InvalidInput
from app.predictions.imputation import CoverageGate, ridge_impute
from app.predictions.lru import ArtifactCache
from app.predictions.schemas import PredictionCreate, SamplesInput
from app.predictors import service as predictors
from app.storage import ArtifactStore
from models import checkpoint
from models.conformal import UNCERTAIN, set_labels
from models.device import resolve_device
from models.gene_table import align_by_gene_key, gene_table_version
from models.genes import AlignmentReport
from models.imputation import observed_genes
from models.ood import gene_drift
from models.preprocessing import Preprocessor
from models.uncertainty import SampleUncertainty, Uncertainty


@dataclass(frozen=True)
class LoadedPredictor:
    """A predictor artifact loaded for inference: ``predict_proba`` takes ``preprocessor.transform`` output."""

    model: Any
    preprocessor: Preprocessor
    classes: list[str]
    uncertainty: Uncertainty = Uncertainty()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(x))


def load_predictor(data: bytes, device: torch.device | None = None) -> LoadedPredictor:
    """Load a predictor artifact; an encoder-based model moves to ``device`` (default CPU)."""
    model, preprocessor, info = checkpoint.predictor_from_payload(checkpoint.loads(data))
    if device is not None and isinstance(model, torch.nn.Module):
        model.to(device)
    try:
        uncertainty = Uncertainty.from_dict(info.get("uncertainty"))
    except (ValueError, TypeError) as exc:
        raise checkpoint.ArtifactError(f"invalid calibration state: {exc}") from exc
    return LoadedPredictor(model, preprocessor, list(info["classes"]), uncertainty)


class PredictorCache(ArtifactCache[LoadedPredictor]):
    """Loaded predictors (see :class:`ArtifactCache`)."""

    def __init__(self, size: int, device: torch.device | None = None) -> None:
        super().__init__(size, load_predictor, device)


_cache: PredictorCache | None = None


def get_cache(settings: Settings) -> PredictorCache:
    global _cache
    device = resolve_device(settings.inference_device)
    if _cache is None or _cache.size != settings.predictor_cache_size or _cache.device != device:
        _cache = PredictorCache(settings.predictor_cache_size, device)
    return _cache


def inline_matrix(request: SamplesInput) -> tuple[np.ndarray, list[str], list[str]]:
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
    *,
    session: Session,
    caller: Caller,
    store: ArtifactStore,
    settings: Settings,
    predictor_id: str,
    request: PredictionCreate,
) -> orm.Prediction:
    """Predict for inline samples or a cohort; refuse input covering too little of the panel."""
    predictor = predictors.get(session, predictor_id, lab_id=caller.lab_id)
    if predictor.status is not orm.ArtifactStatus.READY or predictor.artifact_key is None:
        raise Conflict(f"predictor {predictor.id} is {predictor.status.value}, not ready (job {predictor.job_id})")
    if request.cohort_id is not None:
        cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
        matrix = parsing.read_matrix(store.local_path(cohort.storage_key))
        values, genes, sample_ids = matrix.values, matrix.genes, matrix.sample_ids
    else:
        n_inline = len(request.samples or [])
        if n_inline > settings.max_inline_samples:
            raise InvalidInput(
                f"samples: {n_inline:,} inline samples; at most {settings.max_inline_samples:,} per request "
                "(EXPRSSL_MAX_INLINE_SAMPLES): upload them as a cohort and predict with cohort_id"
            )
        values, genes, sample_ids = inline_matrix(request)
    loaded = get_cache(settings).get(store, predictor.artifact_key, predictor.artifact_sha256 or "")
    try:
        aligned, report = align_by_gene_key(values, genes, loaded.preprocessor.genes)
    except ValueError as exc:
        raise InvalidInput(f"genes: {exc}") from exc
    warning = CoverageGate.for_imputation(settings, request.imputation).check(report, request.imputation)
    x = _model_inputs(session, store, settings, predictor, loaded, aligned, request.imputation)
    flag_at = request.ood_percentile if request.ood_percentile is not None else settings.ood_percentile
    out = loaded.uncertainty.predict(loaded.model, x, coverage=request.coverage, ood_percentile=flag_at)
    results = _sample_results(sample_ids, loaded.classes, out)
    version = gene_table_version()
    prediction = orm.Prediction(
        lab_id=caller.lab_id,
        predictor_id=predictor.id,
        cohort_id=request.cohort_id,
        n_samples=len(sample_ids),
        coverage=coverage_report(
            report, request.imputation, warning, version, fitted_with=predictor.gene_table_version
        ),
        results=results,
        uncertainty=_uncertainty_summary(loaded, out, results, request.coverage, flag_at, report, request.imputation),
        drift=_drift(loaded, x, aligned, out) if len(sample_ids) >= 2 else None,
        gene_table_version=version,
    )
    session.add(prediction)
    session.commit()
    return prediction


def _model_inputs(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    predictor: orm.Predictor,
    loaded: LoadedPredictor,
    aligned: np.ndarray,
    imputation: str,
) -> np.ndarray:
    """Preprocess the aligned input; missing genes get the training mean (z-score 0) or ridge predictions."""
    x = loaded.preprocessor.transform(aligned)
    if imputation != "ridge":
        return x
    observed = observed_genes(aligned)
    if observed.all():
        return x
    cohort = cohorts.get(session, predictor.cohort_id, lab_id=predictor.lab_id)
    return ridge_impute(
        x, observed, settings=settings, store=store, predictor=predictor, cohort=cohort, pre=loaded.preprocessor
    )


def coverage_report(
    report: AlignmentReport,
    imputation: str,
    warning: str | None,
    version: str,
    *,
    fitted_with: str | None = None,
    model: str = "predictor",
) -> dict[str, Any]:
    """The stored coverage report: the alignment's counts, what was imputed and how, the warning, and a note
    when the ``model`` was trained under another gene table than the one resolving names now."""
    note = None
    if fitted_with is not None and fitted_with != version:
        note = (
            f"the {model} was trained with gene table {fitted_with!r}; names are resolved now with {version!r}: "
            "a gene whose symbol or identifiers changed between the two may match differently"
        )
    return {
        **report.to_dict(),
        "imputed": report.n_missing,
        "imputation": imputation,
        "warning": warning,
        "gene_table_version": version,
        "gene_table_note": note,
    }


def _sample_results(sample_ids: list[str], classes: list[str], out: SampleUncertainty) -> list[dict[str, Any]]:
    """One JSON-ready result per sample: label or "uncertain", arg-max, calibrated probabilities, set, OOD."""
    top = [classes[k] for k in out.top]
    sets: list[list[str] | None] = [None] * len(top)
    labels = top
    if out.members is not None:
        sets[:], labels = set_labels(out.members, classes, out.proba)
    results = []
    for i, sid in enumerate(sample_ids):
        results.append({
            "sample_id": sid,
            "label": labels[i],
            "top_label": top[i],
            "probabilities": dict(zip(classes, map(float, out.proba[i]), strict=True)),
            "prediction_set": sets[i],
            "ood_score": None if out.ood_score is None else float(out.ood_score[i]),
            "ood_percentile": None if out.ood_percentile is None else float(out.ood_percentile[i]),
            "ood_flag": None if out.ood_flag is None else bool(out.ood_flag[i]),
        })
    return results


def _uncertainty_summary(
    loaded: LoadedPredictor,
    out: SampleUncertainty,
    results: list[dict[str, Any]],
    coverage: float,
    flag_at: float,
    report: AlignmentReport,
    imputation: str = "mean",
) -> dict[str, Any]:
    """The prediction-level record of how sets and flags were made, with their shares and caveats."""
    state, notes = loaded.uncertainty, []
    conformal = state.conformal
    if conformal is None:
        notes.append("the predictor has no calibration split: no prediction sets, label is the most probable")
    elif coverage > (most := conformal.max_finite_coverage()):
        notes.append(
            f"coverage {coverage:g} exceeds {conformal.n}/{conformal.n + 1} = {most:.3f}, the most its "
            "calibration split can guarantee: every label is in every set"
        )
    if report.n_missing:
        how = "by ridge regression on the observed genes" if imputation == "ridge" else "with the training mean"
        notes.append(f"{report.n_missing} panel genes were imputed {how}; sets and OOD scores "
                     "assume complete input and may be optimistic")
    if state.ood is None:
        notes.append("the predictor has no OOD scorer")
    threshold = None if out.threshold is None or not np.isfinite(out.threshold) else float(out.threshold)
    n = max(len(results), 1)
    return {
        "coverage": coverage,
        "conformal_method": None if conformal is None else conformal.method,
        "n_calibration": 0 if conformal is None else conformal.n,
        "threshold": threshold,
        "temperature": state.temperature,
        "ood_space": None if state.ood is None else state.ood.space,
        "ood_percentile": flag_at,
        "share_flagged": None if out.ood_flag is None else float(out.ood_flag.sum()) / n,
        "share_uncertain": sum(r["label"] == UNCERTAIN for r in results) / n,
        "mean_set_size": None if out.members is None else float(out.members.sum()) / n,
        "notes": notes,
    }


def _drift(loaded: LoadedPredictor, x: np.ndarray, aligned: np.ndarray, out: SampleUncertainty) -> dict[str, Any]:
    """Share flagged and the genes that moved most, against the preprocessing's reference statistics."""
    pre = loaded.preprocessor
    top, n_compared, mean_abs = gene_drift(x, np.isfinite(aligned), pre.genes)
    for gene in top:
        j = gene.pop("index")
        mean, std = float(pre.mean[j]), float(pre.std[j])
        gene.update(batch_mean=mean + gene["smd"] * std, reference_mean=mean, reference_std=std)
    reference = "training samples" if isinstance(loaded.model, checkpoint.LogisticRegressionModel) else (
        "encoder's pretraining cohort")
    return {
        "n_samples": int(x.shape[0]),
        "share_flagged": None if out.ood_flag is None else float(out.ood_flag.mean()),
        "reference": reference,
        "n_genes_compared": n_compared,
        "mean_abs_smd": mean_abs,
        "top_genes": top,
    }


def get(session: Session, prediction_id: str, *, lab_id: str) -> orm.Prediction:
    return repository.get_or_404(session, orm.Prediction, prediction_id, lab_id=lab_id)


def list_for_predictor(
    session: Session, predictor_id: str, *, lab_id: str, limit: int, offset: int
) -> list[orm.Prediction]:
    where = [orm.Prediction.predictor_id == predictor_id]
    return repository.newest(session, orm.Prediction, lab_id=lab_id, limit=limit, offset=offset, where=where)
