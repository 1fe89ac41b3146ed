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

from regjobs.catalogue import ACTIVE_JOB_STATUSES, JobStatus, StepStatus

#: SQL for "the job is active", for the partial unique index (one active job per restaurant).
ACTIVE_SQL = "status IN ({})".format(
    ", ".join(f"'{s.value}'" for s in JobStatus if s in ACTIVE_JOB_STATUSES)
)


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
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.PENDING.value)
    #: The execution config, secrets included, Fernet-encrypted.
    config_encrypted: Mapped[str] = mapped_column(Text)
    #: The execution config with every secret masked, for responses and operators.
    config_public: Mapped[dict[str, Any]]
    #: The flow run that has (or last had) the job.
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
    error_message: Mapped[str | None] = mapped_column(Text)

    #: Bumped with every change anyone can see: the number of the job's last event (the
    #: ETag, and the `id:` of its Server-Sent Events).
    version: Mapped[int] = mapped_column(Integer, default=0)
    #: The fencing token: taken anew by each flow run that begins the job, and by a cancel.
    #: Every write of a flow-run process is conditional on the epoch it began with.
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    #: Run requests made (create with auto_start, start, retry, an operator's rerun); the
    #: latest one is the job's current run. Part of the flow run's Prefect idempotency key.
    run_generation: Mapped[int] = mapped_column(Integer, default=0)
    #: Why a job that should run has not started ("waiting for Prefect", "queued").
    pending_reason: Mapped[str | None] = mapped_column(Text)
    #: The release (`regjobs.release`) the job's first run began on; every later run is
    #: made on that release's work queue, until an operator moves it (`regjobs jobs upgrade`).
    code_version: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The state of the current flow run as Prefect last showed it (the reconciler's view).
    flow_run_state: Mapped[str | None] = mapped_column(String(50))
    #: Since when the job has waited for its flow run to start past the limit (no worker?).
    stalled_since: Mapped[datetime | None]
    #: The materialised public state, written with every change: the job as GET answers
    #: it (JSON), its `/progress` and its list entry. Reads return these and nothing else.
    view: Mapped[str | None] = mapped_column(Text)
    progress_view: Mapped[str | None] = mapped_column(Text)
    summary_view: Mapped[str | None] = mapped_column(Text)
    #: The number of the stored config's version: 1 at create, one more for every
    #: corrected input a person gave (`POST .../input`). A suspended flow run is resumed
    #: with this number only (Prefect keeps run inputs in plain text).
    config_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

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
            sqlite_where=text(ACTIVE_SQL),
            postgresql_where=text(ACTIVE_SQL),
        ),
        UniqueConstraint("organisation_id", "idempotency_key", name="uq_registration_jobs_idem"),
        # The list endpoint: an organisation's jobs, newest first.
        Index("ix_registration_jobs_org_created", "organisation_id", "created_at", "id"),
    )


