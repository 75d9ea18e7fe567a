"""Pretraining job: fit preprocessing on the cohort, train the SSL method, store the encoder artifact.

From scratch, the encoder's gene panel is its cohort's stored gene list. Continued pretraining starts from
a parent encoder's weights and keeps its panel: the cohort's columns are matched to the panel by canonical
gene key (``models.gene_table``), panel genes the cohort lacks are filled with the mean, and a cohort
covering less of the panel than the prediction gate is refused. Its standardisation comes from the cohort
(genes it lacks keep the parent's statistics) or, on request, from the parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import new_id
from app.errors import InvalidInput
from app.lineage.repository import ancestry
from models import checkpoint
from models.gene_table import align_by_gene_key, gene_table_version
from models.methods import METHODS
from models.preprocessing import Preprocessor
from worker import checkpoints
from worker.context import JobContext, Recorder
from worker.pipelines.common import CohortData, load_cohort, require_coverage


@dataclass(frozen=True)
class Inputs:
    """The preprocessed training matrix, its preprocessing and, when continuing, where training starts."""

    x: np.ndarray
    preprocessor: Preprocessor
    init_encoder: dict[str, torch.Tensor] | None = None
    lineage: dict[str, Any] = field(default_factory=dict)  # continued: parent, standardisation, alignment


def _parent_artifact(ctx: JobContext, parent_id: str) -> tuple[str, str, list[str]]:
    """Storage key and checksum of the parent encoder's weights, and the cohorts it was pretrained on."""
    with ctx.session_factory() as session:
        parent = session.get(orm.Encoder, parent_id)
        if parent is None:
            raise InvalidInput(f"encoder {parent_id}, which this pretraining continues, was deleted")
        if parent.artifact_key is None or parent.artifact_sha256 is None:
            raise InvalidInput(f"encoder {parent_id}, which this pretraining continues, has no stored weights")
        return parent.artifact_key, parent.artifact_sha256, _pretraining_cohorts(session, parent)


def _pretraining_cohorts(session: Session, encoder: orm.Encoder) -> list[str]:
    """Every cohort the encoder's weights were pretrained on, oldest first."""
    return [step.cohort_id for step in reversed(ancestry(session, encoder))]


def continued_inputs(ctx: JobContext, data: CohortData, parent_id: str) -> Inputs:
    """The cohort on the parent encoder's panel, standardised as the job asks, and the parent's weights."""
    key, sha256, parent_cohorts = _parent_artifact(ctx, parent_id)
    encoder, parent_pre, _ = checkpoint.encoder_from_payload(checkpoint.loads(ctx.store.get_bytes(key, sha256=sha256)))
    matrix = data.matrix
    aligned, report = align_by_gene_key(matrix.values, matrix.genes, parent_pre.genes)
    require_coverage(ctx, report, cohort_id=data.cohort_id, model=f"encoder {parent_id}", use="continued pretraining")
    log1p = data.log1p(str(ctx.params["log1p"]))
    if ctx.params.get("standardise_on") == "parent":
        if log1p != parent_pre.log1p:
            raise InvalidInput(
                f"cohort {data.cohort_id} holds {data.value_kind} values ({'with' if log1p else 'without'} log1p) but "
                f"encoder {parent_id}'s statistics are for values {'with' if parent_pre.log1p else 'without'} log1p: "
                "standardise on the cohort instead, or declare the cohort's values at upload"
            )
        preprocessor = parent_pre
        lineage: dict[str, Any] = {"standardise_on": "parent", "standardise": "the parent encoder's per-gene mean/std"}
    else:
        if log1p != parent_pre.log1p and report.n_missing:
            # The genes it lacks would keep the parent's statistics, fitted on the other scale: later input
            # holding those genes would be standardised with the wrong mean and std.
            raise InvalidInput(
                f"cohort {data.cohort_id} holds {data.value_kind} values ({'with' if log1p else 'without'} log1p) "
                f"but encoder {parent_id} was pretrained on values {'with' if parent_pre.log1p else 'without'} "
                f"log1p, and the cohort lacks {report.n_missing} of its {report.n_panel} panel genes (e.g. "
                f"{', '.join(report.missing[:3])}), which would keep the parent's statistics on the other scale: "
                "continue on a cohort on the encoder's scale, or one that holds its whole panel"
            )
        preprocessor = Preprocessor.fit(aligned, parent_pre.genes, log1p=log1p, fallback=parent_pre)
        lineage = {
            "standardise_on": "cohort",
            "standardise": "per-gene mean/std of this cohort; panel genes it lacks keep the parent encoder's",
        }
    lineage |= {
        "continued_from": parent_id,
        "pretraining_cohorts": [*parent_cohorts, data.cohort_id],
        "alignment": report.to_dict(),
    }
    return Inputs(preprocessor.transform(aligned), preprocessor, encoder.state_dict(), lineage)


def run(ctx: JobContext) -> Recorder:
    """Pretrain the encoder row attached to this job; return its recorder."""
    with ctx.session_factory() as session:
        encoder = session.scalars(select(orm.Encoder).where(orm.Encoder.job_id == ctx.job_id)).one()
        encoder_id, method, params, seed = encoder.id, encoder.method, dict(encoder.params), encoder.seed
        cohort_id, parent_id = encoder.cohort_id, encoder.parent_encoder_id
    data = load_cohort(ctx, cohort_id)
    if parent_id is None:
        preprocessor = Preprocessor.fit(
            data.matrix.values, data.matrix.genes, log1p=data.log1p(str(ctx.params["log1p"]))
        )
        inputs = Inputs(preprocessor.transform(data.matrix.values), preprocessor)
    else:
        inputs = continued_inputs(ctx, data, parent_id)
    preprocessor = inputs.preprocessor
    method_cls = METHODS[method]
    ssl = method_cls(len(preprocessor.genes), method_cls.params_class.from_dict(params))
    total = int(params["epochs"])
    resume = checkpoints.resume_point(ctx)
    losses = list(resume.losses)

    def on_epoch_end(epoch: int, loss: float) -> None:
        ctx.report(epoch, loss, total_epochs=total, stage="pretrain")
        losses.append(loss)
        every = ctx.checkpoint_every_epochs
        if every and epoch % every == 0 and epoch < total:
            checkpoints.save(ctx, attempt=resume.attempt, state=ssl.training_state(), losses=losses)

    ssl.fit(inputs.x, seed=seed, on_epoch_end=on_epoch_end, state=resume.state, init_encoder=inputs.init_encoder)
    payload = checkpoint.encoder_payload(ssl.encoder, preprocessor, method=method, params=params)
    key = f"encoders/{encoder_id}/{new_id()}.pt"
    sha256 = ctx.put_artifact(key, checkpoint.dumps(payload))
    version = gene_table_version()
    summary: dict[str, Any] = {
        "log1p": preprocessor.log1p,
        "requested_log1p": ctx.params["log1p"],
        "standardise": "per-gene mean/std of the pretraining cohort",
        "n_samples": int(inputs.x.shape[0]),
        "pretraining_cohorts": [cohort_id],
        **inputs.lineage,
    }

    def record(session: Session) -> None:
        row = session.get_one(orm.Encoder, encoder_id)
        row.status = orm.ArtifactStatus.READY
        row.artifact_key, row.artifact_sha256 = key, sha256
        row.loss_curve = [float(v) for v in losses]
        checkpoints.discard_on_commit(session, ctx)
        row.n_genes = len(preprocessor.genes)
        row.gene_table_version = version
        row.preprocessing = summary

    return record
