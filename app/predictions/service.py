"""Prediction use case: align input genes to a predictor's panel by gene key, impute, predict, keep the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import repository as cohorts
from app.config import Settings
from app.db import orm, repository
from app.db.base import new_id, utcnow
from app.errors import Conflict
from app.inputs import model_input, refuse_out_of_range
from app.lineage import repository as lineage
from app.lineage import service as deletion
from app.lru import ArtifactCache, cached
from app.predictions.imputation import CoverageGate, ridge_impute
from app.predictions.schemas import PredictionCreate, PredictionRead
from app.storage import ArtifactStore
from models import checkpoint
from models.conformal import UNCERTAIN, set_labels
from models.gene_table import gene_table_version
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


def load_predictor(data: bytes, device: torch.device) -> LoadedPredictor:
    """Load a predictor artifact; an encoder-based model moves to ``device``."""
    model, preprocessor, info = checkpoint.predictor_from_payload(checkpoint.loads(data))
    if isinstance(model, torch.nn.Module):
        model.to(device)
    try:
        uncertainty = Uncertainty.from_dict(info.get("uncertainty"))
    except (ValueError, TypeError) as exc:
        raise checkpoint.ArtifactError(f"invalid calibration state: {exc}") from exc
    return LoadedPredictor(model, preprocessor, list(info["classes"]), uncertainty)


def get_cache(settings: Settings) -> ArtifactCache[LoadedPredictor]:
    """Return the predictors kept loaded in this process."""
    return cached("predictors", settings, load_predictor)


# A plain insert, built once: the ORM's unit of work added about a third to storing a prediction.
_INSERT_PREDICTION = insert(cast(Table, orm.Prediction.__table__))


def predict(
    *,
    session: Session,
    caller: Caller,
    store: ArtifactStore,
    settings: Settings,
    predictor_id: str,
    request: PredictionCreate,
) -> PredictionRead:
    """Predict for inline samples or a cohort, and keep the prediction; refuse input covering too little of the
    panel."""
    predictor = repository.predictor_to_predict(session, predictor_id, lab_id=caller.lab_id)
    if predictor.status is not orm.ArtifactStatus.READY or predictor.artifact_key is None:
        raise Conflict(f"predictor {predictor.id} is {predictor.status.value}, not ready (job {predictor.job_id})")
    loaded = get_cache(settings).get(store, predictor.artifact_key, predictor.artifact_sha256 or "")
    aligned, report, sample_ids = model_input(
        session=session, caller=caller, store=store, settings=settings, request=request,
        preprocessor=loaded.preprocessor, fitted_on=predictor.fitted_on, model=f"predictor {predictor.id}",
        use="predict",
    )
    warning = CoverageGate.for_imputation(settings, request.imputation).check(report, request.imputation)
    x = _model_inputs(session, store, settings, predictor, loaded, aligned, sample_ids, request.imputation)
    flag_at = request.ood_percentile if request.ood_percentile is not None else settings.ood_percentile
    out = loaded.uncertainty.predict(loaded.model, x, coverage=request.coverage, ood_percentile=flag_at)
    results = sample_results(sample_ids, loaded.classes, out)
    version = gene_table_version()
    prediction = {
        "id": new_id(),
        "lab_id": caller.lab_id,
        "predictor_id": predictor.id,
        "created_by": caller.user_id,
        "cohort_id": request.cohort_id,
        "n_samples": len(sample_ids),
        "coverage": coverage_report(
            report, request.imputation, warning, version, fitted_with=predictor.gene_table_version
        ),
        "results": results,
        "uncertainty": _uncertainty_summary(
            loaded, out, results, request.coverage, flag_at, report, request.imputation
        ),
        "drift": _drift(loaded, x, aligned, out) if len(sample_ids) >= 2 else None,
        "gene_table_version": version,
        "created_at": utcnow(),
    }
    _store(session, prediction)
    return PredictionRead.model_validate(prediction)


def _store(session: Session, prediction: dict[str, Any]) -> None:
    session.execute(_INSERT_PREDICTION, prediction)
    session.commit()


def _model_inputs(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    predictor: repository.PredictorToPredict,
    loaded: LoadedPredictor,
    aligned: np.ndarray,
    sample_ids: list[str],
    imputation: str,
) -> np.ndarray:
    """Preprocess the aligned input; missing genes get the training mean (z-score 0) or ridge predictions.
    Values out of the model's range are refused before any imputation can spread them."""
    x = loaded.preprocessor.transform(aligned)
    refuse_out_of_range(x, aligned, sample_ids, loaded.preprocessor.genes, model=f"predictor {predictor.id}")
    if imputation != "ridge":
        return x
    observed = observed_genes(aligned)
    if observed.all():
        return x
    cohort = cohorts.get(session, predictor.cohort_id, lab_id=predictor.lab_id)
    # The whole row, its split read only should the imputer not be cached yet.
    row = repository.get_or_404(session, orm.Predictor, predictor.id, lab_id=predictor.lab_id,
                                deferred=orm.PREDICTOR_DETAILS)
    return ridge_impute(x, observed, settings=settings, store=store, predictor=row, cohort=cohort,
                        pre=loaded.preprocessor)


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


