"""Job operations behind the routes: database writes apart from HTTP concerns."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.orchestrator import Orchestrator
from api.schemas import JobCreate, JobPublic
from api.translate import job_public
from regjobs import ledger
from regjobs.models import ACTIVE_JOB_STATUSES, Organisation, RegistrationJob, RegistrationJobStep


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
) -> RegistrationJob:
    """Insert the job and its steps and commit; a second active job for the restaurant is refused
    by the database's unique index, not by a check before the insert."""
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
        existing = active_job(
            session, organisation=organisation, restaurant_id=job_in.restaurant_id
        )
        if existing is not None:
            raise ActiveJobExists(existing.id) from None
        raise
    return job


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


def read_job(session: Session, *, job: RegistrationJob, orchestrator: Orchestrator) -> JobPublic:
    rows = session.scalars(
        select(RegistrationJobStep).where(RegistrationJobStep.job_id == job.id)
    ).all()
    snapshot = orchestrator.snapshot(job.id, job.flow_run_id)
    return job_public(job, rows, snapshot, prefect_ui_url=orchestrator.settings.prefect_ui_url)
