"""The step ledger: every write to jobs, steps and attempts goes through this module.

The flow and its tasks record here what happens (keyword-only functions, one short
transaction each); the API reads it. Completed steps keep their result, so any re-run of a
job reuses them instead of executing the step again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from regjobs import catalogue
from regjobs.catalogue import DISABLED_REASON, StepStatus
from regjobs.config import ExecutionConfig
from regjobs.crypto import decrypt_json, encrypt_json
from regjobs.db import retry_on_disconnect, session_scope
from regjobs.errors import Classified, NonRetryableStepError
from regjobs.models import (
    RegistrationJob,
    RegistrationJobStep,
    StepAttempt,
    StepEvidence,
    utcnow,
)

FINAL = frozenset(s.value for s in catalogue.FINAL_STEP_STATUSES)


class JobNotFound(LookupError):
    pass


class JobCancelled(NonRetryableStepError):
    """The job was cancelled: no step may start."""


class RunRefused(Exception):
    """This flow run must not run the job (it was cancelled before it began)."""


# ---------------------------------------------------------------------------- creating


def create_job(
    session: Session,
    *,
    organisation_id: str,
    restaurant_id: str,
    config: ExecutionConfig,
    idempotency_key: str | None = None,
) -> RegistrationJob:
    """Insert a job and its twelve pending steps (flushed, not committed)."""
    job = RegistrationJob(
        organisation_id=organisation_id,
        restaurant_id=restaurant_id,
        restaurant_name=config.restaurant.name,
        status="pending",
        config_encrypted=encrypt_json(config.secret_dict()),
        config_public=config.public_dict(),
        flow_run_ids=[],
        idempotency_key=idempotency_key,
    )
    session.add(job)
    session.flush()
    session.add_all(
        RegistrationJobStep(
            job_id=job.id,
            step_id=s.id,
            step_number=s.number,
            status="pending",
            attempts=0,
            generation=0,
        )
        for s in catalogue.STEPS
    )
    session.flush()
    return job


def job_config(job: RegistrationJob) -> ExecutionConfig:
    return ExecutionConfig.from_secret_dict(decrypt_json(job.config_encrypted))


def disabled_steps(config: ExecutionConfig) -> frozenset[str]:
    switches = config.switches()
    return frozenset(s.id for s in catalogue.STEPS if s.switch and not switches[s.switch])


# ------------------------------------------------------------------------ flow side


@dataclass(frozen=True)
class StepState:
    status: StepStatus
    reason: str | None
    result: dict[str, Any] | None


@dataclass(frozen=True)
class RunStart:
    config: ExecutionConfig
    steps: Mapping[str, StepState]


def _job(session: Session, job_id: str, *, lock: bool = False) -> RegistrationJob:
    """The job row; with `lock`, locked (PostgreSQL) and read again from the database, even
    when this session loaded it before."""
    query = select(RegistrationJob).where(RegistrationJob.id == job_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    job = session.scalars(query).one_or_none()
    if job is None:
        raise JobNotFound(f"registration job {job_id} does not exist")
    return job


def _steps(session: Session, job_id: str, *, fresh: bool = False) -> dict[str, RegistrationJobStep]:
    """The job's step rows; `fresh` reads them again even if this session has them."""
    query = select(RegistrationJobStep).where(RegistrationJobStep.job_id == job_id)
    if fresh:
        query = query.execution_options(populate_existing=True)
    rows = session.scalars(query).all()
    return {row.step_id: row for row in rows}


def _state(row: RegistrationJobStep) -> StepState:
    return StepState(StepStatus(row.status), row.skip_reason, row.result_data)


