"""A flow run's hold on its job: `begin_run` gives the job to one flow run under a new epoch
(the fencing token); every later write of that run carries the epoch, and once a cancel, a
retry or another run has taken a newer one, the write raises `OwnershipLost` and changes
nothing (`_owned`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from regjobs import catalogue
from regjobs.catalogue import (
    JobStatus,
    StepStatus,
)
from regjobs.config import ExecutionConfig
from regjobs.db import database_now
from regjobs.ledger.rows import (
    OwnershipLost,
    RunRefused,
    StepState,
    _current_run,
    _job,
    _queue_again,
    _state,
    _steps,
    job_config,
    step_states,
)
from regjobs.ledger.view import _publish
from regjobs.models import (
    JobRun,
    Organisation,
    RegistrationJob,
    utcnow,
)
from regjobs.observe import RunLabels


@dataclass(frozen=True)
class RunStart:
    #: The fencing token of this flow run: every write it makes carries it.
    epoch: int
    config: ExecutionConfig
    steps: Mapping[str, StepState]
    #: The organisation the job belongs to.
    organisation_id: str = ""
    #: How the job's flow runs are named and tagged in Prefect.
    labels: RunLabels | None = None
    #: The number of the config version `config` is (a person's input makes a new one).
    config_version: int = 1
    #: This flow run was suspended waiting for a person and Prefect resumed it.
    resumed: bool = False


def _run_of(
    session: Session, job: RegistrationJob, flow_run_id: str, generation: int | None
) -> JobRun | None:
    """This flow run's row: by its id, else (a run the dispatcher made but has not yet
    recorded) by the generation in its Prefect idempotency key."""
    run = session.scalars(
        select(JobRun).where(JobRun.job_id == job.id, JobRun.flow_run_id == flow_run_id)
    ).first()
    if run is None and generation is not None:
        run = session.scalars(
            select(JobRun).where(
                JobRun.job_id == job.id,
                JobRun.generation == generation,
                JobRun.flow_run_id.is_(None),
            )
        ).one_or_none()
    return run


def begin_run(
    *,
    session: Session,
    job_id: str,
    flow_run_id: str,
    generation: int | None = None,
    run_count: int = 1,
    cancelling: bool = False,
    from_step: str | None = None,
    code_version: str | None = None,
) -> RunStart:
    """Give the job to this flow run under a new epoch, and queue every step not completed
    (completed steps keep their result and are reused). `from_step` (an operator's run of
    an ended job, e.g. `prefect deployment run ... --param from_step=menu_import`) queues
    that step and its dependents again too, as the API's retry does.

    Who may begin a job:
    - an active job: only its current run (the latest run request; `generation` comes from
      the run's Prefect idempotency key), or any run when none was ever requested;
    - an ended job: any run not begun before with this Prefect run count, i.e. a deliberate
      rerun (Prefect's Retry, `prefect deployment run`), except a run stopped before it
      began (cancelled, superseded or recorded dead), which would only be starting late.
    Anything else raises RunRefused naming the run that has the job.

    `code_version`: the release this flow run's code is (`regjobs.release`). The job's first
    run pins the job to it; a run of another release refuses (RunRefused naming the command
    that moves the job), so no job runs on code its recorded results may not fit.
    """
    job = _job(session, job_id, lock=True)
    if cancelling:
        raise RunRefused("this flow run is being cancelled; not starting the job")
    if code_version is not None and job.code_version not in (None, code_version):
        raise RunRefused(pinned_elsewhere(job, code_version))
    run = _run_of(session, job, flow_run_id, generation)
    # Prefect resumes a suspended run with its id and run count: the same run count is a
    # resume (once) when the run suspended waiting for a person, a second start otherwise.
    resumed = (
        run is not None
        and run.suspended_at is not None
        and run_count == run.begin_run_count
        and JobStatus(job.status).is_active
    )
    if run is not None and run_count <= run.begin_run_count and not resumed:
        raise RunRefused(f"flow run {flow_run_id} already began this job (run {run_count})")
    now = utcnow()
    # Only a deliberate rerun of an ended job starts again from a step; the API's own
    # runs were queued from their step by `retry_job` already.
    rerun_from = from_step is not None and not JobStatus(job.status).is_active
    if JobStatus(job.status).is_active:
        is_current = run is not None and run.generation == job.run_generation
        if not is_current and job.run_generation != 0:
            holder = job.flow_run_id or "a run not yet handed to Prefect"
            raise RunRefused(f"flow run {holder} has this job; not starting another")
        if run is None:
            job.run_generation += 1
    else:
        if run is not None and run.stopped_at is not None and run.begin_run_count == 0:
            raise RunRefused(
                "this flow run was stopped before it began (the job was cancelled, retried "
                "or its run recorded dead); rerun the job instead"
            )
        job.run_generation += 1
        if run is not None:
            run.generation = job.run_generation
    if run is None:
        run = JobRun(
            job_id=job.id,
            generation=job.run_generation,
            source="prefect",
            flow_run_id=flow_run_id,
            dispatched_at=now,
            dispatch_attempts=0,
        )
        session.add(run)
    # What the API or reconciler still had for Prefect about this run is moot now.
    run.stopped_at = None
    if run.cancel_requested_at and not run.cancel_delivered_at:
        run.cancel_delivered_at = now
    if run.crash_message and not run.crash_delivered_at:
        run.crash_delivered_at = now
    run.flow_run_id = flow_run_id
    run.dispatched_at = run.dispatched_at or now
    run.began_at = now
    run.begin_run_count = run_count
    run.suspended_at = None
    if run.resume_requested_at is not None and run.resume_delivered_at is None:
        run.resume_delivered_at = now  # resumed (by the dispatcher, or from Prefect's UI)

    job.epoch += 1
    job.code_version = job.code_version or code_version
    job.status = JobStatus.IN_PROGRESS
    job.started_at = job.started_at or now
    job.run_started_at = now
    job.heartbeat_at = database_now(session)  # the lease's clock (regjobs.db)
    job.completed_at = None
    job.error_message = None
    job.pending_reason = None
    job.stalled_since = None
    job.flow_run_state = "Running"
    if flow_run_id not in job.flow_run_ids:
        job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
    job.flow_run_id = flow_run_id
    rows = _steps(session, job_id)
    _queue_again(rows.values(), from_step if rerun_from else None)
    session.flush()  # a second active job of the restaurant fails here (IntegrityError)
    _publish(session, job)
    organisation = session.get_one(Organisation, job.organisation_id)
    return RunStart(
        epoch=job.epoch,
        config=job_config(job),
        steps={k: _state(v) for k, v in rows.items()},
        organisation_id=job.organisation_id,
        labels=RunLabels(job.id, job.restaurant_id, job.restaurant_name, organisation.name),
        config_version=job.config_version,
        resumed=resumed,
    )


@dataclass(frozen=True)
class Waiting:
    """What a flow run that suspends waiting for a person tells Prefect and people."""

    #: The config version the run began with; it is resumed with a newer one.
    config_version: int
    #: The waiting steps (lowest-numbered first) and the fields a person corrects.
    step_ids: tuple[str, ...]
    fields: tuple[str, ...]
    reason: str
    expires_at: datetime | None
    #: A person's input came while the run still had steps running: resume it at once.
    resume_now: bool = False


def suspend_run(
    *, session: Session, job_id: str, epoch: int, flow_run_id: str, config_version: int
) -> Waiting | None:
    """Record that this flow run suspends, waiting for a person: it holds nothing from the
    commit on (no process, worker slot, browser or browser slot) and `provide_input`
    resumes it through the outbox. None (nothing recorded) when no step waits, or one is
    ready to run with this run's config: the run goes on instead. When a person's input
    came while the run still had steps running (a newer config than `config_version`), the
    run suspends all the same and its resume is requested at once: only a new process
    reads the new config. Raises OwnershipLost once the run no longer holds the job."""
    job = _owned(session, job_id, epoch)
    rows = _steps(session, job_id)
    waiting = sorted(
        (r for r in rows.values() if r.status == StepStatus.ACTION_REQUIRED),
        key=lambda r: r.step_number,
    )
    newer = job.config_version > config_version
    if not newer:
        statuses = {k: StepStatus(v.status) for k, v in rows.items()}
        plan = catalogue.walk(statuses, frozenset(), {k: v.skip_reason for k, v in rows.items()})
        if not waiting or plan.ready:
            return None
    run = _current_run(session, job)
    if run is None or run.flow_run_id != flow_run_id:
        raise OwnershipLost(lost_to(job))
    now = utcnow()
    run.suspended_at = now
    if newer:
        run.resume_version = job.config_version
        run.resume_requested_at = now
        run.resume_delivered_at = None
    job.flow_run_state = "Suspended"
    _publish(session, job, rows.values())
    fields = tuple(dict.fromkeys(f for r in waiting for f in r.action_fields or ()))
    expiries = [r.action_expires_at for r in waiting if r.action_expires_at is not None]
    return Waiting(
        config_version=config_version,
        step_ids=tuple(r.step_id for r in waiting),
        fields=fields,
        reason=(waiting[0].error_message or "") if waiting else "",
        expires_at=min(expiries, default=None),
        resume_now=newer,
    )


def pinned_elsewhere(job: RegistrationJob, code_version: str) -> str:
    """Why a run of release `code_version` does not run a job pinned to another."""
    return (
        f"the job is pinned to release {job.code_version}; this flow run is release "
        f"{code_version}'s code and does not run it. To move the job to this release, "
        f"reusing its completed steps: regjobs jobs upgrade {job.id} --to {code_version}"
    )


def refuse_start(
    *,
    session: Session,
    job_id: str,
    flow_run_id: str,
    generation: int | None,
    message: str,
) -> bool:
    """The job's current run cannot begin it (its stored config no longer validates,
    ConfigInvalid's `message`): the job fails at once, with `next_action: fix_config`,
    rather than being handed to a new run that meets the same config. A run that is not the
    job's current one, or of an ended job, changes nothing (False)."""
    job = _job(session, job_id, lock=True)
    if not JobStatus(job.status).is_active:
        return False
    run = _run_of(session, job, flow_run_id, generation)
    if job.run_generation != 0 and (run is None or run.generation != job.run_generation):
        return False
    now = utcnow()
    job.epoch += 1
    job.status = JobStatus.FAILED
    job.error_message = message
    job.completed_at = now
    job.pending_reason = None
    job.stalled_since = None
    job.flow_run_state = "Failed"
    if flow_run_id not in job.flow_run_ids:
        job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
    job.flow_run_id = flow_run_id
    if run is not None:
        run.flow_run_id = flow_run_id
        run.stopped_at = now
    _publish(session, job)
    return True


def _owned(session: Session, job_id: str, epoch: int) -> RegistrationJob:
    """The job, locked, if the caller still holds `epoch`; else OwnershipLost saying who
    took it."""
    job = _job(session, job_id, lock=True)
    if job.epoch != epoch:
        raise OwnershipLost(lost_to(job))
    return job


def lost_to(job: RegistrationJob) -> str:
    """Why a flow run that held an older epoch of the job no longer has it."""
    if job.status == JobStatus.CANCELLED:
        return "the job was cancelled; this flow run starts no further step"
    if JobStatus(job.status).is_final:
        return f"the job was ended ({job.status}: {job.error_message}); this flow run stops"
    if job.flow_run_id:
        return f"flow run {job.flow_run_id} took over the job; this flow run stops"
    return "the job was queued again (retry); this flow run stops"


def holds(*, session: Session, job_id: str, epoch: int) -> str | None:
    """None while the caller holds the job; else why not (a read, no lock)."""
    return _lost(_job(session, job_id), epoch)


def _lost(job: RegistrationJob, epoch: int) -> str | None:
    return None if job.epoch == epoch else lost_to(job)


@dataclass(frozen=True)
class Walk:
    """What a flow run reads before each walk of the step graph, in one read."""

    #: None while the run holds the job; else why not (`holds`).
    lost: str | None
    states: dict[str, StepState]
    config_version: int


def walk_state(*, session: Session, job_id: str, epoch: int) -> Walk:
    """The steps' states, then the job's epoch and config version (a read, no lock). The
    job is read after the steps: a person's input that queued a step again has a newer
    config version by then, and the step is not started with the run's older config."""
    states = step_states(session=session, job_id=job_id)
    job = _job(session, job_id)
    return Walk(_lost(job, epoch), states, job.config_version)


def heartbeat(*, session: Session, job_id: str, epoch: int) -> bool:
    """Renew the job's lease while this flow run holds it; False once it does not."""
    renewed = session.execute(
        update(RegistrationJob)
        .where(RegistrationJob.id == job_id, RegistrationJob.epoch == epoch)
        .values(heartbeat_at=database_now(session))
    )
    return bool(getattr(renewed, "rowcount", 0))


def skip_steps(*, session: Session, job_id: str, epoch: int, reasons: Mapping[str, str]) -> None:
    if not reasons:
        return
    job = _owned(session, job_id, epoch)
    now = utcnow()
    rows = _steps(session, job_id)
    for step_id, reason in reasons.items():
        row = rows[step_id]
        row.status = StepStatus.SKIPPED
        row.skip_reason = reason
        row.finished_at = now
    _publish(session, job)


def finish_run(
    *, session: Session, job_id: str, epoch: int, status: JobStatus, error_message: str | None
) -> None:
    job = _owned(session, job_id, epoch)
    job.status = status
    job.error_message = error_message
    job.completed_at = utcnow()
    job.flow_run_state = "Completed" if status is JobStatus.COMPLETED else "Failed"
    _publish(session, job)
