"""predictor calibration and environment; prediction uncertainty and drift

Revision ID: 9b4e2f6a1c37
Revises: 7a3c9e1d4b20
Create Date: 2026-11-29 20:30:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '9b4e2f6a1c37'
down_revision: str | Sequence[str] | None = '7a3c9e1d4b20'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('predictor', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calibration', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('environment', sa.JSON(), server_default='{}', nullable=False))
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uncertainty', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('drift', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_column('drift')
        batch_op.drop_column('uncertainty')
    with op.batch_alter_table('predictor', schema=None) as batch_op:
        batch_op.drop_column('environment')
        batch_op.drop_column('calibration')
