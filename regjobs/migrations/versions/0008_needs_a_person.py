"""needs a person: the fields a step asks to correct; refused logins per email

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import regjobs.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("action_fields", sa.JSON(), nullable=True))
    op.create_table(
        "login_refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email_key", sa.String(length=64), nullable=False),
        sa.Column("refused_at", regjobs.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_login_refusals_key_at", "login_refusals", ["email_key", "refused_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_login_refusals_key_at", table_name="login_refusals")
    op.drop_table("login_refusals")
    with op.batch_alter_table("registration_job_steps", schema=None) as batch_op:
        batch_op.drop_column("action_fields")
