"""Registration jobs: create, read, watch."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Response, status

from api.deps import OrchestratorDep, OrganisationDep, SessionDep
from api.orchestrator import OrchestratorUnavailable
from api.schemas import JobCreate, JobCreated, JobPublic, ProgressPublic
from api.service import ActiveJobExists, create_job, discard_job, find_job, read_job, start_job
from api.translate import progress_public
from regjobs.models import RegistrationJob

router = APIRouter(prefix="/api/registration-jobs", tags=["registration-jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    404: {"description": "No such job in your organisation"},
}


def _job_or_404(
    session: SessionDep, organisation: OrganisationDep, job_id: UUID
) -> RegistrationJob:
    job = find_job(session, organisation=organisation, job_id=str(job_id))
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"registration job {job_id} not found")
    return job


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    responses={
        200: {"model": JobCreated, "description": "A repeated Idempotency-Key: the original job"},
        409: {"description": "The restaurant already has an active job (its id in `detail`)"},
        503: {"description": "Prefect is unavailable; nothing was created"},
        **_ERRORS,
    },
)
def create(
    job_in: JobCreate,
    session: SessionDep,
    organisation: OrganisationDep,
    orchestrator: OrchestratorDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobCreated:
    """Create a job and (unless `auto_start` is false) start its flow run; answers at once."""
    if idempotency_key:
        from sqlalchemy import select

        earlier = session.scalars(
            select(RegistrationJob).where(
                RegistrationJob.organisation_id == organisation.id,
                RegistrationJob.idempotency_key == idempotency_key,
            )
        ).one_or_none()
        if earlier is not None:
            response.status_code = status.HTTP_200_OK
            public = read_job(session, job=earlier, orchestrator=orchestrator)
            return JobCreated(
                job_id=earlier.id,
                status=public.status,
                steps=public.steps,
                flow_run_id=earlier.flow_run_id,
            )
    try:
        job = create_job(
            session, organisation=organisation, job_in=job_in, idempotency_key=idempotency_key
        )
    except ActiveJobExists as exists:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {
                "message": "the restaurant already has an active registration job",
                "active_job_id": exists.job_id,
            },
        ) from None
    if job_in.auto_start:
        try:
            start_job(session, job=job, organisation=organisation, orchestrator=orchestrator)
        except OrchestratorUnavailable as exc:
            discard_job(session, job=job)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; nothing was created"
            ) from None
    public = read_job(session, job=job, orchestrator=orchestrator)
    return JobCreated(
        job_id=job.id, status="pending", steps=public.steps, flow_run_id=job.flow_run_id
    )


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS)
def get(
    job_id: UUID, session: SessionDep, organisation: OrganisationDep, orchestrator: OrchestratorDep
) -> JobPublic:
    job = _job_or_404(session, organisation, job_id)
    return read_job(session, job=job, orchestrator=orchestrator)


@router.get("/{job_id}/progress", response_model=ProgressPublic, responses=_ERRORS)
def progress(
    job_id: UUID, session: SessionDep, organisation: OrganisationDep, orchestrator: OrchestratorDep
) -> ProgressPublic:
    """Cheap enough to poll every few seconds: the ledger is local and the flow-run state
    is read from Prefect at most about once per second per job."""
    job = _job_or_404(session, organisation, job_id)
    return progress_public(read_job(session, job=job, orchestrator=orchestrator))