class RegistrationJobStep(Base):
    """The step ledger: one row per job and step, the current state of that step."""

    __tablename__ = "registration_job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    step_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=StepStatus.PENDING.value)
    #: Attempts in all runs of the job (each one is in StepAttempt).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Attempts since the step was last queued: the second and later are `retrying`.
    run_attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    result_data: Mapped[dict[str, Any] | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    #: What a person can do about the step's failure (`NextAction`), when it failed.
    next_action: Mapped[str | None] = mapped_column(String(20))
    #: The config fields a person can correct, when the step failed needing a person
    #: (`["account.email", "account.password"]`).
    action_fields: Mapped[list[str] | None] = mapped_column(JSON)
    #: Since when the step waits for a person (`action_required`), and until when it may
    #: (REGJOBS_INPUT_TIMEOUT from then): past it the job fails with `fix_config`.
    action_since: Mapped[datetime | None]
    action_expires_at: Mapped[datetime | None]
    warning: Mapped[str | None] = mapped_column(Text)
    #: Why a skipped step did not run ("disabled", or the dependency that failed).
    skip_reason: Mapped[str | None] = mapped_column(Text)
    #: Progress inside a long step ("option set 14 of 73").
    progress: Mapped[str | None] = mapped_column(Text)
    #: Since when the step holds a browser slot (set once Prefect granted it, cleared once
    #: it was given back): the reconciler's count of the slots live holders have.
    slot_since: Mapped[datetime | None]
    #: Prefect's lease of that slot (its id): only the holder of this lease may say it gave
    #: the slot back. Kept, with `slot_since` cleared, when the reconciler found the
    #: holder's run ended: a lease the reconciler frees by its id (`ledger.leases_to_free`).
    slot_lease: Mapped[str | None] = mapped_column(String(36))
    #: Since when the step has been running (or waiting) past its own limit, as the
    #: reconciler saw it; cleared by the step's next change.
    stalled_since: Mapped[datetime | None]
    #: Prefect task run of the current attempt.
    task_run_id: Mapped[str | None] = mapped_column(String(36))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    #: The next attempt must not start before this (an outside system's Retry-After).
    not_before: Mapped[datetime | None]
    #: Bumped each time a completed step is deliberately executed again (retry from_step);
    #: part of the idempotency key sent to outside systems.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    #: Attempts with the current generation's idempotency key: from the second on, an
    #: earlier one may have had its effect already.
    generation_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
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
    #: The job's epoch held by the flow run that made the attempt.
    epoch: Mapped[int | None] = mapped_column(Integer)
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


class JobRun(Base):
    """One run request of a job and the flow run made for it: the transactional outbox.

    A create (with auto_start), start or retry commits a row here together with the job;
    the dispatcher creates the flow run (Prefect idempotency key `<job id>:<generation>`)
    and records its id. A cancel or a dead run sets what Prefect must still be told
    (`cancel_requested_at`, `crash_message`); the dispatcher delivers it when Prefect
    answers. Rows are kept: they are the job's run history.
    """

    __tablename__ = "registration_job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    #: "api" (created by the dispatcher) or "prefect" (an operator's run, seen at its start).
    source: Mapped[str] = mapped_column(String(10), default="api")
    flow_run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]
    #: The start time the run was given in Prefect (its place in the work pool's queue,
    #: which Prefect orders by it): `ledger.runs_to_dispatch` says why.
    scheduled_at: Mapped[datetime | None]
    dispatch_attempts: Mapped[int] = mapped_column(Integer, default=0)
    dispatch_error: Mapped[str | None] = mapped_column(Text)
    #: The run must not start (cancelled, superseded or recorded dead) unless an operator
    #: reruns it deliberately (a higher Prefect run count).
    stopped_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    cancel_delivered_at: Mapped[datetime | None]
    crash_message: Mapped[str | None] = mapped_column(Text)
    crash_delivered_at: Mapped[datetime | None]
    began_at: Mapped[datetime | None]
    #: The Prefect work queue its flow run was made on (its release's: `regjobs.release`).
    work_queue: Mapped[str | None] = mapped_column(String(100))
    #: Prefect's run count when this flow run last began the job.
    begin_run_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Since when the flow run is suspended waiting for a person (it gave back its
    #: process, worker slot, browser and browser slot); cleared when it begins again
    #: (Prefect resumes it with the same id and run count: `begin_run` knows it by this).
    suspended_at: Mapped[datetime | None]
    #: The resume Prefect must still be told (the outbox): the config version a person's
    #: input stored, and when it was delivered.
    resume_version: Mapped[int | None] = mapped_column(Integer)
    resume_requested_at: Mapped[datetime | None]
    resume_delivered_at: Mapped[datetime | None]

    #: (So the job row is inserted first when both are new.)
    job: Mapped[RegistrationJob] = relationship()

    __table_args__ = (UniqueConstraint("job_id", "generation", name="uq_job_runs_generation"),)


class JobEvent(Base):
    """Every change of a job or one of its steps, in order: the Server-Sent Events feed."""

    __tablename__ = "registration_job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("registration_jobs.id"))
    #: The job's version after this event; grows by one per event of the job.
    seq: Mapped[int] = mapped_column(Integer)
    #: "job" or "step".
    kind: Mapped[str] = mapped_column(String(10))
    #: The new state (JSON): the job's summary, or the step as GET shows it.
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),)


class LoginRefusal(Base):
    """A login an outside system refused, for the per-email limit (`regjobs.refusals`):
    the email only as a keyed hash, never the address itself."""

    __tablename__ = "login_refusals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: HMAC-SHA256 (hex) of the normalised email, keyed with a key derived for this alone.
    email_key: Mapped[str] = mapped_column(String(64))
    refused_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_login_refusals_key_at", "email_key", "refused_at"),)


class ControlLease(Base):
    """A role one process holds at a time (the reconciler): who, until when, and what it
    last saw. On PostgreSQL the holder also keeps an advisory lock; the row is its report."""

    __tablename__ = "control_leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    #: Bumped at every change of holder.
    term: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None]
    renewed_at: Mapped[datetime | None]
    status: Mapped[dict[str, Any] | None]


class CodeRelease(Base):
    """A release the job database knows (`regjobs db upgrade` run from its folder records
    it): its work queue and each step's code, so a job can be moved to it and told which
    steps' code changed (`ledger.releases`)."""

    __tablename__ = "code_releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(100))
    commit: Mapped[str | None] = mapped_column(String(64))
    #: step id -> hash of its code (`regjobs.release.fingerprints`).
    steps: Mapped[dict[str, Any]]
    made_at: Mapped[str | None] = mapped_column(String(40))
    #: When the job database first heard of it (the order `jobs upgrade` calls newer).
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
