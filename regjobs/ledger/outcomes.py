"""What the reconciler records of what only Prefect saw: a dead or deleted run, a cancel in
the Prefect UI, a run that ended before it began, stalls. Each write is for the epoch the
reconciler looked at, and takes a new one doing so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from regjobs import catalogue
from regjobs.catalogue import (
    JobStatus,
    NextAction,
    StepStatus,
)
from regjobs.ledger.rows import (
    ACTIVE,
    QUEUED,
    _close_open_attempts,
    _current_run,
    _job,
    _ms,
    _steps,
)
from regjobs.ledger.transitions import _request_run
from regjobs.ledger.view import _publish
from regjobs.models import (
    JobRun,
    RegistrationJob,
    RegistrationJobStep,
    StepAttempt,
    utcnow,
)
from regjobs.schemas import JobPublic


def job_and_steps(
    *, session: Session, job_id: str
) -> tuple[RegistrationJob, list[RegistrationJobStep]]:
    job = _job(session, job_id)
    return job, list(_steps(session, job_id).values())


def record_outcome(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    flow_run_id: str,
    observed_at: datetime | None,
    public: JobPublic,
    tell_prefect: str | None = None,
) -> bool:
    """Write down an end only Prefect saw (a dead process, a deleted run, a cancel in the
    Prefect UI), as the translation made it from Prefect's state; takes a new epoch, so a
    process that is still alive can write nothing more. Only for the epoch and run the
    reconciler looked at, and only for what is newer than that run's start; returns
    whether anything was written. Steps the flow recorded as ended are never overwritten.
    `tell_prefect`: the run must be set Crashed in Prefect with this message (Prefect
    still thinks it alive)."""
    job = _job(session, job_id, lock=True)
    if (
        not JobStatus(job.status).is_active
        or job.epoch != epoch
        or job.flow_run_id != flow_run_id
        or (observed_at and job.run_started_at and observed_at < job.run_started_at)
    ):
        return False
    now = utcnow()
    seen = {s.step_id: s for s in public.steps}
    for row in _steps(session, job.id, fresh=True).values():
        step = seen.get(row.step_id)
        # A dead process holds no browser slot: its lease (kept) is one to free by its id.
        row.slot_since = None
        if row.status in catalogue.FINAL_STEP_STATUSES or step is None:
            continue
        row.status = step.status
        row.error_message = step.error_message
        row.skip_reason = step.skip_reason
        row.next_action = NextAction.RETRY.value if step.status is StepStatus.FAILED else None
        row.finished_at = now
        row.duration_ms = _ms(row.started_at, now)
        row.progress = None
    job.epoch += 1
    job.status = public.status
    job.error_message = public.error_message
    job.completed_at = now
    job.pending_reason = None
    job.flow_run_state = public.flow_run_state
    if public.status is JobStatus.CANCELLED:
        _close_open_attempts(session, job.id, StepStatus.CANCELLED, None)
    else:
        _close_open_attempts(session, job.id, StepStatus.FAILED, "the flow-run process ended")
    run = _current_run(session, job)
    if run is not None and run.flow_run_id == flow_run_id:
        run.stopped_at = now
        if tell_prefect:
            run.crash_message = tell_prefect
    _publish(session, job)
    return True


#: How many flow runs in a row may end before beginning their job (their infrastructure
#: could not start them) before the job fails rather than gets another.
RUNS_BEFORE_BEGIN = 3


def replace_unbegun_run(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    flow_run_id: str,
    reason: str,
    tell_prefect: str | None = None,
) -> bool:
    """The job's flow run ended before it began the job (its worker could not start it: a
    503 from Prefect's server, a worker lost while the run was Pending): nothing of the job
    ran, so a new run is requested instead of failing the job, up to RUNS_BEFORE_BEGIN
    runs in a row. Returns whether a new run was requested; False leaves the job to
    `record_outcome`. `tell_prefect`: as for `record_outcome`."""
    job = _job(session, job_id, lock=True)
    run = _current_run(session, job)
    if (
        not JobStatus(job.status).is_active
        or job.epoch != epoch
        or job.flow_run_id != flow_run_id
        or run is None
        or run.flow_run_id != flow_run_id
        or run.began_at is not None
    ):
        return False
    runs = session.scalars(
        select(JobRun).where(JobRun.job_id == job.id).order_by(JobRun.generation.desc())
    ).all()  # (a rerun's row takes a new generation, so this is the runs' order)
    unbegun = 0
    for earlier in runs:
        if earlier.began_at is not None:
            break
        unbegun += 1
    if unbegun >= RUNS_BEFORE_BEGIN:
        return False
    run.stopped_at = utcnow()
    run.crash_message = tell_prefect
    job.epoch += 1
    job.flow_run_id = None
    job.flow_run_state = None
    _request_run(session, job)
    job.pending_reason = (
        f"flow run {flow_run_id} ended before it began ({reason}); a new one was requested"
    )
    _publish(session, job)
    return True


def note_flow_run(
    *,
    session: Session,
    job_id: str,
    flow_run_id: str,
    state_name: str,
    queued: bool,
    queued_reason: str | None = None,
) -> None:
    """What Prefect shows of an active job's run while it lives (for operators); a queued
    run's reason is `queued_reason` when given (its release has no live worker)."""
    job = _job(session, job_id, lock=True)
    if job.flow_run_id != flow_run_id or not JobStatus(job.status).is_active:
        return
    reason = (queued_reason or QUEUED) if queued else None
    if (job.flow_run_state, job.pending_reason) != (state_name, reason):
        job.flow_run_state = state_name
        job.pending_reason = reason
        _publish(session, job)


