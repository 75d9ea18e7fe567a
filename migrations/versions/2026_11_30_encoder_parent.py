"""encoder parent: the encoder a continued pretraining started from

Revision ID: e7b2c9d4a1f6
Revises: d5a8e3f1b7c2
Create Date: 2026-11-30 10:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'e7b2c9d4a1f6'
down_revision: str | Sequence[str] | None = 'd5a8e3f1b7c2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema: every existing encoder was pretrained from scratch (NULL parent)."""
    with op.batch_alter_table('encoder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_encoder_id', sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_encoder_parent_encoder_id'), ['parent_encoder_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_encoder_parent_encoder_id_encoder'), 'encoder', ['parent_encoder_id'], ['id']
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('encoder', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_encoder_parent_encoder_id_encoder'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_encoder_parent_encoder_id'))
        batch_op.drop_column('parent_encoder_id')
