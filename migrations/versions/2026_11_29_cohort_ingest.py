"""cohort ingest: orientation, value-kind source, duplicate_of, ingest report; value_kind continuous -> log

Revision ID: 7a3c9e1d4b20
Revises: 5d1f0b7c9e21
Create Date: 2026-11-29 20:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '7a3c9e1d4b20'
down_revision: str | Sequence[str] | None = '5d1f0b7c9e21'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('cohort', schema=None) as batch_op:
        batch_op.add_column(sa.Column('orientation', sa.String(length=16), server_default='samples_as_rows', nullable=False))
        batch_op.add_column(sa.Column('value_kind_source', sa.String(length=16), server_default='detected', nullable=False))
        batch_op.add_column(sa.Column('duplicate_of', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('ingest', sa.JSON(), server_default='{}', nullable=False))
    # Value kinds are now counts | tpm | log; "continuous" meant already transformed, i.e. no log1p.
    op.execute("UPDATE cohort SET value_kind = 'log' WHERE value_kind = 'continuous'")


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("UPDATE cohort SET value_kind = 'continuous' WHERE value_kind IN ('log', 'tpm')")
    with op.batch_alter_table('cohort', schema=None) as batch_op:
        batch_op.drop_column('ingest')
        batch_op.drop_column('duplicate_of')
        batch_op.drop_column('value_kind_source')
        batch_op.drop_column('orientation')
