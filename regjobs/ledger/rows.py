"""The ledger's common ground: its errors, the texts a waiting job shows, and how a write
reads and locks a job's rows (the job first, always).

Every function of the ledger takes the session (`*, session, ...`) and does one step of one
transaction; the caller commits (`regjobs.db.transaction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from regjobs import catalogue, translate
from regjobs.catalogue import (
    ACTIVE_JOB_STATUSES,
    DISABLED_REASON,
    StepStatus,
)
from regjobs.config import ExecutionConfig, public_errors
from regjobs.crypto import decrypt_json, reencrypt
from regjobs.errors import NonRetryableStepError
from regjobs.models import (
    Base,
    JobRun,
    RegistrationJob,
    RegistrationJobStep,
    StepAttempt,
    utcnow,
)

ACTIVE = tuple(s.value for s in ACTIVE_JOB_STATUSES)

#: What a job waiting for its flow run says, by stage.
WAITING_FOR_DISPATCH = "waiting to be handed to Prefect"
QUEUED = "queued in Prefect: waiting for a worker to start it"
NOT_STARTED = "created with auto_start false: waiting for POST .../start"


class JobNotFound(LookupError):
    pass


class Conflict(Exception):
    """The job's state does not allow the transition (HTTP 409)."""


class ActiveJobExists(Conflict):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"the restaurant already has an active registration job: {job_id}")
        self.job_id = job_id


class TooManyActiveJobs(Exception):
    """The organisation has as many active jobs as it may (REGJOBS_ORG_ACTIVE_JOB_LIMIT):
    HTTP 429; another create or retry is taken once some of its jobs have ended."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the organisation has {limit} active registration jobs, its limit "
            "(REGJOBS_ORG_ACTIVE_JOB_LIMIT); try again once some have ended"
        )
        self.limit = limit


class OwnershipLost(NonRetryableStepError):
    """This flow run no longer holds the job: it must start no step and write nothing."""


class RunRefused(Exception):
    """This flow run must not run the job; the message says why (and who has it)."""


class ConfigInvalid(Exception):
    """The job's stored config no longer validates (an older version stored it, or a bound
    changed since). The message names each field and what is wrong, never a value."""


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
    return {row.step_id: row for row in session.scalars(query)}


def _current_run(session: Session, job: RegistrationJob) -> JobRun | None:
    if job.run_generation == 0:
        return None
    return session.scalars(
        select(JobRun).where(JobRun.job_id == job.id, JobRun.generation == job.run_generation)
    ).one_or_none()


def job_config(job: RegistrationJob) -> ExecutionConfig:
    """The job's config, decrypted; ConfigInvalid when it no longer validates."""
    try:
        return ExecutionConfig.from_secret_dict(decrypt_json(job.config_encrypted))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in public_errors(exc)
        )
        # `from None`: the ValidationError (its input: the whole config) goes no further.
        raise ConfigInvalid(f"{translate.CONFIG_INVALID}: {problems}") from None


def encrypted_job_ids(*, session: Session) -> list[str]:
    """Every job with a stored (encrypted) config, oldest first."""
    return list(session.scalars(select(RegistrationJob.id).order_by(RegistrationJob.created_at)))


def reencrypt_config(*, session: Session, job_id: str) -> int:
    """Encrypt the job's stored config again with the first secret key (key rotation);
    1 when it was rewritten."""
    job = _job(session, job_id, lock=True)
    job.config_encrypted = reencrypt(job.config_encrypted)
    return 1


def disabled_steps(config: ExecutionConfig) -> frozenset[str]:
    switches = config.switches()
    return frozenset(s.id for s in catalogue.STEPS if s.switch and not switches[s.switch])


def _table(model: type[Base]) -> Table:
    """A model's table, for plain inserts."""
    return cast(Table, model.__table__)


@dataclass(frozen=True)
class StepState:
    status: StepStatus
    reason: str | None
    result: dict[str, Any] | None


def _state(row: RegistrationJobStep) -> StepState:
    return StepState(StepStatus(row.status), row.skip_reason, row.result_data)


def step_states(*, session: Session, job_id: str) -> dict[str, StepState]:
    return {k: _state(v) for k, v in _steps(session, job_id).items()}


def _requeue(row: RegistrationJobStep) -> None:
    row.status = StepStatus.PENDING
    row.run_attempts = 0
    row.slot_since = row.stalled_since = None
    # Whoever holds that lease lost the job; it gives its slot back to Prefect itself.
    row.slot_lease = None
    row.started_at = row.finished_at = row.duration_ms = None
    row.error_message = row.warning = row.skip_reason = row.progress = None
    row.next_action = None
    row.action_fields = None
    row.action_since = row.action_expires_at = None
    row.not_before = None
    row.task_run_id = None


def _queue_again(rows: Iterable[RegistrationJobStep], from_step: str | None) -> None:
    """Queue every step not completed, and `from_step` with everything that depends on it
    even when completed (each of those gets a new idempotency generation). A step waiting
    for a person stays so: only a person's input queues it (`provide_input`), and a run
    resumed without one (from the Prefect UI) finds it still waiting."""
    rerun = {from_step} | catalogue.dependents(from_step) if from_step else set()
    for row in rows:
        if row.step_id in rerun and row.status == StepStatus.COMPLETED:
            row.generation += 1
            row.generation_attempts = 0
            row.result_data = None
            _requeue(row)
        elif row.status not in (StepStatus.COMPLETED, StepStatus.ACTION_REQUIRED):
            _requeue(row)


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
    failed = [
        catalogue.BY_ID[s].label for s, st in states.items() if st.status is StepStatus.FAILED
    ]
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
