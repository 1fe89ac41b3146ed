"""The step ledger: the only writer of jobs, their steps, attempts, runs and events.

Every function takes the session (`*, session, ...`) and does one step of one transaction;
the caller commits (`regjobs.db.transaction`). Each write locks the job row first
(PostgreSQL `FOR UPDATE`; on SQLite the write transaction holds the database's write lock
from its start), so what it checks cannot change before it writes.

Three writers, one rule each:
- the API's transitions (create, start, cancel, retry) are compare-and-set on the job's
  status: of two at once, exactly one wins and the other gets `Conflict`;
- a flow-run process writes only while it holds the job's epoch (the fencing token it took
  in `begin_run`); once a cancel, a retry or another run has taken a newer epoch, every
  write of the old process raises `OwnershipLost` and changes nothing;
- the reconciler records what only Prefect saw (a dead or deleted run, a cancel in the
  Prefect UI) for the epoch it looked at, and takes a new epoch doing so.

After every change the job's public view is written again (`_publish`): the job as GET,
`/progress` and the list answer it, one event per changed step or job, and the version.
Completed steps keep their result, so any re-run of a job reuses them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from regjobs import catalogue, translate
from regjobs.catalogue import (
    ACTIVE_JOB_STATUSES,
    DISABLED_REASON,
    JobStatus,
    NextAction,
    StepStatus,
)
from regjobs.config import ExecutionConfig
from regjobs.crypto import decrypt_json, encrypt_json, reencrypt
from regjobs.db import bulk_insert
from regjobs.errors import Classified, NonRetryableStepError
from regjobs.models import (
    Base,
    JobEvent,
    JobRun,
    Organisation,
    RegistrationJob,
    RegistrationJobStep,
    StepAttempt,
    StepEvidence,
    new_id,
    utcnow,
)
from regjobs.observe import RunLabels
from regjobs.schemas import EvidencePublic, JobPublic
from regjobs.settings import get_settings

FINAL = frozenset(s.value for s in catalogue.FINAL_STEP_STATUSES)
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


class OwnershipLost(NonRetryableStepError):
    """This flow run no longer holds the job: it must start no step and write nothing."""


class RunRefused(Exception):
    """This flow run must not run the job; the message says why (and who has it)."""


# ----------------------------------------------------------------------------- reading


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
    return ExecutionConfig.from_secret_dict(decrypt_json(job.config_encrypted))


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


def _table(model: type[Base]) -> Table:
    """A model's table, for plain inserts."""
    return cast(Table, model.__table__)


# ----------------------------------------------------------------------- the public view


def _publish(
    session: Session, job: RegistrationJob, rows: Iterable[RegistrationJobStep] | None = None
) -> None:
    """Write the job's public view again; one event per step whose public state changed,
    then one for the job if its own state changed; the version counts the events. `rows`:
    the job's step rows, if the caller has them all."""
    rows = list(rows) if rows is not None else list(_steps(session, job.id).values())
    # A screenshot belongs to an attempt: a job none of whose steps was tried has none.
    shots = evidence_index(session, job_id=job.id) if any(r.attempts for r in rows) else {}
    events = _render(job, rows, shots)
    if events:
        session.execute(insert(_table(JobEvent)), events)


def _render(
    job: RegistrationJob,
    rows: Sequence[RegistrationJobStep],
    shots: Mapping[str, list[tuple[int, int]]],
) -> list[dict[str, Any]]:
    """The job's view from its rows (set on the job: view, progress, list entry, version)
    and the event rows of what changed since the view it had."""
    evidence = {
        step_id: [EvidencePublic(attempt=a, evidence_id=e) for a, e in taken]
        for step_id, taken in shots.items()
    }
    public = translate.job_public(
        job, rows, None, prefect_ui_url=get_settings().prefect_ui_url, evidence=evidence
    )
    before = json.loads(job.view) if job.view else {}
    before_steps = {s["step_id"]: s for s in before.get("steps", ())}
    changes: list[tuple[str, dict[str, Any]]] = []
    for step in public.steps:
        data = step.model_dump(mode="json")
        if before_steps.get(step.step_id) != data:
            changes.append(("step", data))
    summary = translate.summary(public).model_dump(mode="json", exclude={"version"})
    before_summary = {k: v for k, v in before.items() if k not in ("steps", "version")}
    if summary != before_summary:
        changes.append(("job", summary))
    if not changes:
        return []
    version = job.version
    events = []
    for kind, data in changes:
        version += 1
        if kind == "job":
            data = {**data, "version": version}
        events.append({"job_id": job.id, "seq": version, "kind": kind, "data": json.dumps(data)})
    job.version = public.version = version
    job.view = public.model_dump_json()
    job.progress_view = translate.progress_public(public).model_dump_json()
    job.summary_view = translate.summary(public).model_dump_json()
    return events


