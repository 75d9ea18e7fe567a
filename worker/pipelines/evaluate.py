"""Evaluation job: the label-efficiency protocol on one labelled cohort (models.protocol)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import orm
from app.lineage.repository import pretraining_overlap
from models import checkpoint
from models.gene_table import align_by_gene_key
from models.protocol import PretrainedEncoder, ProtocolConfig, run_protocol
from worker.context import JobContext, Recorder
from worker.pipelines.common import ArtifactIntegrityError, CohortData, load_cohort, require_coverage
from worker.pipelines.fit import group_ids, labelled_set


def _pretrained(
    ctx: JobContext, data: CohortData, rows: np.ndarray, encoders: list[tuple[str, str, str, str | None]]
) -> dict[str, PretrainedEncoder]:
    """Registry encoders with the labelled samples in their own panel and preprocessing."""
    loaded = {}
    for encoder_id, key, sha256, overlap in encoders:
        encoder, preprocessor, info = checkpoint.encoder_from_payload(
            checkpoint.loads(ctx.store.get_bytes(key, sha256=sha256))
        )
        aligned, report = align_by_gene_key(data.matrix.values[rows], data.matrix.genes, preprocessor.genes)
        require_coverage(ctx, report, cohort_id=data.cohort_id, model=f"encoder {encoder_id}", use="evaluating it")
        note = f"{info['method']} encoder {encoder_id}; cohort covers {report.coverage_percent} of its panel"
        if overlap is not None:
            note += f"; {overlap}"
        loaded[f"encoder:{encoder_id}"] = PretrainedEncoder(encoder, preprocessor.transform(aligned), note)
    return loaded


def run(ctx: JobContext) -> Recorder:
    """Run the protocol configured on the evaluation row attached to this job; return its recorder."""
    with ctx.session_factory() as session:
        evaluation = session.scalars(select(orm.Evaluation).where(orm.Evaluation.job_id == ctx.job_id)).one()
        evaluation_id, cohort_id = evaluation.id, evaluation.cohort_id
        label_column, config = evaluation.label_column, dict(evaluation.config)
        cohort = session.get(orm.Cohort, cohort_id)
        if cohort is None:
            raise ArtifactIntegrityError(f"cohort {cohort_id} of this evaluation was deleted")
        encoder_rows = [
            (e.id, e.artifact_key or "", e.artifact_sha256 or "", pretraining_overlap(session, e, cohort))
            for e in session.scalars(select(orm.Encoder).where(orm.Encoder.id.in_(config["encoder_ids"])))
        ]
    missing = sorted(set(config["encoder_ids"]) - {row[0] for row in encoder_rows})
    if missing:
        raise ArtifactIntegrityError(f"encoder(s) {', '.join(missing)} of this evaluation were deleted")
    data = load_cohort(ctx, cohort_id)
    labelled = labelled_set(data, label_column)
    unlabelled = np.setdiff1d(np.arange(len(data.matrix.sample_ids)), labelled.rows)
    protocol = ProtocolConfig(
        fractions=tuple(config["fractions"]),
        n_seeds=config["n_seeds"],
        test_size=config["test_size"],
        methods=tuple(config["methods"]),
        method_params=config["method_params"],
        heads=tuple(config["heads"]),
        baselines=tuple(config["baselines"]),
        head_params=config["head_params"],
        logreg_c=config["logreg_c"],
        pca_components=config["pca_components"],
        log1p=data.log1p(),  # the cohort's value kind, as detected or declared at upload
    )
    result = run_protocol(
        data.matrix.values[labelled.rows],
        labelled.y,
        labelled.classes,
        groups=labelled.groups,
        x_unlabelled=data.matrix.values[unlabelled] if unlabelled.size else None,
        groups_unlabelled=group_ids(data, unlabelled),
        pretrained=_pretrained(ctx, data, labelled.rows, encoder_rows),
        config=protocol,
        on_progress=lambda step, total, message: ctx.report(step, None, total_epochs=total, stage=message),
        on_epoch=lambda epoch, loss: ctx.raise_if_stopped(),
    )
    ids = data.matrix.sample_ids
    splits = [
        {
            "seed": split["seed"],
            "test_sample_ids": [ids[labelled.rows[i]] for i in split["test"]],
            "train_pool_sample_ids": [ids[labelled.rows[i]] for i in split["train_pool"]],
            "train_pool_first_fraction": split["train_pool_first_fraction"],
            "unlabelled_left_out_sample_ids": [ids[unlabelled[i]] for i in split["unlabelled_left_out"]],
            "n_unlabelled_used": split["n_unlabelled_used"],
        }
        for split in result.splits
    ]

    def record(session: Session) -> None:
        row = session.get_one(orm.Evaluation, evaluation_id)
        row.status = orm.ArtifactStatus.READY
        row.runs, row.summary, row.label_savings = result.runs, result.summary, result.label_savings
        row.timings = {"seconds": result.timings, "notes": result.notes, "splits": splits,
                       "classes": labelled.classes, "dropped_classes": labelled.dropped,
                       "n_labelled": int(labelled.rows.size), "n_unlabelled": int(unlabelled.size)}

    return record
