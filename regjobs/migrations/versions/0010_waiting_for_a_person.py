"""waiting for a person: config versions, since and until when a step waits, suspended runs
and the resumes Prefect must still be told

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import regjobs.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = regjobs.models.UTCDateTime(timezone=True)
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("config_version", sa.Integer(), server_default="1", nullable=False)
        )
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("action_since", when, nullable=True))
        batch_op.add_column(sa.Column("action_expires_at", when, nullable=True))
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", when, nullable=True))
        batch_op.add_column(sa.Column("resume_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resume_requested_at", when, nullable=True))
        batch_op.add_column(sa.Column("resume_delivered_at", when, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        for name in ("resume_delivered_at", "resume_requested_at", "resume_version"):
            batch_op.drop_column(name)
        batch_op.drop_column("suspended_at")
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.drop_column("action_expires_at")
        batch_op.drop_column("action_since")
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.drop_column("config_version")