def publish_missing_views(*, session: Session) -> int:
    """Write the view of every job that has none (made before views existed)."""
    jobs = session.scalars(select(RegistrationJob).where(RegistrationJob.view.is_(None))).all()
    for job in jobs:
        _publish(session, job)
    return len(jobs)


# --------------------------------------------------------------------- API transitions


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
        if row.status in FINAL:
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


# ------------------------------------------------------------------------ flow side


@dataclass(frozen=True)
class StepState:
    status: StepStatus
    reason: str | None
    result: dict[str, Any] | None


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


def _state(row: RegistrationJobStep) -> StepState:
    return StepState(StepStatus(row.status), row.skip_reason, row.result_data)


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
    """
    job = _job(session, job_id, lock=True)
    if cancelling:
        raise RunRefused("this flow run is being cancelled; not starting the job")
    run = _run_of(session, job, flow_run_id, generation)
    if run is not None and run_count <= run.begin_run_count:
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

    job.epoch += 1
    job.status = JobStatus.IN_PROGRESS
    job.started_at = job.started_at or now
    job.run_started_at = now
    job.heartbeat_at = now
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
    )


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
    job = _job(session, job_id)
    return None if job.epoch == epoch else lost_to(job)


def heartbeat(*, session: Session, job_id: str, epoch: int) -> bool:
    """Renew the job's lease while this flow run holds it; False once it does not."""
    renewed = session.execute(
        update(RegistrationJob)
        .where(RegistrationJob.id == job_id, RegistrationJob.epoch == epoch)
        .values(heartbeat_at=utcnow())
    )
    return bool(getattr(renewed, "rowcount", 0))


def _requeue(row: RegistrationJobStep) -> None:
    row.status = StepStatus.PENDING
    row.run_attempts = 0
    row.slot_since = row.stalled_since = None
    row.started_at = row.finished_at = row.duration_ms = None
    row.error_message = row.warning = row.skip_reason = row.progress = None
    row.next_action = None
    row.not_before = None
    row.task_run_id = None


def _queue_again(rows: Iterable[RegistrationJobStep], from_step: str | None) -> None:
    """Queue every step not completed, and `from_step` with everything that depends on it
    even when completed (each of those gets a new idempotency generation)."""
    rerun = {from_step} | catalogue.dependents(from_step) if from_step else set()
    for row in rows:
        if row.step_id in rerun and row.status == StepStatus.COMPLETED:
            row.generation += 1
            row.generation_attempts = 0
            row.result_data = None
            _requeue(row)
        elif row.status != StepStatus.COMPLETED:
            _requeue(row)


def public_view(*, session: Session, job_id: str) -> JobPublic:
    """The job as the API shows it (its materialised view)."""
    job = _job(session, job_id)
    if job.view is None:
        raise JobNotFound(job_id)
    return JobPublic.model_validate_json(job.view)


def step_states(*, session: Session, job_id: str) -> dict[str, StepState]:
    return {k: _state(v) for k, v in _steps(session, job_id).items()}


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
    _publish(session, job)
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
    row = _steps(session, job_id)[step_id]
    row.status = StepStatus.COMPLETED
    row.stalled_since = None
    row.result_data = result
    row.warning = warning
    row.error_message = None
    row.next_action = None
    row.progress = None
    row.not_before = None
    row.finished_at = now
    row.duration_ms = _ms(row.started_at, now)
    _finish_attempt(session, job_id, step_id, attempt, status=StepStatus.COMPLETED, warning=warning)
    _publish(session, job)


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
    row = _steps(session, job_id)[step_id]
    row.error_message = error.message
    row.progress = None
    row.stalled_since = None
    if will_retry:
        row.status = StepStatus.RETRYING
        row.not_before = now + timedelta(seconds=error.retry_after) if error.retry_after else None
    else:
        row.status = StepStatus.FAILED
        row.next_action = error.next_action.value
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
    _publish(session, job)
    return evidence_id


