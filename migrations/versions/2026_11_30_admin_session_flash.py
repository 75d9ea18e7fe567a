"""admin session flash: the one-off message of the last form action, kept server-side

Revision ID: d7f2a9c3e5b8
Revises: c4e8b1f7a2d3
Create Date: 2026-11-30 14:00:00.000000

The message used to travel in a cookie, cut to fit one; a refusal naming many rows lost its end (the
guidance). It is now kept with the admin session and cleared when a page shows it.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'd7f2a9c3e5b8'
down_revision: str | Sequence[str] | None = 'c4e8b1f7a2d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('admin_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flash', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('admin_session', schema=None) as batch_op:
        batch_op.drop_column('flash')
