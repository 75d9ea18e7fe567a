"""Encoder lineage questions that jobs and pages ask; no service dependencies, so workers can import it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db import orm


def pretraining_overlap(session: Session, encoder: orm.Encoder, cohort: orm.Cohort) -> str | None:
    """Why the encoder's pretraining saw ``cohort``'s samples, or None: it, or an encoder it continued from,
    was pretrained on this cohort or on an identical upload of its matrix."""
    step: orm.Encoder | None = encoder
    continued = False
    while step is not None:
        trained_on = session.get(orm.Cohort, step.cohort_id)
        if step.cohort_id == cohort.id or (trained_on is not None and trained_on.checksum == cohort.checksum):
            where = "this cohort" if step.cohort_id == cohort.id else f"cohort {step.cohort_id}, the same matrix"
            who = f"continued from encoder {step.id}, pretrained" if continued else "pretrained"
            return f"{who} on {where}, so its pretraining (without labels) saw the test samples"
        step = None if step.parent_encoder_id is None else session.get(orm.Encoder, step.parent_encoder_id)
        continued = True
    return None
