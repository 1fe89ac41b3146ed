"""The fenced writes of a step's attempts: started, completed, failed, and its progress.
Each raises `OwnershipLost` (nothing written) once the flow run no longer holds the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from regjobs import catalogue
from regjobs.catalogue import (
    StepStatus,
)
from regjobs.errors import Classified, ErrorClass
from regjobs.ledger.rows import (
    _ms,
    _steps,
)
from regjobs.ledger.runs import _owned
from regjobs.ledger.view import _publish
from regjobs.models import (
    StepAttempt,
    StepEvidence,
    utcnow,
)
from regjobs.settings import get_settings


@dataclass(frozen=True)
class Attempt:
    #: Counts every attempt of the step in every run of the job.
    number: int
    generation: int
    not_before: datetime | None
    #: Results of the completed steps this one needs (directly or not), by step id.
    inputs: Mapping[str, dict[str, Any]]
    #: An earlier attempt with this generation's idempotency key began: its effect may
    #: exist already, so a step whose outside system takes no key looks before it acts.
    repeat: bool = False


def start_attempt(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    step_id: str,
    flow_run_id: str | None,
    task_run_id: str | None,
) -> Attempt:
    """Record that an attempt of a step starts: `running`, or `retrying` from the second
    attempt of this run on. Raises OwnershipLost (nothing written) if the run lost the job."""
    now = utcnow()
    job = _owned(session, job_id, epoch)
    rows = _steps(session, job_id)
    row = rows[step_id]
    row.attempts += 1
    row.run_attempts += 1
    row.generation_attempts += 1
    row.stalled_since = None
    row.status = StepStatus.RUNNING if row.run_attempts == 1 else StepStatus.RETRYING
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
            epoch=epoch,
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
    _publish(session, job, rows.values())
    return Attempt(
        row.attempts, row.generation, row.not_before, inputs, repeat=row.generation_attempts > 1
    )


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
        # No attempt object of this session is read after it: nothing to bring up to date.
        .execution_options(synchronize_session=False)
    )


def complete_attempt(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    step_id: str,
    attempt: int,
    result: dict[str, Any],
    warning: str | None,
) -> None:
    job = _owned(session, job_id, epoch)
    now = utcnow()
    rows = _steps(session, job_id)
    row = rows[step_id]
    row.status = StepStatus.COMPLETED
    row.stalled_since = None
    row.result_data = result
    row.warning = warning
    row.error_message = None
    row.next_action = None
    row.action_fields = None
    row.action_since = row.action_expires_at = None
    row.progress = None
    row.not_before = None
    row.finished_at = now
    row.duration_ms = _ms(row.started_at, now)
    _finish_attempt(session, job_id, step_id, attempt, status=StepStatus.COMPLETED, warning=warning)
    _publish(session, job, rows.values())


def fail_attempt(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    step_id: str,
    attempt: int,
    error: Classified,
    will_retry: bool,
    evidence: bytes | None = None,
) -> int | None:
    """Record a failed attempt: `retrying` when another attempt follows, else `failed`.
    A screenshot of the attempt is kept with it; returns its id."""
    job = _owned(session, job_id, epoch)
    now = utcnow()
    rows = _steps(session, job_id)
    row = rows[step_id]
    row.error_message = error.message
    row.progress = None
    row.stalled_since = None
    if will_retry:
        row.status = StepStatus.RETRYING
        row.not_before = now + timedelta(seconds=error.retry_after) if error.retry_after else None
    elif error.error_class is ErrorClass.NEEDS_PERSON and error.fields:
        # SPEC "Waiting for a person": not a failure; the job waits for corrected input
        # (`provide_input`) until `action_expires_at`, then fails with `fix_config`.
        row.status = StepStatus.ACTION_REQUIRED
        row.next_action = None
        row.action_fields = list(error.fields)
        row.action_since = now
        row.action_expires_at = now + timedelta(seconds=get_settings().input_timeout)
        row.duration_ms = _ms(row.started_at, now)
    else:
        row.status = StepStatus.FAILED
        row.next_action = error.next_action.value
        # What a person can correct (a step that needs a person), for the form that asks.
        row.action_fields = list(error.fields) or None
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
    _publish(session, job, rows.values())
    return evidence_id


def set_progress(*, session: Session, job_id: str, epoch: int, step_id: str, progress: str) -> None:
    job = _owned(session, job_id, epoch)
    rows = _steps(session, job_id)
    row = rows[step_id]
    if row.progress != progress:
        row.progress = progress
        _publish(session, job, rows.values())