@retry_on_disconnect
def begin_run(*, job_id: str, flow_run_id: str | None, cancelling: bool = False) -> RunStart:
    """Mark the job in progress for this flow run and queue every step not completed.

    Completed steps keep their result (they are reused); everything else goes back to
    pending, so a re-run executes exactly the steps that did not complete. A job cancelled
    through the API is run again only by a deliberate rerun: if this flow run is itself
    being cancelled (`cancelling`), RunRefused.
    """
    now = utcnow()
    with session_scope() as session:
        job = _job(session, job_id, lock=True)
        if job.cancel_requested_at is not None and cancelling:
            raise RunRefused("the job was cancelled before this flow run began")
        job.status = "in_progress"
        job.started_at = job.started_at or now
        job.run_started_at = now
        job.heartbeat_at = now
        job.completed_at = None
        job.error_message = None
        job.cancel_requested_at = None
        if flow_run_id and flow_run_id not in job.flow_run_ids:
            job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
        job.flow_run_id = flow_run_id or job.flow_run_id
        rows = _steps(session, job_id)
        for row in rows.values():
            if row.status != StepStatus.COMPLETED:
                _requeue(row)
        return RunStart(config=job_config(job), steps={k: _state(v) for k, v in rows.items()})


@retry_on_disconnect
def current_flow_run(*, job_id: str) -> tuple[str | None, str]:
    """The flow run the job last ran in, and the job's recorded status."""
    with session_scope() as session:
        job = _job(session, job_id)
        return job.flow_run_id, job.status


@retry_on_disconnect
def heartbeat(*, job_id: str) -> None:
    """Renew the job's lease: its flow-run process is alive and working on it."""
    with session_scope() as session:
        session.execute(
            update(RegistrationJob)
            .where(RegistrationJob.id == job_id)
            .values(heartbeat_at=utcnow())
        )


