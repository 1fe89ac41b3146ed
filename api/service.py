"""Job operations behind the routes: database writes apart from HTTP concerns."""

from __future__ import annotations

from datetime import timedelta

from prefect.client.schemas.objects import StateType
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator, OrchestratorUnavailable
from api.schemas import EvidencePublic, JobCreate, JobPublic
from api.translate import job_public, lease_expired, pending_grace
from regjobs import ledger
from regjobs.db import session_scope
from regjobs.evidence import evidence_url
from regjobs.models import (
    ACTIVE_JOB_STATUSES,
    Organisation,
    RegistrationJob,
    RegistrationJobStep,
    utcnow,
)

FINAL_JOB = ("completed", "failed", "cancelled")


class ActiveJobExists(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def find_job(
    session: Session, *, organisation: Organisation, job_id: str
) -> RegistrationJob | None:
    """The job if it exists and belongs to the organisation (others' jobs do not exist)."""
    return session.scalars(
        select(RegistrationJob).where(
            RegistrationJob.id == job_id, RegistrationJob.organisation_id == organisation.id
        )
    ).one_or_none()


def find_by_idempotency_key(
    session: Session, *, organisation: Organisation, idempotency_key: str
) -> RegistrationJob | None:
    """The job an earlier create with this `Idempotency-Key` made, if any."""
    return session.scalars(
        select(RegistrationJob).where(
            RegistrationJob.organisation_id == organisation.id,
            RegistrationJob.idempotency_key == idempotency_key,
        )
    ).one_or_none()


def active_job(
    session: Session, *, organisation: Organisation, restaurant_id: str
) -> RegistrationJob | None:
    return session.scalars(
        select(RegistrationJob).where(
            RegistrationJob.organisation_id == organisation.id,
            RegistrationJob.restaurant_id == restaurant_id,
            RegistrationJob.status.in_(ACTIVE_JOB_STATUSES),
        )
    ).first()


def create_job(
    session: Session, *, organisation: Organisation, job_in: JobCreate, idempotency_key: str | None
) -> tuple[RegistrationJob, bool]:
    """Insert the job and its steps and commit; the job and whether it is new. A repeated
    `Idempotency-Key` gives the job the first create made, even when both arrive at once; a
    second active job for the restaurant is refused. The database's unique indexes decide
    both races, not a check before the insert."""
    if idempotency_key:
        earlier = find_by_idempotency_key(
            session, organisation=organisation, idempotency_key=idempotency_key
        )
        if earlier is not None:
            return earlier, False
    try:
        job = ledger.create_job(
            session,
            organisation_id=organisation.id,
            restaurant_id=job_in.restaurant_id,
            config=job_in.execution_config,
            idempotency_key=idempotency_key,
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key:
            earlier = find_by_idempotency_key(
                session, organisation=organisation, idempotency_key=idempotency_key
            )
            if earlier is not None:
                return earlier, False
        existing = active_job(
            session, organisation=organisation, restaurant_id=job_in.restaurant_id
        )
        if existing is not None:
            raise ActiveJobExists(existing.id) from None
        raise
    return job, True


def start_job(
    session: Session,
    *,
    job: RegistrationJob,
    organisation: Organisation,
    orchestrator: Orchestrator,
) -> str:
    """Create the job's flow run and remember its id."""
    flow_run_id = orchestrator.start(job, organisation.name)
    job.flow_run_id = flow_run_id
    job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
    session.commit()
    return flow_run_id


def discard_job(session: Session, *, job: RegistrationJob) -> None:
    """Remove a job that never started (its flow run could not be created)."""
    session.rollback()
    session.execute(delete(RegistrationJobStep).where(RegistrationJobStep.job_id == job.id))
    session.execute(delete(RegistrationJob).where(RegistrationJob.id == job.id))
    session.commit()


class JobStateConflict(Exception):
    pass


def read_job(
    session: Session,
    *,
    job: RegistrationJob,
    orchestrator: Orchestrator,
    second_look: bool = False,
) -> JobPublic:
    """The job as the frontend sees it; an end only Prefect saw (a dead flow-run process)
    is written down on the way, so the database never keeps a dead job active."""
    rows = session.scalars(
        select(RegistrationJobStep).where(RegistrationJobStep.job_id == job.id)
    ).all()
    seen = orchestrator.snapshot(job.id, job.flow_run_id)
    settings = orchestrator.settings
    snapshot = lease_expired(job, seen, utcnow(), settings.worker_lost_seconds)
    evidence = {
        step_id: [
            EvidencePublic(attempt=a, url=evidence_url(settings, job.id, e)) for a, e in shots
        ]
        for step_id, shots in ledger.evidence_index(session, job_id=job.id).items()
    }
    public = job_public(
        job, rows, snapshot, prefect_ui_url=settings.prefect_ui_url, evidence=evidence
    )
    if snapshot is not None and public.status in FINAL_JOB and job.status not in FINAL_JOB:
        written = ledger.record_outcome(
            session,
            job=job,
            flow_run_id=snapshot.id,
            observed_at=snapshot.state.timestamp,
            status=public.status,
            error_message=public.error_message,
            steps={s.step_id: (s.status, s.error_message, s.skip_reason) for s in public.steps},
        )
        if written:
            session.commit()
            if seen is not None and seen.state.type in (StateType.RUNNING, StateType.PENDING):
                # Prefect would keep the dead run Running forever (and refuse to retry it).
                orchestrator.mark_crashed(job.id, seen.id, public.error_message or "worker lost")
        elif not second_look:
            # The flow recorded its own end after the rows above were read: answer from what
            # it recorded (the rollback makes every row load again).
            session.rollback()
            return read_job(session, job=job, orchestrator=orchestrator, second_look=True)
    return public


def fail_jobs_without_heartbeat(orchestrator: Orchestrator) -> int:
    """Fail every job whose worker stopped renewing its lease; how many there were."""
    settings = orchestrator.settings
    with session_scope() as session:
        stale = ledger.jobs_without_heartbeat(
            session, older_than=timedelta(seconds=settings.worker_lost_seconds)
        ) + ledger.jobs_queued_since(
            session,
            older_than=timedelta(seconds=pending_grace(settings.worker_lost_seconds)),
        )
        for job in stale:
            read_job(session, job=job, orchestrator=orchestrator)
        return len(stale)


def cancel_job(session: Session, *, job: RegistrationJob, orchestrator: Orchestrator) -> JobPublic:
    """Cancel: Prefect first (so a flow run starting now sees it is cancelling), then the
    ledger (from the commit on, no step starts)."""
    public = read_job(session, job=job, orchestrator=orchestrator)
    if public.status in FINAL_JOB:
        raise JobStateConflict(f"the job is already {public.status}; nothing to cancel")
    if job.flow_run_id is not None:
        orchestrator.cancel(job.id, job.flow_run_id)
    ledger.request_cancel(session, job=job)
    session.commit()
    return read_job(session, job=job, orchestrator=orchestrator)


def retry_job(
    session: Session,
    *,
    job: RegistrationJob,
    organisation: Organisation,
    orchestrator: Orchestrator,
    from_step: str | None,
) -> str:
    """Queue the job's unfinished steps (and `from_step` onwards) in a new flow run."""
    public = read_job(session, job=job, orchestrator=orchestrator)
    if public.status not in ("failed", "cancelled", "completed"):
        raise JobStateConflict(f"the job is {public.status}; only an ended job can be retried")
    if public.status == "completed" and from_step is None:
        raise JobStateConflict("the job completed: nothing to retry (name a from_step to re-run)")
    ledger.queue_retry(session, job=job, from_step=from_step)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        other = active_job(session, organisation=organisation, restaurant_id=job.restaurant_id)
        raise ActiveJobExists(other.id if other else "unknown") from None
    try:
        flow_run_id = orchestrator.start(job, organisation.name)
    except OrchestratorUnavailable:
        session.rollback()
        raise
    job.flow_run_id = flow_run_id
    job.flow_run_ids = [*job.flow_run_ids, flow_run_id]
    session.commit()
    return flow_run_id