def set_progress(*, session: Session, job_id: str, epoch: int, step_id: str, progress: str) -> None:
    job = _owned(session, job_id, epoch)
    row = _steps(session, job_id)[step_id]
    if row.progress != progress:
        row.progress = progress
        _publish(session, job)


def hold_slot(*, session: Session, job_id: str, epoch: int, step_id: str, holding: bool) -> None:
    """Record that a step holds a browser slot (once Prefect granted it; only while this run
    holds the job) or gave it back (always allowed)."""
    if holding:
        _owned(session, job_id, epoch)
    session.execute(
        update(RegistrationJobStep)
        .where(RegistrationJobStep.job_id == job_id, RegistrationJobStep.step_id == step_id)
        .values(slot_since=utcnow() if holding else None)
    )


def finish_run(
    *, session: Session, job_id: str, epoch: int, status: JobStatus, error_message: str | None
) -> None:
    job = _owned(session, job_id, epoch)
    job.status = status
    job.error_message = error_message
    job.completed_at = utcnow()
    job.flow_run_state = "Completed" if status is JobStatus.COMPLETED else "Failed"
    _publish(session, job)


# ------------------------------------------------------------------- reconciler side


@dataclass(frozen=True)
class ActiveRun:
    """An active job whose current run was handed to Prefect, as the reconciler sees it."""

    job_id: str
    flow_run_id: str
    epoch: int


def active_runs(*, session: Session) -> list[ActiveRun]:
    rows = session.execute(
        select(RegistrationJob.id, RegistrationJob.flow_run_id, RegistrationJob.epoch).where(
            RegistrationJob.status.in_(ACTIVE), RegistrationJob.flow_run_id.is_not(None)
        )
    ).tuples()
    return [
        ActiveRun(job_id, flow_run_id, epoch) for job_id, flow_run_id, epoch in rows if flow_run_id
    ]


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
        row.slot_since = None  # a dead process holds no browser slot, whatever Prefect counts
        if row.status in FINAL or step is None:
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
    *, session: Session, job_id: str, flow_run_id: str, state_name: str, queued: bool
) -> None:
    """What Prefect shows of an active job's run while it lives (for operators)."""
    job = _job(session, job_id, lock=True)
    if job.flow_run_id != flow_run_id or not JobStatus(job.status).is_active:
        return
    reason = QUEUED if queued else None
    if (job.flow_run_state, job.pending_reason) != (state_name, reason):
        job.flow_run_state = state_name
        job.pending_reason = reason
        _publish(session, job)


