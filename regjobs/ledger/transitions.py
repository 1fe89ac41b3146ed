"""The API's writes: creating jobs and the transitions start, cancel and retry.

Each is a compare-and-set on the job's status: of two at once, exactly one wins and the
other gets `Conflict`. A create or retry over the organisation's limit of active jobs gets
`TooManyActiveJobs`; a second active job of a restaurant fails the insert (IntegrityError).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regjobs import catalogue
from regjobs.catalogue import (
    JobStatus,
    StepStatus,
)
from regjobs.config import ExecutionConfig
from regjobs.crypto import encrypt_json
from regjobs.db import bulk_insert
from regjobs.ledger.rows import (
    ACTIVE,
    NOT_STARTED,
    WAITING_FOR_DISPATCH,
    Conflict,
    TooManyActiveJobs,
    _close_open_attempts,
    _current_run,
    _job,
    _ms,
    _queue_again,
    _requeue,
    _steps,
    _table,
)
from regjobs.ledger.view import _publish, _render
from regjobs.models import (
    Base,
    JobEvent,
    JobRun,
    Organisation,
    RegistrationJob,
    RegistrationJobStep,
    new_id,
    utcnow,
)
from regjobs.settings import get_settings


@lru_cache
def _new_steps() -> tuple[RegistrationJobStep, ...]:
    """The twelve step rows of a new job (for its first view; not rows of any job). Every
    attribute is set (None where the row has nothing): an unset one is looked up on each
    read, and a burst of creates reads them thousands of times."""
    unset = {a.key: None for a in RegistrationJobStep.__mapper__.column_attrs}
    return tuple(
        RegistrationJobStep(**{**unset, "step_id": s.id, "step_number": s.number,
                               "status": StepStatus.PENDING, "attempts": 0, "run_attempts": 0,
                               "generation": 0, "generation_attempts": 0})
        for s in catalogue.STEPS
    )  # fmt: skip


@dataclass(frozen=True)
class NewJob:
    """What a create asks for."""

    organisation_id: str
    restaurant_id: str
    config: ExecutionConfig
    idempotency_key: str | None = None
    auto_start: bool = True


def create_job(
    *,
    session: Session,
    organisation_id: str,
    restaurant_id: str,
    config: ExecutionConfig,
    idempotency_key: str | None = None,
    auto_start: bool = True,
) -> RegistrationJob:
    """Insert a job, its twelve pending steps, its first events and (with `auto_start`) its
    first run request; not committed: the dispatcher creates the flow run once this
    commits. A second active job of the restaurant, or a repeated idempotency key, fails
    the insert (IntegrityError): the database's unique indexes decide, not a check before.
    The returned job is not attached to the session."""
    new = NewJob(organisation_id, restaurant_id, config, idempotency_key, auto_start)
    return create_jobs(session=session, batch=[new])[0]


@dataclass(frozen=True)
class PreparedJob:
    """A new job made ready to insert: its row (with its first view) and the rows of its
    steps, events and first run request."""

    job: RegistrationJob
    rows: Mapping[type[Base], list[dict[str, Any]]]


def prepare_job(new: NewJob) -> PreparedJob:
    """Everything a create computes (its id, the encrypted config, the first view and its
    events) apart from the transaction: on SQLite writes take turns on one lock, so a
    burst of creates holds it only for the inserts (measured: docs/figures.md)."""
    job = RegistrationJob(
        id=new_id(),
        organisation_id=new.organisation_id,
        restaurant_id=new.restaurant_id,
        restaurant_name=new.config.restaurant.name,
        status=JobStatus.PENDING.value,
        config_encrypted=encrypt_json(new.config.secret_dict()),
        config_public=new.config.public_dict(),
        flow_run_ids=[],
        idempotency_key=new.idempotency_key,
        created_at=utcnow(),
        version=0,
        epoch=0,
        config_version=1,
        run_generation=1 if new.auto_start else 0,
        pending_reason=WAITING_FOR_DISPATCH if new.auto_start else NOT_STARTED,
    )
    events = _render(job, _new_steps(), {})
    steps = [
        {"job_id": job.id, "step_id": r.step_id, "step_number": r.step_number,
         "status": r.status, "attempts": 0, "run_attempts": 0, "generation": 0,
         "updated_at": job.created_at}
        for r in _new_steps()
    ]  # fmt: skip
    first_run = {
        "job_id": job.id,
        "generation": 1,
        "source": "api",
        "dispatch_attempts": 0,
        "requested_at": job.created_at,
        "begin_run_count": 0,
    }
    runs = [first_run] if new.auto_start else []
    row = {name: getattr(job, key) for name, key in _job_columns()}
    return PreparedJob(
        job,
        {RegistrationJob: [row], RegistrationJobStep: steps, JobRun: runs, JobEvent: events},
    )


@lru_cache
def _job_columns() -> tuple[tuple[str, str], ...]:
    return tuple((p.columns[0].name, p.key) for p in RegistrationJob.__mapper__.column_attrs)


def insert_jobs(*, session: Session, prepared: Sequence[PreparedJob]) -> list[RegistrationJob]:
    """Insert prepared jobs, one batch insert per table: the hot write of a burst of
    creates, so plain inserts (`COPY` on PostgreSQL), not the ORM's unit of work, and four
    statements whatever the number of jobs (measured: docs/figures.md). One refused job
    fails them all (IntegrityError): the caller tries them one by one then."""
    for model in (RegistrationJob, RegistrationJobStep, JobRun, JobEvent):
        bulk_insert(session, _table(model), [row for p in prepared for row in p.rows[model]])
    return [p.job for p in prepared]


def create_jobs(*, session: Session, batch: Sequence[NewJob]) -> list[RegistrationJob]:
    """`create_job` for several jobs at once (`prepare_job`, then `insert_jobs`)."""
    return insert_jobs(session=session, prepared=[prepare_job(new) for new in batch])


def room_for_active_jobs(*, session: Session, organisation_ids: Iterable[str]) -> dict[str, int]:
    """How many more active jobs each organisation may have (REGJOBS_ORG_ACTIVE_JOB_LIMIT).
    Locks the organisations' rows first (PostgreSQL; SQLite's write transaction holds the
    whole database already), so creates and retries of one organisation count in turn."""
    ids = sorted(set(organisation_ids))
    session.execute(select(Organisation.id).where(Organisation.id.in_(ids)).with_for_update())
    active = dict(
        session.execute(
            select(RegistrationJob.organisation_id, func.count())
            .where(RegistrationJob.organisation_id.in_(ids), RegistrationJob.status.in_(ACTIVE))
            .group_by(RegistrationJob.organisation_id)
        )
        .tuples()
        .all()
    )
    limit = get_settings().org_active_job_limit
    return {org: limit - active.get(org, 0) for org in ids}


def start_job(*, session: Session, job_id: str) -> RegistrationJob:
    """Request the first run of a job created with `auto_start: false`."""
    job = _job(session, job_id, lock=True)
    if job.status != JobStatus.PENDING or job.run_generation != 0:
        raise Conflict("the job has already been started")
    _request_run(session, job)
    _publish(session, job)
    return job


def _request_run(session: Session, job: RegistrationJob) -> None:
    job.run_generation += 1
    job.pending_reason = WAITING_FOR_DISPATCH
    session.add(
        JobRun(job_id=job.id, generation=job.run_generation, source="api", dispatch_attempts=0)
    )


def cancel_job(*, session: Session, job_id: str) -> RegistrationJob:
    """Cancel: from the commit on, no step starts (the epoch moves on, so the flow-run
    process can write nothing more) and unfinished steps are cancelled. Prefect is told by
    the dispatcher, now or when it answers again; a run not yet handed over never is."""
    job = _job(session, job_id, lock=True)
    if JobStatus(job.status).is_final:
        raise Conflict(f"the job is already {job.status}; nothing to cancel")
    now = utcnow()
    job.epoch += 1
    job.status = JobStatus.CANCELLED
    job.completed_at = now
    job.error_message = "cancelled on request"
    job.pending_reason = None
    for row in _steps(session, job.id).values():
        if row.status in catalogue.FINAL_STEP_STATUSES:
            continue
        was_running = row.status in (StepStatus.RUNNING, StepStatus.RETRYING)
        row.status = StepStatus.CANCELLED
        row.stalled_since = None
        row.skip_reason = (
            "the job was cancelled" if was_running else "the job was cancelled before it started"
        )
        row.finished_at = now
        row.duration_ms = _ms(row.started_at, now)
        row.progress = None
    _close_open_attempts(session, job.id, StepStatus.CANCELLED, None)
    run = _current_run(session, job)
    if run is not None and run.stopped_at is None:
        run.stopped_at = now
        if run.dispatched_at is not None or run.flow_run_id is not None:
            run.cancel_requested_at = now
    _publish(session, job)
    return job


def waiting_steps(*, session: Session, job_id: str) -> tuple[int, dict[str, list[str]]]:
    """The job's config version and the steps waiting for a person, with the fields each
    asks for (a read); Conflict when none waits."""
    job = _job(session, job_id)
    waiting = {
        r.step_id: list(r.action_fields or ())
        for r in sorted(_steps(session, job_id).values(), key=lambda r: r.step_number)
        if r.status == StepStatus.ACTION_REQUIRED
    }
    if not JobStatus(job.status).is_active or not waiting:
        raise Conflict(f"the job is {job.status} and no step waits for input")
    return job.config_version, waiting


def provide_input(
    *,
    session: Session,
    job_id: str,
    based_on: int,
    config_encrypted: str,
    config_public: dict[str, Any],
) -> RegistrationJob:
    """A person's corrected config, merged and checked by the caller from version
    `based_on`: stored as the next version, and every step waiting for a person queued
    again with a new idempotency generation (completed steps keep their results). The
    suspended flow run is resumed through the outbox (`outbox.deliveries`), Prefect up or
    not; a run still running other steps resumes itself (`runs.suspend_run`).

    Compare-and-set: Conflict unless the job is active, a step waits, and the stored config
    is still version `based_on` (of two inputs at once, one wins)."""
    job = _job(session, job_id, lock=True)
    rows = _steps(session, job_id)
    waiting = [r for r in rows.values() if r.status == StepStatus.ACTION_REQUIRED]
    if not JobStatus(job.status).is_active or not waiting:
        raise Conflict(f"the job is {job.status} and no step waits for input")
    if job.config_version != based_on:
        raise Conflict("another input was taken first; the job goes on with it")
    now = utcnow()
    job.config_encrypted = config_encrypted
    job.config_public = config_public
    job.config_version += 1
    for row in waiting:
        row.generation += 1
        row.generation_attempts = 0
        _requeue(row)
    run = _current_run(session, job)
    if run is not None and run.suspended_at is not None and run.stopped_at is None:
        run.resume_version = job.config_version
        run.resume_requested_at = now
        run.resume_delivered_at = None
    _publish(session, job, rows.values())
    return job


def retry_job(*, session: Session, job_id: str, from_step: str | None) -> RegistrationJob:
    """Queue an ended job again in a new run: every step not completed, and `from_step`
    with everything that depends on it even when completed (each gets a new idempotency
    generation). A second active job of the restaurant fails the flush (IntegrityError)."""
    job = _job(session, job_id, lock=True)
    status = JobStatus(job.status)
    if not status.is_final:
        raise Conflict(f"the job is {status.value}; only an ended job can be retried")
    if status is JobStatus.COMPLETED and from_step is None:
        raise Conflict("the job completed: nothing to retry (name a from_step to re-run)")
    if (
        room_for_active_jobs(session=session, organisation_ids=[job.organisation_id])[
            job.organisation_id
        ]
        < 1
    ):
        raise TooManyActiveJobs(get_settings().org_active_job_limit)
    _queue_again(_steps(session, job.id).values(), from_step)
    # Whatever is left of an earlier run (a process still ending) can write nothing more,
    # and what Prefect says of it (Cancelling, Crashed) is no longer about this job: the job
    # has no flow run until the dispatcher has made the new one.
    job.epoch += 1
    job.status = JobStatus.IN_PROGRESS
    job.completed_at = None
    job.error_message = None
    job.flow_run_id = None
    job.flow_run_state = None
    _request_run(session, job)
    session.flush()
    _publish(session, job)
    return job