@dataclass(frozen=True)
class Stall:
    job_id: str
    epoch: int
    #: Steps whose current attempt runs past the step's own timeout.
    step_ids: list[str]
    #: The job has waited past the limit for its flow run to start.
    job_waiting: bool


def stalls(
    *,
    session: Session,
    now: datetime,
    step_grace: float,
    timeout_scale: float,
    queue_limit: float,
) -> list[Stall]:
    """Active jobs with something stuck that is not marked yet: an attempt running past its
    step's timeout (plus `step_grace`), or a job waiting for its flow run to start longer
    than `queue_limit` seconds."""
    found: dict[str, tuple[int, list[str], bool]] = {}
    attempts = session.execute(
        select(
            RegistrationJob.id, RegistrationJob.epoch, StepAttempt.step_id, StepAttempt.started_at
        )
        .join(StepAttempt, StepAttempt.job_id == RegistrationJob.id)
        .join(
            RegistrationJobStep,
            (RegistrationJobStep.job_id == StepAttempt.job_id)
            & (RegistrationJobStep.step_id == StepAttempt.step_id),
        )
        .where(
            RegistrationJob.status.in_(ACTIVE),
            StepAttempt.finished_at.is_(None),
            RegistrationJobStep.stalled_since.is_(None),
            RegistrationJobStep.status.in_([StepStatus.RUNNING.value, StepStatus.RETRYING.value]),
        )
    ).tuples()
    for job_id, epoch, step_id, started_at in attempts:
        limit = catalogue.step(step_id).timeout_seconds * timeout_scale + step_grace
        if (now - started_at).total_seconds() > limit:
            found.setdefault(job_id, (epoch, [], False))[1].append(step_id)
    waiting = session.execute(
        select(RegistrationJob.id, RegistrationJob.epoch)
        .join(
            JobRun,
            (JobRun.job_id == RegistrationJob.id)
            & (JobRun.generation == RegistrationJob.run_generation),
        )
        .where(
            RegistrationJob.status.in_(ACTIVE),
            RegistrationJob.stalled_since.is_(None),
            JobRun.began_at.is_(None),
            JobRun.stopped_at.is_(None),
            JobRun.requested_at < now - timedelta(seconds=queue_limit),
        )
    ).tuples()
    for job_id, epoch in waiting:
        epoch_, steps, _ = found.get(job_id, (epoch, [], False))
        found[job_id] = (epoch_, steps, True)
    return [Stall(job_id, e, sorted(s), w) for job_id, (e, s, w) in found.items()]


