"""SQLAlchemy models: organisations and keys, jobs, the step ledger and its attempts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ACTIVE_JOB_STATUSES = ("pending", "in_progress")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the key, so an operator can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(12))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    organisation: Mapped[Organisation] = relationship()


class RegistrationJob(Base):
    __tablename__ = "registration_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    restaurant_id: Mapped[str] = mapped_column(String(200))
    restaurant_name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    #: The execution config, secrets included, Fernet-encrypted.
    config_encrypted: Mapped[str] = mapped_column(Text)
    #: The execution config with every secret masked, for responses and operators.
    config_public: Mapped[dict[str, Any]]
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    #: Every flow run this job has had, oldest first.
    flow_run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    #: When the current (latest) flow run of the job began; older Prefect states are stale.
    run_started_at: Mapped[datetime | None]
    #: Renewed every few seconds by the flow-run process while it runs the job: a lease.
    heartbeat_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)

    steps: Mapped[list[RegistrationJobStep]] = relationship(
        back_populates="job", order_by="RegistrationJobStep.step_number"
    )

    __table_args__ = (
        # At most one active job per restaurant and organisation, enforced by the database.
        Index(
            "uq_registration_jobs_one_active",
            "organisation_id",
            "restaurant_id",
            unique=True,
            sqlite_where=text("status IN ('pending', 'in_progress')"),
            postgresql_where=text("status IN ('pending', 'in_progress')"),
        ),
        UniqueConstraint("organisation_id", "idempotency_key", name="uq_registration_jobs_idem"),
    )


class RegistrationJobStep(Base):
    """The step ledger: one row per job and step, the current state of that step."""

    __tablename__ = "registration_job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    step_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    #: Attempts since the step was last queued; every attempt ever is in StepAttempt.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    result_data: Mapped[dict[str, Any] | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    warning: Mapped[str | None] = mapped_column(Text)
    #: Why a skipped step did not run ("disabled", or the dependency that failed).
    skip_reason: Mapped[str | None] = mapped_column(Text)
    #: Progress inside a long step ("option set 14 of 73").
    progress: Mapped[str | None] = mapped_column(Text)
    #: Prefect task run of the current attempt.
    task_run_id: Mapped[str | None] = mapped_column(String(36))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    #: The next attempt must not start before this (an outside system's Retry-After).
    not_before: Mapped[datetime | None]
    #: Bumped each time a completed step is deliberately executed again (retry from_step);
    #: part of the idempotency key sent to outside systems.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    job: Mapped[RegistrationJob] = relationship(back_populates="steps")


class StepAttempt(Base):
    """Every attempt of every step, kept for good."""

    __tablename__ = "registration_step_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    task_run_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error_class: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    warning: Mapped[str | None] = mapped_column(Text)
    #: Evidence of a failed attempt (a screenshot with secrets masked), if any.
    evidence_path: Mapped[str | None] = mapped_column(Text)


class StepEvidence(Base):
    """A screenshot of a failed browser attempt (password fields masked), kept in the
    database so the API can serve it whichever machine's worker took it."""

    __tablename__ = "registration_step_evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(50), default="image/png")
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
