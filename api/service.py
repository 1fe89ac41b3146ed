"""Job transitions behind the routes: each one transaction of the ledger, apart from HTTP.

None of them calls Prefect: a create, start or retry commits a run request to the outbox
and the reconciler's dispatcher hands it to Prefect; a cancel is in force from its commit
(the flow-run process loses the job) and Prefect is told by the dispatcher.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.schemas import JobCreate
from regjobs import ledger
from regjobs.catalogue import ACTIVE_JOB_STATUSES
from regjobs.db import read_session, transaction
from regjobs.ledger import ActiveJobExists
from regjobs.models import RegistrationJob


def _by_idempotency_key(session: Session, organisation_id: str, key: str) -> str | None:
    """The view of the job an earlier create with this `Idempotency-Key` made, if any."""
    return session.scalars(
        select(RegistrationJob.view).where(
            RegistrationJob.organisation_id == organisation_id,
            RegistrationJob.idempotency_key == key,
        )
    ).one_or_none()


def _active_id(session: Session, organisation_id: str, restaurant_id: str) -> str | None:
    return session.scalars(
        select(RegistrationJob.id).where(
            RegistrationJob.organisation_id == organisation_id,
            RegistrationJob.restaurant_id == restaurant_id,
            RegistrationJob.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
        )
    ).first()


def create_job(
    *, organisation_id: str, job_in: JobCreate, idempotency_key: str | None
) -> tuple[str, bool]:
    """Commit the job, its steps and its run request; its view, and whether it is new. A
    repeated `Idempotency-Key` gives the job the first create made, even when both arrive at
    once; a second active job for the restaurant is refused. The database's unique indexes
    decide both races, not a check before the insert."""
    if idempotency_key:
        with read_session() as session:
            earlier = _by_idempotency_key(session, organisation_id, idempotency_key)
        if earlier is not None:
            return earlier, False

    def create(*, session: Session) -> str:
        job = ledger.create_job(
            session=session,
            organisation_id=organisation_id,
            restaurant_id=job_in.restaurant_id,
            config=job_in.execution_config,
            idempotency_key=idempotency_key,
            auto_start=job_in.auto_start,
        )
        return job.view or ""

    try:
        return transaction(create), True
    except IntegrityError:
        with read_session() as session:
            if idempotency_key:
                earlier = _by_idempotency_key(session, organisation_id, idempotency_key)
                if earlier is not None:
                    return earlier, False
            active = _active_id(session, organisation_id, job_in.restaurant_id)
        if active is not None:
            raise ActiveJobExists(active) from None
        raise


def start_job(*, job_id: str) -> RegistrationJob:
    return transaction(ledger.start_job, job_id=job_id)


def cancel_job(*, job_id: str) -> RegistrationJob:
    return transaction(ledger.cancel_job, job_id=job_id)


def retry_job(*, organisation_id: str, job_id: str, from_step: str | None) -> RegistrationJob:
    try:
        return transaction(ledger.retry_job, job_id=job_id, from_step=from_step)
    except IntegrityError:
        with read_session() as session:
            job = session.get(RegistrationJob, job_id)
            other = _active_id(session, organisation_id, job.restaurant_id) if job else None
        raise ActiveJobExists(other or "unknown") from None
