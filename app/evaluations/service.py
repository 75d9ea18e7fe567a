"""Evaluation use cases: validate a label-efficiency study, queue it, read it, draw it."""

from __future__ import annotations

import io

from sqlalchemy.orm import Session

from app.auth.service import Caller
from app.cohorts import repository as cohorts
from app.cohorts import service as cohort_service
from app.db import orm, repository
from app.encoders import service as encoders
from app.errors import Conflict, InvalidInput
from app.evaluations.schemas import EvaluationCreate
from app.jobs import service as jobs
from app.lineage import repository as lineage
from app.lineage import service as deletion
from app.storage import ArtifactStore
from app.training_limits import check_training_bounds
from models.protocol import BASELINES, ProtocolConfig
from worker.dispatch import Dispatcher


def _config(request: EvaluationCreate) -> dict[str, object]:
    """The protocol's full configuration, validated by the protocol itself."""
    fractions = sorted(set(request.fractions))
    try:
        ProtocolConfig(
            fractions=tuple(fractions),
            n_seeds=request.n_seeds,
            test_size=request.test_size,
            methods=tuple(request.methods),
            method_params=request.method_params,
            heads=tuple(request.heads),
            baselines=tuple(request.baselines),
            head_params=request.head_params,
            logreg_c=request.logreg_c,
            pca_components=request.pca_components,
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(str(exc)) from exc
    for method, params in request.method_params.items():
        check_training_bounds(params, where=f"method_params.{method}")
    check_training_bounds(request.head_params, where="head_params")
    if not request.baselines and not request.methods and not request.encoder_ids:
        raise InvalidInput("nothing to evaluate: give methods, encoder_ids or baselines")
    if (request.methods or request.encoder_ids) and not request.heads:
        raise InvalidInput("heads: encoders need at least one head (linear_probe, finetune)")
    left_out = [b for b in BASELINES if b not in request.baselines]
    if (request.methods or request.encoder_ids) and left_out:
        raise InvalidInput(
            f"baselines: SSL encoders are evaluated beside every baseline, so that a model that trails them shows; "
            f"{', '.join(left_out)} left out (mlp_scratch is also the reference of label savings)"
        )
    config = request.model_dump(exclude={"cohort_id", "label_column", "name"})
    config["fractions"] = fractions
    return config


def start_evaluation(
    *, session: Session, caller: Caller, dispatcher: Dispatcher, request: EvaluationCreate
) -> orm.Evaluation:
    """Register an evaluation and queue the job that runs its protocol."""
    config = _config(request)
    cohort = cohorts.get(session, request.cohort_id, lab_id=caller.lab_id)
    cohort_service.check_label_column(cohort, request.label_column, test_size=request.test_size)
    for encoder_id in request.encoder_ids:
        encoders.get_ready(session, encoder_id, lab_id=caller.lab_id)
    job = jobs.create_job(session, caller, orm.JobKind.EVALUATE, {"cohort_id": cohort.id})
    evaluation = orm.Evaluation(
        lab_id=caller.lab_id,
        name=request.name or f"label-efficiency-{request.label_column}"[: orm.NAME_LENGTH],
        cohort_id=cohort.id,
        job_id=job.id,
        label_column=request.label_column,
        config=config,
    )
    session.add(evaluation)
    session.commit()
    dispatcher.submit(job.id)
    return evaluation


def get(session: Session, evaluation_id: str, *, lab_id: str) -> orm.Evaluation:
    return repository.get_or_404(session, orm.Evaluation, evaluation_id, lab_id=lab_id)


def plot_png(evaluation: orm.Evaluation) -> bytes:
    """Label-efficiency curves: mean +- std over seeds per model, one panel per metric."""
    if evaluation.status is not orm.ArtifactStatus.READY:
        raise Conflict(f"evaluation {evaluation.id} is {evaluation.status.value}; its plot exists once it is ready")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from models.protocol import METRICS, fraction_label

    models = sorted({entry["model"] for entry in evaluation.summary})
    fractions = sorted({entry["fraction"] for entry in evaluation.summary})
    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS) + 2.5, 4.4), squeeze=False)
    for axis, metric in zip(axes[0], METRICS, strict=True):
        for model in models:
            points = sorted(
                (e["fraction"], e[metric]["mean"], e[metric]["std"])
                for e in evaluation.summary
                if e["model"] == model and e[metric] is not None
            )
            if not points:
                continue
            xs, means, stds = (list(v) for v in zip(*points, strict=True))
            style = "--" if "/" not in model else "-"
            axis.plot(xs, means, style, marker="o", markersize=3, label=model)
            axis.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                              [m + s for m, s in zip(means, stds, strict=True)], alpha=0.15)
        axis.set_xscale("log")
        axis.set_xticks(fractions, [fraction_label(f) for f in fractions], rotation=45)
        axis.minorticks_off()
        axis.set_xlabel("labelled training samples used")
        axis.set_title(metric.replace("_", " "))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test score (mean +- std over seeds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8, title="dashed: baselines")
    figure.suptitle(f"{evaluation.name}: {evaluation.label_column}")
    figure.tight_layout(rect=(0.0, 0.0, 0.86, 1.0))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def delete_evaluation(*, session: Session, store: ArtifactStore, caller: Caller, evaluation_id: str) -> None:
    """Delete an evaluation (nothing is made from one). Commits."""
    evaluation = get(session, evaluation_id, lab_id=caller.lab_id)
    deletion.remove_made(
        session=session, store=store, caller=caller, row=evaluation, found=lineage.Dependents([], [], [], []),
        force=False,
    )
