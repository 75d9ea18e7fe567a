"""Model cards: what a predictor was trained on, how well and how calibrated it is, and its limits.

After Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): data, metrics with their spread,
calibration, evaluation beside baselines, versions, and the conditions the figures hold under.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import orm
from app.lineage.repository import pretraining_overlap
from app.predictors.schemas import CohortFacts, EncoderFacts, EvaluationFacts, Head, ModelCard
from models.genes import level_percent

INTENDED_USE = (
    "Research use: predicting the {label} of bulk expression samples measured like the training cohort "
    "(same platform, gene identifiers and preprocessing). Not a diagnostic device; every prediction should be "
    "read with its prediction set and out-of-distribution flag."
)
_METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "auroc_classes", "chance_accuracy", "n_samples",
                "bootstrap", "per_class")


def _cohort(session: Session, cohort_id: str | None) -> CohortFacts | None:
    cohort = None if cohort_id is None else session.get(orm.Cohort, cohort_id)
    return None if cohort is None else CohortFacts.model_validate(cohort)


def _encoder(session: Session, encoder_id: str | None) -> EncoderFacts | None:
    encoder = None if encoder_id is None else session.get(orm.Encoder, encoder_id)
    if encoder is None:
        return None
    return EncoderFacts(
        id=encoder.id, name=encoder.name, method=encoder.method, params=dict(encoder.params), seed=encoder.seed,
        version=encoder.version, n_genes=encoder.n_genes,
        final_loss=float(encoder.loss_curve[-1]) if encoder.loss_curve else None,
        artifact_sha256=encoder.artifact_sha256, pretraining_cohort=_cohort(session, encoder.cohort_id),
        parent_encoder_id=encoder.parent_encoder_id,
    )


def newest_evaluation(session: Session, cohort_id: str, label_column: str) -> orm.Evaluation | None:
    """The newest ready evaluation on a cohort and label column."""
    query = (
        select(orm.Evaluation)
        .where(
            orm.Evaluation.cohort_id == cohort_id,
            orm.Evaluation.label_column == label_column,
            orm.Evaluation.status == orm.ArtifactStatus.READY,
        )
        .order_by(orm.Evaluation.created_at.desc(), orm.Evaluation.id.desc())
    )
    return session.scalars(query.limit(1)).first()


def _evaluation(session: Session, predictor: orm.Predictor, method: str | None) -> EvaluationFacts | None:
    evaluation = newest_evaluation(session, predictor.cohort_id, predictor.label_column)
    if evaluation is None:
        return None
    summary = [dict(row) for row in evaluation.summary]
    fractions = sorted({float(row["fraction"]) for row in summary})
    model = "logistic_regression" if predictor.head == Head.LOGISTIC_REGRESSION.value else f"{method}/{predictor.head}"
    nearest = min(fractions, key=lambda f: abs(f - predictor.label_fraction)) if fractions else None
    return EvaluationFacts(
        id=evaluation.id, name=evaluation.name, created_at=evaluation.created_at,
        n_seeds=evaluation.config.get("n_seeds"), fractions=fractions,
        model=model if any(row["model"] == model for row in summary) else None,
        curve=[row for row in summary if row["model"] == model],
        at_fraction=[row for row in summary if row["fraction"] == nearest],
        label_savings=dict(evaluation.label_savings),
    )


def _class_counts(session: Session, predictor: orm.Predictor) -> dict[str, int]:
    cohort = session.get(orm.Cohort, predictor.cohort_id)
    columns = [] if cohort is None else cohort.label_columns
    column: dict[str, Any] = next((c for c in columns if c.get("name") == predictor.label_column), {})
    return {str(k): int(v) for k, v in (column.get("classes") or {}).items()}


def _limits(
    predictor: orm.Predictor, cohort: CohortFacts, min_gene_coverage: float, overlap: str | None = None
) -> list[str]:
    """The card's limits; ``overlap`` says how the encoder's pretraining saw the test samples, if it did."""
    split, calibration = predictor.split, predictor.calibration
    n_genes = split.get("gene_panel", {}).get("n_genes", "?")
    limits = [
        f"Measured on {split.get('n_test', '?')} held-out samples of one cohort ({cohort.name}, "
        f"{cohort.n_samples} samples, {cohort.value_kind} values); other platforms, labs or populations were not "
        "tested.",
        f"Inputs covering less than {level_percent(min_gene_coverage)} of the {n_genes}"
        "-gene panel are refused; missing genes are imputed with the training mean, which the figures above did "
        "not include.",
        "Prediction-set coverage is a marginal guarantee for samples exchangeable with the calibration split, not "
        "a per-class or per-sample one.",
        "The OOD flag compares a sample with the training samples only; a sample can look typical and still be "
        "mislabelled, or unusual and still be predicted well.",
    ]
    if split.get("dropped_classes"):
        limits.append(f"Classes with a single sample were dropped and are never predicted: "
                      f"{sorted(split['dropped_classes'])}.")
    n_cal = int(calibration.get("n_calibration", 0) or 0)
    if not calibration:
        limits.append("Fitted before calibration existed: no temperature, prediction sets or OOD scores.")
    elif n_cal == 0:
        limits.append("The training pool was too small for a calibration split: no prediction sets, temperature 1.")
    elif n_cal < 30:
        limits.append(f"The calibration split is small ({n_cal} samples): its temperature is held near 1 by a "
                      "prior, and the prediction sets' coverage varies from split to split by several points.")
    ood = calibration.get("ood") or {}
    if ood.get("test_flag_rate") is not None:
        limits.append(
            f"OOD flags at the {ood['percentile']:g}th percentile fired for {ood['test_flag_rate']:.1%} of the "
            f"in-distribution test split (nominal {100 - ood['percentile']:.1f} %); "
            + ("a fine-tuned encoder draws its own training samples together, so expect more than nominal."
               if ood.get("space") == "embedding" else "novel subtypes of a trained class are rarely flagged.")
        )
    if overlap is not None:
        limits.append(f"The encoder was {overlap}: the test metrics may be optimistic for new cohorts.")
    if split.get("grouped_by") is None:
        limits.append("Samples were split individually (no group column): repeated samples of one patient, if any, "
                      "may sit on both sides and flatter the metrics.")
    return limits


def build_card(*, session: Session, predictor: orm.Predictor, min_gene_coverage: float) -> ModelCard:
    """Assemble a predictor's model card from the registry."""
    cohort = _cohort(session, predictor.cohort_id)
    assert cohort is not None  # a foreign key
    encoder = _encoder(session, predictor.encoder_id)
    encoder_row = None if predictor.encoder_id is None else session.get(orm.Encoder, predictor.encoder_id)
    training_cohort = session.get_one(orm.Cohort, predictor.cohort_id)
    overlap = None if encoder_row is None else pretraining_overlap(session, encoder_row, training_cohort)
    split = {k: v for k, v in predictor.split.items() if not k.endswith("_sample_ids") and k != "gene_panel"}
    calibration = dict(predictor.calibration)
    return ModelCard(
        predictor_id=predictor.id, name=predictor.name, head=Head(predictor.head), status=predictor.status,
        created_at=predictor.created_at, artifact_sha256=predictor.artifact_sha256,
        intended_use=INTENDED_USE.format(label=predictor.label_column),
        label_column=predictor.label_column, classes=list(predictor.classes),
        class_counts=_class_counts(session, predictor), training_cohort=cohort,
        gene_panel=dict(predictor.split.get("gene_panel") or {}), encoder=encoder,
        hyperparameters={**predictor.params, "seed": predictor.seed},
        split={**split, "label_fraction": predictor.label_fraction},
        metrics={k: predictor.metrics[k] for k in _METRIC_KEYS if k in predictor.metrics},
        calibration={k: calibration[k] for k in ("n_calibration", "temperature", "temperature_fitted", "test")
                     if k in calibration},
        prediction_sets=calibration.get("conformal"), out_of_distribution=calibration.get("ood"),
        evaluation=_evaluation(session, predictor, None if encoder is None else encoder.method),
        libraries=dict(predictor.environment), limits=_limits(predictor, cohort, min_gene_coverage, overlap),
    )


