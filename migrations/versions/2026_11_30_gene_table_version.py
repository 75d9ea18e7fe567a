"""gene table version on cohorts, encoders, predictors and predictions; cohort gene keys

Revision ID: d5a8e3f1b7c2
Revises: c41d7e2a9f03
Create Date: 2026-11-30 09:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'd5a8e3f1b7c2'
down_revision: str | Sequence[str] | None = 'c41d7e2a9f03'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows made before this revision keep NULL: no gene table resolved their identifiers.
VERSIONED = ('cohort', 'encoder', 'predictor', 'prediction')


def upgrade() -> None:
    """Upgrade schema."""
    for table in VERSIONED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('gene_table_version', sa.String(length=200), nullable=True))
    with op.batch_alter_table('cohort', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gene_keys', sa.JSON(), server_default='{}', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('cohort', schema=None) as batch_op:
        batch_op.drop_column('gene_keys')
    for table in reversed(VERSIONED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('gene_table_version')
