"""attempts of the current idempotency generation

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 07:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("generation_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    # Steps attempted before this column existed: count every attempt as this generation's,
    # so a repeated step looks before it acts (the safe side).
    op.execute("UPDATE registration_job_steps SET generation_attempts = attempts")


def downgrade() -> None:
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.drop_column("generation_attempts")
