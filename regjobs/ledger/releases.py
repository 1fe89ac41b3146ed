"""Releases in the job database: which ones it knows (with each step's code), which jobs
each holds, and moving a job to another on purpose (`regjobs jobs upgrade`).

A job is pinned to the release its first run began on (`runs.begin_run`); only that
release's workers run it. Moving it keeps every completed step's result (reused by step id,
as any rerun does); the steps whose code differs between the two releases are named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from regjobs.catalogue import JobStatus, StepStatus
from regjobs.ledger.rows import Conflict, _current_run, _job, _steps
from regjobs.ledger.transitions import _request_run
from regjobs.ledger.view import _publish
from regjobs.models import CodeRelease, JobRun, RegistrationJob, utcnow
from regjobs.release import Release, changed_steps, queue_for


class UnknownRelease(LookupError):
    """No release of that version was recorded (`regjobs db upgrade` from its folder)."""


def remember_release(*, session: Session, release: Release) -> bool:
    """Record a release (its queue and each step's code); True if it was new. Its steps'
    code is kept as first recorded: a release is immutable."""
    known = session.get(CodeRelease, release.version)
    if known is not None:
        return False
    session.add(
        CodeRelease(
            version=release.version,
            queue=release.queue,
            commit=release.commit or None,
            steps=dict(release.steps),
            made_at=release.made_at or None,
            registered_at=utcnow(),
        )
    )
    return True


@dataclass
class ReleaseJobs:
    """A release and the active jobs on it."""

    version: str
    queue: str
    commit: str | None = None
    registered_at: datetime | None = None
    #: Active jobs whose run has begun on this release's code.
    running: list[str] = field(default_factory=list)
    #: Active jobs waiting for a worker of this release (run requested, not begun).
    waiting: list[str] = field(default_factory=list)


#: The group of active jobs not yet pinned (their first run has not begun).
NOT_PINNED = "(not pinned yet)"


def releases_overview(*, session: Session) -> list[ReleaseJobs]:
    """Every known release, oldest first, with its active jobs (running or waiting), and
    the releases active jobs are pinned to that were never recorded; the active jobs not
    yet pinned last."""
    found: dict[str, ReleaseJobs] = {}
    for known in session.scalars(select(CodeRelease).order_by(CodeRelease.registered_at)):
        found[known.version] = ReleaseJobs(
            known.version, known.queue, known.commit, known.registered_at
        )
    rows = session.execute(
        select(RegistrationJob.id, RegistrationJob.code_version, JobRun.began_at, JobRun.work_queue)
        .outerjoin(
            JobRun,
            and_(
                JobRun.job_id == RegistrationJob.id,
                JobRun.generation == RegistrationJob.run_generation,
            ),
        )
        .where(RegistrationJob.status.in_([s.value for s in JobStatus if s.is_active]))
        .order_by(RegistrationJob.created_at)
    ).tuples()
    for job_id, version, began_at, work_queue in rows:
        key = version or NOT_PINNED
        group = found.setdefault(
            key, ReleaseJobs(key, queue_for(version) if version else (work_queue or ""))
        )
        (group.running if began_at is not None else group.waiting).append(job_id)
    return list(found.values())


def newest_release(*, session: Session) -> str | None:
    """The release the job database heard of last (the one `jobs upgrade` moves to by
    default)."""
    return session.scalar(
        select(CodeRelease.version).order_by(CodeRelease.registered_at.desc()).limit(1)
    )


@dataclass(frozen=True)
class Upgrade:
    job_id: str
    from_version: str | None
    to_version: str
    #: Steps whose code differs between the two releases, and each one's status now.
    changed: Sequence[tuple[str, str]]
    #: Completed steps kept (their results are reused, not executed again).
    reused: Sequence[str]
    #: A waiting run was replaced by one on the new release's queue.
    requeued: bool


def upgrade_job(*, session: Session, job_id: str, to_version: str | None = None) -> Upgrade:
    """Move a job to another release (by default the newest): its later runs run there.
    Completed steps keep their results and are reused by step id; the rest run on the new
    release's code. A job whose run waits for a worker (of a release whose workers are gone,
    say) gets a new run on the new release's queue, and the waiting one is cancelled. So
    does a job whose run is suspended waiting for a person: the new run finds the step still
    waiting and suspends in its turn, on the new release, and the person's input resumes
    that one. A job running now is Conflict: let it end (or cancel it) first."""
    job = _job(session, job_id, lock=True)
    target_version = to_version or newest_release(session=session)
    target = session.get(CodeRelease, target_version) if target_version else None
    if target is None:
        raise UnknownRelease(
            f"release {target_version} is not known to the job database: run `regjobs db "
            "upgrade` from its folder first (python -m deployments.release make does)"
        )
    if job.code_version == target.version:
        raise Conflict(f"the job is on release {target.version} already")
    run = _current_run(session, job)
    active = JobStatus(job.status).is_active
    # Running now: begun, not stopped, and not suspended waiting for a person (moved).
    if (
        active
        and run is not None
        and run.began_at is not None
        and run.stopped_at is None
        and run.suspended_at is None
    ):
        raise Conflict(
            f"the job is running on release {job.code_version} now (flow run "
            f"{job.flow_run_id}): let it end, or cancel it, then upgrade it"
        )
    before = session.get(CodeRelease, job.code_version) if job.code_version else None
    rows = _steps(session, job.id)
    changed = changed_steps(dict(before.steps) if before else {}, dict(target.steps))
    from_version = job.code_version
    job.code_version = target.version
    requeued = False
    if active:
        # The run waiting on the old release's queue is given up (cancelled in Prefect by
        # the dispatcher); a new one is requested, which the dispatcher makes on the new
        # release's queue. The old one, should it start after all, is not the job's run.
        now = utcnow()
        if run is not None and run.stopped_at is None:
            run.stopped_at = now
            if run.dispatched_at is not None or run.flow_run_id is not None:
                run.cancel_requested_at = now
        job.epoch += 1
        job.flow_run_id = None
        job.flow_run_state = None
        _request_run(session, job)
        requeued = True
    session.flush()
    _publish(session, job)
    return Upgrade(
        job_id=job.id,
        from_version=from_version,
        to_version=target.version,
        changed=[(s, rows[s].status) for s in changed],
        reused=[s for s, row in rows.items() if row.status == StepStatus.COMPLETED],
        requeued=requeued,
    )


def waiting_queues(*, session: Session, job_ids: Sequence[str]) -> dict[str, str]:
    """The work queue of each of these jobs' current run, where one was recorded."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(RegistrationJob.id, RegistrationJob.code_version, JobRun.work_queue)
        .join(
            JobRun,
            and_(
                JobRun.job_id == RegistrationJob.id,
                JobRun.generation == RegistrationJob.run_generation,
            ),
        )
        .where(RegistrationJob.id.in_(list(job_ids)))
    ).tuples()
    found: dict[str, str] = {}
    for job_id, version, queue in rows:
        if queue or version:
            found[job_id] = queue or queue_for(version or "")
    return found