def slots_held(*, session: Session) -> int:
    """Browser slots live holders have: steps of active jobs between being granted a slot
    and giving it back."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(RegistrationJobStep)
            .join(RegistrationJob, RegistrationJob.id == RegistrationJobStep.job_id)
            .where(
                RegistrationJobStep.slot_since.is_not(None),
                RegistrationJob.status.in_(ACTIVE),
            )
        )
        or 0
    )


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


@dataclass(frozen=True)
class Dispatch:
    """A run request for the dispatcher to hand to Prefect."""

    run_id: int
    job_id: str
    generation: int
    restaurant_id: str
    restaurant_name: str
    organisation_name: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.job_id}:{self.generation}"

    @property
    def labels(self) -> RunLabels:
        return RunLabels(
            self.job_id, self.restaurant_id, self.restaurant_name, self.organisation_name
        )


#: A run request not yet handed to Prefect.
_WAITING_FOR_DISPATCH = (
    JobRun.dispatched_at.is_(None),
    JobRun.stopped_at.is_(None),
    JobRun.flow_run_id.is_(None),
)


def runs_to_dispatch(
    *, session: Session, limit: int = 50, up_to: int | None = None
) -> list[Dispatch]:
    """The run requests waiting for their flow run, oldest first (`up_to`: with an id no
    higher)."""
    bound = () if up_to is None else (JobRun.id <= up_to,)
    rows = session.execute(
        select(JobRun, RegistrationJob, Organisation.name)
        .join(RegistrationJob, RegistrationJob.id == JobRun.job_id)
        .join(Organisation, Organisation.id == RegistrationJob.organisation_id)
        .where(*_WAITING_FOR_DISPATCH, *bound)
        .order_by(JobRun.id)
        .limit(limit)
    ).tuples()
    return [
        Dispatch(run.id, job.id, run.generation, job.restaurant_id, job.restaurant_name, name)
        for run, job, name in rows
    ]


def run_requests_waiting(*, session: Session) -> tuple[int, datetime | None, int | None]:
    """How many run requests wait for their flow run, when the newest was made, and the
    id of the last."""
    count, newest, last = session.execute(
        select(func.count(), func.max(JobRun.requested_at), func.max(JobRun.id)).where(
            *_WAITING_FOR_DISPATCH
        )
    ).one()
    return count, newest, last


def record_dispatch(*, session: Session, run_id: int, flow_run_id: str) -> None:
    """The flow run of a request exists in Prefect: remember it (also when the flow run
    began already); a request stopped meanwhile (cancelled) gets its cancel delivered."""
    run = session.get(JobRun, run_id)
    if run is None:
        return
    job = _job(session, run.job_id, lock=True)
    session.refresh(run)
    now = utcnow()
    run.dispatched_at = run.dispatched_at or now
    run.dispatch_error = None
    if run.flow_run_id is None:
        run.flow_run_id = flow_run_id
    if run.stopped_at is not None and run.began_at is None:
        run.cancel_requested_at = run.cancel_requested_at or now
        return
    if job.run_generation == run.generation and JobStatus(job.status).is_active:
        if job.flow_run_id != flow_run_id and run.began_at is None:
            job.flow_run_id = flow_run_id
            if flow_run_id not in job.flow_run_ids:
                job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
            job.pending_reason = QUEUED
            job.flow_run_state = "Scheduled"
        _publish(session, job)


def record_dispatch_failure(*, session: Session, run_id: int, reason: str) -> None:
    """Prefect did not take the run (down, slow, no deployment): the job says so."""
    run = session.get(JobRun, run_id)
    if run is None or run.dispatch_error == reason:
        return
    job = _job(session, run.job_id, lock=True)
    run.dispatch_attempts += 1
    run.dispatch_error = reason
    current = job.run_generation == run.generation and JobStatus(job.status).is_active
    if current and job.pending_reason != reason:
        job.pending_reason = reason
        _publish(session, job)


@dataclass(frozen=True)
class Delivery:
    """What Prefect must still be told about a flow run: cancel it, or that it crashed."""

    run_id: int
    flow_run_id: str
    kind: str
    message: str | None = None


def deliveries(*, session: Session, limit: int = 50) -> list[Delivery]:
    """What Prefect has still to be told. A cancelled run that began is told only after
    `cancel_grace_seconds`: by then its process has normally seen the cancel in the ledger
    and ended itself (its steps Cancelled, its logs calm); Prefect's cancel is for a
    process that did not (hung, or cut off from the database), and for runs not begun."""
    grace = utcnow() - timedelta(seconds=get_settings().cancel_grace_seconds)
    cancels = session.scalars(
        select(JobRun)
        .where(
            JobRun.cancel_requested_at.is_not(None),
            JobRun.cancel_delivered_at.is_(None),
            JobRun.flow_run_id.is_not(None),
            (JobRun.began_at.is_(None)) | (JobRun.cancel_requested_at <= grace),
        )
        .order_by(JobRun.id)
        .limit(limit)
    ).all()
    crashes = session.scalars(
        select(JobRun)
        .where(
            JobRun.crash_message.is_not(None),
            JobRun.crash_delivered_at.is_(None),
            JobRun.flow_run_id.is_not(None),
        )
        .order_by(JobRun.id)
        .limit(limit)
    ).all()
    return [Delivery(r.id, r.flow_run_id or "", "cancel") for r in cancels] + [
        Delivery(r.id, r.flow_run_id or "", "crash", r.crash_message) for r in crashes
    ]


def record_delivered(*, session: Session, run_id: int, kind: str) -> None:
    run = session.get(JobRun, run_id)
    if run is None:
        return
    if kind == "cancel":
        run.cancel_delivered_at = run.cancel_delivered_at or utcnow()
    else:
        run.crash_delivered_at = run.crash_delivered_at or utcnow()


# ----------------------------------------------------------------------------- helpers


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
