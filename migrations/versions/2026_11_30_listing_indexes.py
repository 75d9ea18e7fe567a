"""listing indexes: each lab's list newest first without a sort, the audit log's filters, samples in order

Revision ID: a9d4c7e2f5b1
Revises: f3c8a5e2d9b4
Create Date: 2026-11-30 12:00:00.000000

Every list (cohorts, jobs, encoders, predictors, evaluations) reads one lab's rows newest first: an index on
(lab_id, created_at, id) walked backwards gives a page without sorting all of the lab's rows, and replaces
the single-column lab_id index it begins with. A predictor's predictions are listed the same way by
predictor. The single-column indexes they replace are dropped: besides being redundant, SQLite (which keeps
no statistics unless asked) chose the lab_id index over the predictor_id one and read all of a lab's
predictions to find one predictor's.
"""
import contextlib
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'a9d4c7e2f5b1'
down_revision: str | Sequence[str] | None = 'f3c8a5e2d9b4'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTED = ('cohort', 'job', 'encoder', 'predictor', 'evaluation')
# (name, table, columns) of the indexes this revision adds, and of those it replaces.
ADDED = (
    *((f'ix_{table}_lab_id_created_at', table, ['lab_id', 'created_at', 'id']) for table in LISTED),
    ('ix_prediction_predictor_id_created_at', 'prediction', ['predictor_id', 'created_at', 'id']),
    ('ix_audit_event_lab_id_action_at', 'audit_event', ['lab_id', 'action', 'at']),
    ('ix_audit_event_lab_id_user_id_at', 'audit_event', ['lab_id', 'user_id', 'at']),
    ('ix_cohort_sample_cohort_id_position', 'cohort_sample', ['cohort_id', 'position']),
    ('ix_cohort_storage_key', 'cohort', ['storage_key']),
)
REPLACED = (
    *((f'ix_{table}_lab_id', table, ['lab_id']) for table in (*LISTED, 'prediction')),
    ('ix_prediction_predictor_id', 'prediction', ['predictor_id']),
    ('ix_cohort_sample_cohort_id', 'cohort_sample', ['cohort_id']),
)


def _concurrently() -> contextlib.AbstractContextManager[object]:
    """On PostgreSQL, outside a transaction, so that each index is built CONCURRENTLY: a plain CREATE INDEX
    on a large audit_event, cohort_sample or prediction table would block every write while it builds."""
    context = op.get_context()
    return context.autocommit_block() if context.dialect.name == 'postgresql' else contextlib.nullcontext()


def _create(indexes: Sequence[tuple[str, str, list[str]]]) -> None:
    with _concurrently():
        for name, table, columns in indexes:
            op.create_index(name, table, columns, unique=False, postgresql_concurrently=True)


def _drop(indexes: Sequence[tuple[str, str, list[str]]]) -> None:
    with _concurrently():
        for name, table, _ in indexes:
            op.drop_index(name, table_name=table, postgresql_concurrently=True)


def upgrade() -> None:
    """Upgrade schema."""
    _create(ADDED)
    _drop(REPLACED)


def downgrade() -> None:
    """Downgrade schema."""
    _create(REPLACED)
    _drop(ADDED)
