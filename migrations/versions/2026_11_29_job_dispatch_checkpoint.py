"""job dispatch time and training checkpoint

Revision ID: 5d1f0b7c9e21
Revises: 0637b2832155
Create Date: 2026-11-29 19:10:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '5d1f0b7c9e21'
down_revision: str | Sequence[str] | None = '0637b2832155'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dispatched_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('checkpoint', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('checkpoint')
        batch_op.drop_column('dispatched_at')
