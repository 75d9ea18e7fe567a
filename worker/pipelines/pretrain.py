"""Pretraining job: fit preprocessing on the cohort, train the SSL method, store the encoder artifact.

The encoder's gene panel is its cohort's stored gene list; fitting and prediction later match other inputs to
it by canonical gene key (``models.gene_table``). Continued pretraining of an encoder on a second cohort is
not implemented, so no alignment happens here.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import orm
from app.db.base import new_id
from models import checkpoint
from models.gene_table import gene_table_version
from models.methods import METHODS
from models.preprocessing import Preprocessor
from worker import checkpoints
from worker.context import JobContext, Recorder
from worker.pipelines.common import load_cohort


def run(ctx: JobContext) -> Recorder:
    """Pretrain the encoder row attached to this job; return its recorder."""
    with ctx.session_factory() as session:
        encoder = session.scalars(select(orm.Encoder).where(orm.Encoder.job_id == ctx.job_id)).one()
        encoder_id, method, params, seed = encoder.id, encoder.method, dict(encoder.params), encoder.seed
        cohort_id = encoder.cohort_id
    data = load_cohort(ctx, cohort_id)
    preprocessor = Preprocessor.fit(data.matrix.values, data.matrix.genes, log1p=data.log1p(str(ctx.params["log1p"])))
    x = preprocessor.transform(data.matrix.values)
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

    ssl.fit(x, seed=seed, on_epoch_end=on_epoch_end, state=resume.state)
    payload = checkpoint.encoder_payload(ssl.encoder, preprocessor, method=method, params=params)
    key = f"encoders/{encoder_id}/{new_id()}.pt"
    sha256 = ctx.store.put_bytes(key, checkpoint.dumps(payload))
    version = gene_table_version()

    def record(session: Session) -> None:
        row = session.get_one(orm.Encoder, encoder_id)
        row.status = orm.ArtifactStatus.READY
        row.artifact_key, row.artifact_sha256 = key, sha256
        row.loss_curve = [float(v) for v in losses]
        checkpoints.discard_on_commit(session, ctx)
        row.n_genes = len(preprocessor.genes)
        row.gene_table_version = version
        row.preprocessing = {
            "log1p": preprocessor.log1p,
            "requested_log1p": ctx.params["log1p"],
            "standardise": "per-gene mean/std of the pretraining cohort",
            "n_samples": int(x.shape[0]),
        }

    return record