def mark_stalled(
    *,
    session: Session,
    job_id: str,
    epoch: int,
    step_ids: Iterable[str],
    job_stalled: bool,
    since: datetime,
) -> bool:
    """Mark steps (and the job) as stalled since `since`, for the epoch the reconciler
    looked at; whether anything was newly marked."""
    job = _job(session, job_id, lock=True)
    if job.epoch != epoch or not JobStatus(job.status).is_active:
        return False
    rows = _steps(session, job_id)
    marked = False
    for step_id in step_ids:
        if rows[step_id].stalled_since is None:
            rows[step_id].stalled_since = since
            marked = True
    if job_stalled and job.stalled_since is None:
        job.stalled_since = since
        marked = True
    if marked:
        _publish(session, job, rows.values())
    return marked


#: The error of a step whose person never answered (`expire_wait`).
INPUT_EXPIRED = "no corrected input came before {at:%Y-%m-%d %H:%M} UTC (REGJOBS_INPUT_TIMEOUT)"


def expired_waits(*, session: Session, now: datetime) -> list[tuple[str, int]]:
    """Active jobs (id, epoch) with a step that waited for a person past its limit."""
    return list(
        session.execute(
            select(RegistrationJob.id, RegistrationJob.epoch)
            .join(RegistrationJobStep, RegistrationJobStep.job_id == RegistrationJob.id)
            .where(
                RegistrationJob.status.in_(ACTIVE),
                RegistrationJobStep.status == StepStatus.ACTION_REQUIRED.value,
                RegistrationJobStep.action_expires_at <= now,
            )
            .distinct()
        ).tuples()
    )


def expire_wait(*, session: Session, job_id: str, epoch: int, now: datetime) -> bool:
    """The job waited for a person past `action_expires_at`: the waiting steps fail with
    `next_action: fix_config`, the steps that needed them are skipped, the job fails, and
    Prefect is told its suspended run failed (the outbox). For the epoch the reconciler
    looked at; whether anything was written."""
    job = _job(session, job_id, lock=True)
    if job.epoch != epoch or not JobStatus(job.status).is_active:
        return False
    rows = _steps(session, job_id)
    expired = [
        r
        for r in rows.values()
        if r.status == StepStatus.ACTION_REQUIRED
        and r.action_expires_at is not None
        and r.action_expires_at <= now
    ]
    if not expired:
        return False
    for row in expired:
        row.status = StepStatus.FAILED
        row.error_message = (
            f"{row.error_message}; " if row.error_message else ""
        ) + INPUT_EXPIRED.format(at=row.action_expires_at)
        row.next_action = NextAction.FIX_CONFIG.value
        row.finished_at = now
        row.action_since = row.action_expires_at = None
    message = "waited for a person's corrected input too long: " + ", ".join(
        catalogue.step(r.step_id).label for r in expired
    )
    for row in rows.values():
        status = StepStatus(row.status)
        if status.is_final:
            continue
        if status is StepStatus.ACTION_REQUIRED:
            row.status = StepStatus.FAILED
            row.next_action = NextAction.FIX_CONFIG.value
        elif status in (StepStatus.RUNNING, StepStatus.RETRYING):
            row.status = StepStatus.CANCELLED
            row.skip_reason = "the job ended waiting for a person"
        else:
            row.status = StepStatus.SKIPPED
            row.skip_reason = "not run: the job ended waiting for a person"
        row.action_since = row.action_expires_at = None
        row.finished_at = now
    _close_open_attempts(session, job_id, StepStatus.CANCELLED, None)
    job.epoch += 1
    job.status = JobStatus.FAILED
    job.error_message = message
    job.completed_at = now
    run = _current_run(session, job)
    if run is not None and run.stopped_at is None:
        run.stopped_at = now
        if run.flow_run_id is not None:
            run.crash_message = message
    _publish(session, job, rows.values())
    return True
