"""prediction created_by: who requested a prediction, so that its requester may delete it

Revision ID: c4e8b1f7a2d3
Revises: a9d4c7e2f5b1
Create Date: 2026-11-30 13:00:00.000000

Predictions made before this revision keep NULL: nobody is known to have requested them, and only an admin
of their lab deletes them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'c4e8b1f7a2d3'
down_revision: str | Sequence[str] | None = 'a9d4c7e2f5b1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_by', sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_prediction_created_by_app_user'), 'app_user', ['created_by'], ['id']
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_prediction_created_by_app_user'), type_='foreignkey')
        batch_op.drop_column('created_by')