def format_number(value: Any, digits: int = 3) -> str:
    """A metric for people: ``n/a`` for None, floats to ``digits`` decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# Characters that Markdown (and the HTML it may hold) would read as syntax: escaped in names users chose.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: object) -> str:
    """``text`` as literal Markdown: a cohort or class named ``<script>`` or ``a | b`` shows as written,
    never as HTML, a link or a table cell break."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", " ".join(str(text).split()))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(md(format_number(v)) for v in row) + " |" for row in rows]


def _metric_lines(card: ModelCard) -> list[str]:
    m, boot = card.metrics, card.metrics.get("bootstrap") or {}
    rows = []
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "chance_accuracy"):
        interval = boot.get(key)
        name = key
        if key == "auroc" and m.get("auroc_classes") is not None and m["auroc_classes"] < len(card.classes):
            name = f"auroc (over the {m['auroc_classes']} of {len(card.classes)} classes in the test split)"
        rows.append([name, m.get(key), "" if not interval else f"{interval[0]:.3f} to {interval[1]:.3f}"])
    return _table(["metric (test split)", "value", "bootstrap 95 % interval"], rows)


def _calibration_lines(card: ModelCard) -> list[str]:
    test = card.calibration.get("test")
    if not test:
        return ["No calibration (fitted before calibration existed)."]
    lines = [f"Temperature {format_number(card.calibration.get('temperature'))}, fitted on "
             f"{card.calibration.get('n_calibration')} calibration samples; on the test split:", ""]
    rows = [[k, test.get(f"{k}_before"), test.get(f"{k}_after")] for k in ("ece", "brier", "nll")]
    return lines + _table(["", "before", "after"], rows)


