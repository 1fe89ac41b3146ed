"""the Prefect lease of a step's browser slot; the start time a run was given in Prefect

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import regjobs.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slot_lease", sa.String(length=36), nullable=True))
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scheduled_at", regjobs.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        batch_op.drop_column("scheduled_at")
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.drop_column("slot_lease")
