"""The two outboxes of what Prefect must be told: run requests to hand over as flow runs
(fair between organisations), and cancels and crashes still to deliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from regjobs.catalogue import (
    JobStatus,
)
from regjobs.ledger.rows import (
    ACTIVE,
    QUEUED,
    _job,
)
from regjobs.ledger.view import _publish
from regjobs.models import (
    JobRun,
    Organisation,
    RegistrationJob,
    utcnow,
)
from regjobs.observe import RunLabels
from regjobs.release import queue_for
from regjobs.settings import get_settings


@dataclass(frozen=True)
class Dispatch:
    """A run request for the dispatcher to hand to Prefect."""

    run_id: int
    job_id: str
    generation: int
    restaurant_id: str
    restaurant_name: str
    organisation_name: str
    #: The start time to give the flow run in Prefect (see `runs_to_dispatch`).
    start_at: datetime | None = None
    #: The release the job is pinned to (None before its first run began: the run goes
    #: to the deployment's own queue, the release deployed last).
    code_version: str | None = None

    @property
    def work_queue(self) -> str | None:
        """The work queue of the job's release, which only its workers poll."""
        return queue_for(self.code_version) if self.code_version else None

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

#: A flow run handed to Prefect that no worker has begun yet: waiting in the work pool.
_WAITING_IN_PREFECT = (
    JobRun.flow_run_id.is_not(None),
    JobRun.began_at.is_(None),
    JobRun.stopped_at.is_(None),
)

#: A flow run handed to Prefect whose job is not over: waiting in the work pool or running
#: (not suspended waiting for a person: that holds no worker slot).
_IN_PREFECT = (
    JobRun.flow_run_id.is_not(None),
    JobRun.stopped_at.is_(None),
    JobRun.suspended_at.is_(None),
    RegistrationJob.status.in_(ACTIVE),
)

#: How far before the runs waiting in Prefect an organisation's first run is put.
AHEAD = timedelta(milliseconds=1)


def runs_to_dispatch(
    *, session: Session, limit: int = 50, up_to: int | None = None, share: int | None = None
) -> list[Dispatch]:
    """The run requests to hand to Prefect now, fair between organisations: round robin
    (each organisation's oldest request, then each one's second, ...; oldest first within a
    round), and no organisation with more than `share` (`Settings.org_flow_run_share`)
    flow runs in Prefect at once, waiting in its work pool or running: the rest of a
    backlog waits here, where the round robin applies, not in the pool, which Prefect's
    workers take first in, first out; and a worker slot stays free for another
    organisation's job. `up_to`: with an id no higher.

    Each gets the start time its flow run is given in Prefect, whose workers take the runs
    waiting in a pool by that time: the run of an organisation with no run waiting there
    goes before every run waiting there; the others keep the order they are handed over
    in."""
    share = get_settings().org_flow_run_share if share is None else share
    bound = () if up_to is None else (JobRun.id <= up_to,)
    in_prefect = (
        select(
            RegistrationJob.organisation_id.label("organisation_id"),
            func.count().label("n"),
            func.sum(case((JobRun.began_at.is_(None), 1), else_=0)).label("waiting"),
        )
        .select_from(JobRun)
        .join(RegistrationJob, RegistrationJob.id == JobRun.job_id)
        .where(*_IN_PREFECT)
        .group_by(RegistrationJob.organisation_id)
        .subquery()
    )
    turns = (
        select(
            JobRun.id.label("run_id"),
            func.row_number()
            .over(partition_by=RegistrationJob.organisation_id, order_by=JobRun.id)
            .label("turn"),
        )
        .join(RegistrationJob, RegistrationJob.id == JobRun.job_id)
        .where(*_WAITING_FOR_DISPATCH, *bound)
        .subquery()
    )
    within_share = (
        () if share is None else (turns.c.turn + func.coalesce(in_prefect.c.n, 0) <= share,)
    )
    rows = session.execute(
        select(JobRun, RegistrationJob, Organisation.name, func.coalesce(in_prefect.c.waiting, 0))
        .join(turns, turns.c.run_id == JobRun.id)
        .join(RegistrationJob, RegistrationJob.id == JobRun.job_id)
        .join(Organisation, Organisation.id == RegistrationJob.organisation_id)
        .outerjoin(in_prefect, in_prefect.c.organisation_id == RegistrationJob.organisation_id)
        .where(*within_share)
        .order_by(turns.c.turn, JobRun.id)
        .limit(limit)
    ).tuples()
    earliest = session.scalar(
        select(func.min(func.coalesce(JobRun.scheduled_at, JobRun.dispatched_at))).where(
            *_WAITING_IN_PREFECT
        )
    )
    now = utcnow()
    before_all = min(now, earliest - AHEAD) if earliest is not None else now
    dispatches = []
    seen: set[str] = set()
    for n, (run, job, name, waiting) in enumerate(rows):
        first = not waiting and job.organisation_id not in seen
        seen.add(job.organisation_id)
        # A microsecond apart: Prefect keeps the order they are handed over in.
        start_at = (before_all if first else now) + timedelta(microseconds=n)
        dispatch = Dispatch(
            run.id, job.id, run.generation, job.restaurant_id, job.restaurant_name, name,
            start_at, job.code_version,
        )  # fmt: skip
        dispatches.append(dispatch)
    return dispatches