def jobs_without_heartbeat(session: Session, *, older_than: timedelta) -> list[RegistrationJob]:
    """In-progress jobs whose lease ran out: their worker is gone."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(
            select(RegistrationJob).where(
                RegistrationJob.status == "in_progress",
                RegistrationJob.heartbeat_at < cutoff,
            )
        )
    )


def jobs_queued_since(session: Session, *, older_than: timedelta) -> list[RegistrationJob]:
    """Started jobs whose flow run has not begun for a while (queued, or claimed by a worker
    that died): the translation tells which."""
    cutoff = utcnow() - older_than
    return list(
        session.scalars(
            select(RegistrationJob).where(
                RegistrationJob.status == "pending",
                RegistrationJob.flow_run_id.is_not(None),
                RegistrationJob.created_at < cutoff,
            )
        )
    )


@retry_on_disconnect
def cancel_requested(*, job_id: str) -> bool:
    with session_scope() as session:
        return _job(session, job_id).cancel_requested_at is not None


def _requeue(row: RegistrationJobStep) -> None:
    row.status = StepStatus.PENDING
    row.attempts = 0
    row.started_at = row.finished_at = row.duration_ms = None
    row.error_message = row.warning = row.skip_reason = row.progress = None
    row.not_before = None
    row.task_run_id = None


@retry_on_disconnect
def step_states(*, job_id: str) -> dict[str, StepState]:
    with session_scope() as session:
        return {k: _state(v) for k, v in _steps(session, job_id).items()}


@retry_on_disconnect
def skip_steps(*, job_id: str, reasons: Mapping[str, str]) -> None:
    if not reasons:
        return
    now = utcnow()
    with session_scope() as session:
        rows = _steps(session, job_id)
        for step_id, reason in reasons.items():
            row = rows[step_id]
            row.status = StepStatus.SKIPPED
            row.skip_reason = reason
            row.finished_at = now


@dataclass(frozen=True)
class Attempt:
    number: int
    generation: int
    not_before: datetime | None
    #: Results of the completed steps this one needs (directly or not), by step id.
    inputs: Mapping[str, dict[str, Any]]


@retry_on_disconnect
def start_attempt(
    *, job_id: str, step_id: str, flow_run_id: str | None, task_run_id: str | None
) -> Attempt:
    """Record that an attempt of a step starts; `retrying` from the second attempt on."""
    now = utcnow()
    with session_scope() as session:
        if _job(session, job_id, lock=True).cancel_requested_at is not None:
            raise JobCancelled("the job was cancelled; the step did not start")
        rows = _steps(session, job_id)
        row = rows[step_id]
        row.attempts += 1
        row.status = StepStatus.RUNNING if row.attempts == 1 else StepStatus.RETRYING
        row.started_at = row.started_at or now
        row.finished_at = None
        row.flow_run_id = flow_run_id
        row.task_run_id = task_run_id
        session.add(
            StepAttempt(
                job_id=job_id,
                step_id=step_id,
                attempt=row.attempts,
                flow_run_id=flow_run_id,
                task_run_id=task_run_id,
                status=StepStatus.RUNNING,
                started_at=now,
            )
        )
        # Outputs flow along the edges, also past one step (option sets use the subdomain).
        inputs = {
            n: rows[n].result_data or {}
            for n in catalogue.ancestors(step_id)
            if rows[n].status == StepStatus.COMPLETED
        }
        return Attempt(row.attempts, row.generation, row.not_before, inputs)


def _finish_attempt(
    session: Session, job_id: str, step_id: str, number: int, **values: Any
) -> None:
    session.execute(
        update(StepAttempt)
        .where(
            StepAttempt.job_id == job_id,
            StepAttempt.step_id == step_id,
            StepAttempt.attempt == number,
            StepAttempt.finished_at.is_(None),
        )
        .values(finished_at=utcnow(), **values)
    )


@retry_on_disconnect
def complete_attempt(
    *, job_id: str, step_id: str, attempt: int, result: dict[str, Any], warning: str | None
) -> None:
    now = utcnow()
    with session_scope() as session:
        row = _steps(session, job_id)[step_id]
        row.status = StepStatus.COMPLETED
        row.result_data = result
        row.warning = warning
        row.error_message = None
        row.progress = None
        row.not_before = None
        row.finished_at = now
        row.duration_ms = _ms(row.started_at, now)
        _finish_attempt(
            session, job_id, step_id, attempt, status=StepStatus.COMPLETED, warning=warning
        )


@retry_on_disconnect
def fail_attempt(
    *,
    job_id: str,
    step_id: str,
    attempt: int,
    error: Classified,
    will_retry: bool,
    evidence: bytes | None = None,
) -> int | None:
    """Record a failed attempt: `retrying` when another attempt follows, else `failed`.
    A screenshot of the attempt is kept with it; returns its id."""
    now = utcnow()
    with session_scope() as session:
        row = _steps(session, job_id)[step_id]
        row.error_message = error.message
        row.progress = None
        if will_retry:
            row.status = StepStatus.RETRYING
            row.not_before = (
                now + timedelta(seconds=error.retry_after) if error.retry_after else None
            )
        else:
            row.status = StepStatus.FAILED
            row.finished_at = now
            row.duration_ms = _ms(row.started_at, now)
        evidence_id = None
        if evidence is not None:
            shot = StepEvidence(job_id=job_id, step_id=step_id, attempt=attempt, data=evidence)
            session.add(shot)
            session.flush()
            evidence_id = shot.id
        _finish_attempt(
            session,
            job_id,
            step_id,
            attempt,
            status=StepStatus.FAILED,
            error_class=error.error_class.value,
            error_message=error.message,
            evidence_path=f"evidence:{evidence_id}" if evidence_id else None,
        )
        return evidence_id


def evidence_index(session: Session, *, job_id: str) -> dict[str, list[tuple[int, int]]]:
    """(attempt, evidence id) of every screenshot of the job, by step."""
    rows = session.execute(
        select(StepEvidence.step_id, StepEvidence.attempt, StepEvidence.id)
        .where(StepEvidence.job_id == job_id)
        .order_by(StepEvidence.id)
    ).tuples()
    index: dict[str, list[tuple[int, int]]] = {}
    for step_id, attempt, evidence_id in rows:
        index.setdefault(step_id, []).append((attempt, evidence_id))
    return index


@retry_on_disconnect
def set_progress(*, job_id: str, step_id: str, progress: str) -> None:
    with session_scope() as session:
        session.execute(
            update(RegistrationJobStep)
            .where(RegistrationJobStep.job_id == job_id, RegistrationJobStep.step_id == step_id)
            .values(progress=progress, updated_at=utcnow())
        )


@retry_on_disconnect
def finish_run(*, job_id: str, status: str, error_message: str | None) -> None:
    with session_scope() as session:
        job = _job(session, job_id, lock=True)
        if job.cancel_requested_at is not None:
            return  # cancelled through the API, which recorded the end already
        job.status = status
        job.error_message = error_message
        job.completed_at = utcnow()


# ------------------------------------------------------------------------- API side


def request_cancel(session: Session, *, job: RegistrationJob) -> None:
    """Record a cancel: no step starts from now on; unfinished steps are cancelled."""
    now = utcnow()
    job.cancel_requested_at = now
    job.status = "cancelled"
    job.completed_at = now
    job.error_message = "cancelled on request"
    for row in _steps(session, job.id).values():
        if row.status in FINAL:
            continue
        was_running = row.status in (StepStatus.RUNNING, StepStatus.RETRYING)
        row.status = StepStatus.CANCELLED
        row.skip_reason = (
            "the job was cancelled" if was_running else "the job was cancelled before it started"
        )
        row.finished_at = now
        row.duration_ms = _ms(row.started_at, now)
        row.progress = None
    _close_open_attempts(session, job.id, StepStatus.CANCELLED, None)


def queue_retry(session: Session, *, job: RegistrationJob, from_step: str | None) -> None:
    """Queue the job again: every step not completed, and `from_step` with everything that
    depends on it even when completed (each gets a new idempotency generation)."""
    rerun = {from_step} | catalogue.dependents(from_step) if from_step else set()
    for row in _steps(session, job.id).values():
        if row.step_id in rerun and row.status == StepStatus.COMPLETED:
            row.generation += 1
            row.result_data = None
            _requeue(row)
        elif row.status != StepStatus.COMPLETED:
            _requeue(row)
    job.status = "in_progress"
    job.cancel_requested_at = None
    job.completed_at = None
    job.error_message = None


def record_outcome(
    session: Session,
    *,
    job: RegistrationJob,
    flow_run_id: str,
    observed_at: datetime | None,
    status: str,
    error_message: str | None,
    steps: Mapping[str, tuple[str, str | None, str | None]],
) -> bool:
    """Write down an end the flow could not record itself (its process died), as seen in
    Prefect. Only for the job's current flow run, and only if what was seen is newer than
    that run's start; returns whether anything was written.

    The caller read the job and its steps before it asked Prefect; the flow may have
    recorded its own end since. So both are read again here (the job locked), and what the
    flow wrote is never overwritten."""
    job = _job(session, job.id, lock=True)
    if job.status in ("completed", "failed", "cancelled") or job.flow_run_id != flow_run_id:
        return False
    if observed_at and job.run_started_at and observed_at < job.run_started_at:
        return False
    now = utcnow()
    job.status = status
    job.error_message = error_message
    job.completed_at = now
    for row in _steps(session, job.id, fresh=True).values():
        if row.status in FINAL or row.step_id not in steps:
            continue
        row.status, row.error_message, row.skip_reason = steps[row.step_id]
        row.finished_at = now
        row.duration_ms = _ms(row.started_at, now)
        row.progress = None
    if status == "cancelled":
        _close_open_attempts(session, job.id, StepStatus.CANCELLED, None)
    else:
        _close_open_attempts(session, job.id, StepStatus.FAILED, "the flow-run process ended")
    return True


def _close_open_attempts(
    session: Session, job_id: str, status: StepStatus, error: str | None
) -> None:
    session.execute(
        update(StepAttempt)
        .where(StepAttempt.job_id == job_id, StepAttempt.finished_at.is_(None))
        .values(finished_at=utcnow(), status=status, error_message=error)
    )


def failure_summary(states: Mapping[str, StepState]) -> str | None:
    """The job's error message: which steps failed, or None when none did."""
    failed = [catalogue.BY_ID[s].label for s, st in states.items() if st.status == "failed"]
    if not failed:
        return None
    return "failed step" + ("s" if len(failed) > 1 else "") + ": " + ", ".join(failed)


def completed_ok(states: Iterable[StepState]) -> bool:
    return all(
        st.status == StepStatus.COMPLETED
        or (st.status == StepStatus.SKIPPED and st.reason == DISABLED_REASON)
        for st in states
    )


def _ms(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else int((end - start).total_seconds() * 1000)