def _sets_lines(card: ModelCard) -> list[str]:
    sets = card.prediction_sets
    if not sets:
        return ["No prediction sets (no calibration split)."]
    coverage, size = sets.get("test_coverage", {}), sets.get("test_mean_set_size", {})
    rows = [[f"{float(level):.0%}", coverage.get(level), size.get(level)] for level in coverage]
    return [f"Split-conformal ({sets.get('method')}), {sets.get('n_calibration')} calibration samples.", ""] + _table(
        ["target coverage", "test coverage", "mean set size"], rows
    )


def _evaluation_lines(card: ModelCard) -> list[str]:
    ev = card.evaluation
    if ev is None:
        return ["No ready evaluation on this cohort and label column."]
    rows = [[r["model"], r["fraction"], (r.get("accuracy") or {}).get("mean"), (r.get("accuracy") or {}).get("std"),
             (r.get("balanced_accuracy") or {}).get("mean")] for r in ev.at_fraction]
    lines = [f"Evaluation {ev.id} ({md(ev.name)}, {ev.n_seeds} seeds), at the fraction nearest this predictor's:",
             ""]
    return lines + _table(["model", "fraction", "accuracy mean", "accuracy std", "balanced accuracy mean"], rows)


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown, for people."""
    cohort, encoder = card.training_cohort, card.encoder
    lines = [
        f"# Model card: {md(card.name)}", "",
        f"Predictor `{card.predictor_id}` ({card.head.value}, {card.status.value}), created "
        f"{card.created_at.isoformat()}; artifact sha256 `{card.artifact_sha256}`.", "",
        "## Intended use", "", card.intended_use, "",
        "## Training data", "",
        f"Cohort `{cohort.id}` ({md(cohort.name)}): {cohort.n_samples} samples x {cohort.n_genes} genes "
        f"({cohort.gene_id_type} ids, {cohort.value_kind} values), checksum `{cohort.checksum}`; "
        f"groups: {md(cohort.group_column or 'none')}.",
        f"Gene panel: {card.gene_panel.get('n_genes')} genes, sha256 `{card.gene_panel.get('sha256')}`.",
        f"Label column {md(card.label_column)}: "
        + ", ".join(f"{md(k)} {v}" for k, v in card.class_counts.items()) + ".",
        "", "## Encoder", "",
    ]
    if encoder is None:
        lines.append("None: logistic regression on standardised expression.")
    else:
        pre = encoder.pretraining_cohort
        lines.append(f"`{encoder.id}` ({encoder.method} v{encoder.version}, seed {encoder.seed}), final loss "
                     f"{format_number(encoder.final_loss)}; pretrained on "
                     + (f"`{pre.id}` ({md(pre.name)}, {pre.n_samples} samples, checksum `{pre.checksum}`)"
                        if pre else "?")
                     + ".")
        lines.append("Hyper-parameters: " + ", ".join(f"{k}={v}" for k, v in encoder.params.items()) + ".")
    lines += ["", "## Fitting", "", "Head hyper-parameters: "
              + ", ".join(f"{k}={v}" for k, v in card.hyperparameters.items()) + ".",
              "Split: " + ", ".join(f"{k}={v}" for k, v in card.split.items() if k != "class_counts") + ".",
              "", "## Performance", ""] + _metric_lines(card)
    lines += ["", "## Calibration", ""] + _calibration_lines(card)
    lines += ["", "## Prediction sets", ""] + _sets_lines(card)
    ood = card.out_of_distribution
    lines += ["", "## Out-of-distribution detection", "",
              "No OOD scorer." if not ood else
              f"Mahalanobis score in the {ood.get('space')} space ({ood.get('dim')} dimensions, shrinkage "
              f"{format_number(ood.get('shrinkage'))}), {ood.get('n_reference')} reference samples; "
              f"test samples flagged at the {format_number(ood.get('percentile'), 0)}th percentile: "
              f"{format_number(ood.get('test_flag_rate'))}."]
    lines += ["", "## Label efficiency", ""] + _evaluation_lines(card)
    lines += ["", "## Libraries", "", ", ".join(f"{k} {v}" for k, v in card.libraries.items()) or "unknown"]
    lines += ["", "## Limits", ""] + [f"- {limit}" for limit in card.limits]
    return "\n".join(lines) + "\n"