def run_requests_waiting(*, session: Session) -> tuple[int, datetime | None, int | None]:
    """How many run requests wait for their flow run, when the newest was made, and the
    id of the last."""
    count, newest, last = session.execute(
        select(func.count(), func.max(JobRun.requested_at), func.max(JobRun.id)).where(
            *_WAITING_FOR_DISPATCH
        )
    ).one()
    return count, newest, last


def record_dispatch(
    *,
    session: Session,
    run_id: int,
    flow_run_id: str,
    scheduled_at: datetime | None = None,
    work_queue: str | None = None,
) -> None:
    """The flow run of a request exists in Prefect (given the start time `scheduled_at`, on
    `work_queue`): remember it (also when the flow run began already); a request stopped
    meanwhile (cancelled) gets its cancel delivered."""
    run = session.get(JobRun, run_id)
    if run is None:
        return
    job = _job(session, run.job_id, lock=True)
    session.refresh(run)
    now = utcnow()
    run.dispatched_at = run.dispatched_at or now
    run.scheduled_at = run.scheduled_at or scheduled_at or run.dispatched_at
    run.dispatch_error = None
    run.work_queue = run.work_queue or work_queue
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
    """What Prefect must still be told about a flow run: cancel it, that it crashed, that
    it failed (a suspended run that waited for a person too long), or resume it with a
    person's input (`version`: the config version, the only thing Prefect is given)."""

    run_id: int
    flow_run_id: str
    kind: str
    message: str | None = None
    version: int | None = None
    #: The run was suspended (waiting for a person): it has no process to stop.
    suspended: bool = False


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
            # A suspended run has no process to wait for: it is told at once.
            (JobRun.began_at.is_(None))
            | (JobRun.cancel_requested_at <= grace)
            | JobRun.suspended_at.is_not(None),
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
    resumes = session.scalars(
        select(JobRun)
        .where(
            JobRun.resume_requested_at.is_not(None),
            JobRun.resume_delivered_at.is_(None),
            JobRun.suspended_at.is_not(None),
            JobRun.stopped_at.is_(None),
            JobRun.flow_run_id.is_not(None),
        )
        .order_by(JobRun.id)
        .limit(limit)
    ).all()
    return (
        [Delivery(r.id, r.flow_run_id or "", "cancel", suspended=r.suspended_at is not None)
         for r in cancels]
        + [
            # A suspended run holds no process: it did not crash, it failed (waited too long).
            Delivery(r.id, r.flow_run_id or "", "fail" if r.suspended_at else "crash",
                     r.crash_message)
            for r in crashes
        ]
        + [Delivery(r.id, r.flow_run_id or "", "resume", version=r.resume_version)
           for r in resumes]
    )  # fmt: skip


def record_delivered(*, session: Session, run_id: int, kind: str) -> None:
    run = session.get(JobRun, run_id)
    if run is None:
        return
    if kind == "cancel":
        run.cancel_delivered_at = run.cancel_delivered_at or utcnow()
    elif kind == "resume":
        run.resume_delivered_at = run.resume_delivered_at or utcnow()
    else:
        run.crash_delivered_at = run.crash_delivered_at or utcnow()
