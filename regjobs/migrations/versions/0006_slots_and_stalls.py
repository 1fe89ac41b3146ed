"""browser slots held, stalls

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 01:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import regjobs.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("slot_since", regjobs.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("stalled_since", regjobs.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stalled_since", regjobs.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.drop_column("stalled_since")
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.drop_column("stalled_since")
        batch_op.drop_column("slot_since")
