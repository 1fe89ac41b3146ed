"""releases: the release a job is pinned to, the work queue of each run, known releases

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import regjobs.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code_version", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_registration_jobs_code_version"), ["code_version"], unique=False
        )
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("work_queue", sa.String(length=100), nullable=True))
    op.create_table(
        "code_releases",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("made_at", sa.String(length=40), nullable=True),
        sa.Column("registered_at", regjobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("code_releases")
    with op.batch_alter_table("registration_job_runs", schema=None) as batch_op:
        batch_op.drop_column("work_queue")
    with op.batch_alter_table("registration_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registration_jobs_code_version"))
        batch_op.drop_column("code_version")