def sample_results(sample_ids: list[str], classes: list[str], out: SampleUncertainty) -> list[dict[str, Any]]:
    """One JSON-ready result per sample: label or "uncertain", arg-max, calibrated probabilities, set, OOD."""
    top = [classes[k] for k in out.top]
    sets: list[list[str] | None] = [None] * len(top)
    labels = top
    if out.members is not None:
        sets[:], labels = set_labels(out.members, classes, out.proba)
    n = len(sample_ids)
    proba = np.asarray(out.proba, dtype=np.float64).tolist()  # Python floats in one pass, not one by one
    scores = [None] * n if out.ood_score is None else np.asarray(out.ood_score, dtype=np.float64).tolist()
    percentiles = [None] * n if out.ood_percentile is None else np.asarray(out.ood_percentile, np.float64).tolist()
    flags = [None] * n if out.ood_flag is None else np.asarray(out.ood_flag, dtype=bool).tolist()
    return [
        {
            "sample_id": sid,
            "label": labels[i],
            "top_label": top[i],
            "probabilities": dict(zip(classes, proba[i], strict=True)),
            "prediction_set": sets[i],
            "ood_score": scores[i],
            "ood_percentile": percentiles[i],
            "ood_flag": flags[i],
        }
        for i, sid in enumerate(sample_ids)
    ]


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


def delete_prediction(*, session: Session, store: ArtifactStore, caller: Caller, prediction_id: str) -> None:
    """Delete a stored prediction (nothing is made from one). Commits.

    Members delete the predictions they requested; admins any of the lab's, also those made before the
    requester was recorded.
    """
    prediction = get(session, prediction_id, lab_id=caller.lab_id)
    if prediction.created_by != caller.user_id:
        whose = "which another user requested" if prediction.created_by else "whose requester is not recorded"
        caller.require_admin(f"deleting prediction {prediction.id}, {whose}")
    deletion.remove(
        session=session, store=store, caller=caller, target=prediction, found=lineage.Dependents([], [], [], []),
        running=[], force=False,
    )


def list_for_predictor(
    session: Session, predictor_id: str, *, lab_id: str, limit: int, offset: int, after: str | None = None
) -> list[orm.Prediction]:
    """A page of the predictor's predictions, newest first, without their per-sample results (never loaded:
    a cohort's prediction holds one result per sample)."""
    where = [orm.Prediction.predictor_id == predictor_id]
    return repository.newest(session, orm.Prediction, lab_id=lab_id, limit=limit, offset=offset, where=where,
                             unloaded=[orm.Prediction.results], after=after)


def results_table(prediction: PredictionRead) -> pd.DataFrame:
    """Return one row per sample: the prediction set's labels joined by '|' (empty when there is none), the
    OOD fields, and one p_<class> column per class."""
    rows = []
    for r in prediction.results:
        row = {"sample_id": r.sample_id, "label": r.label, "top_label": r.top_label,
               "prediction_set": None if r.prediction_set is None else "|".join(r.prediction_set),
               "ood_score": r.ood_score, "ood_percentile": r.ood_percentile, "ood_flag": r.ood_flag}
        rows.append(row | {f"p_{label}": p for label, p in r.probabilities.items()})
    return pd.DataFrame(rows)
