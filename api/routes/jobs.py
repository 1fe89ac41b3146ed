"""Registration jobs: create, read, watch."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from api.deps import (
    OrchestratorDep,
    OrganisationDep,
    SessionDep,
    SettingsDep,
    bearer,
    current_organisation,
)
from api.orchestrator import OrchestratorUnavailable
from api.schemas import (
    ActionResult,
    ActiveJobPublic,
    JobCreate,
    JobCreated,
    JobPublic,
    ProgressPublic,
    RetryRequest,
)
from api.service import (
    ActiveJobExists,
    JobStateConflict,
    active_job,
    cancel_job,
    create_job,
    discard_job,
    find_job,
    read_job,
    retry_job,
    start_job,
)
from api.translate import progress_public
from regjobs import catalogue
from regjobs.evidence import valid
from regjobs.models import RegistrationJob, StepEvidence

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
    try:
        job, new = create_job(
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
    if not new:
        response.status_code = status.HTTP_200_OK
        public = read_job(session, job=job, orchestrator=orchestrator)
        return JobCreated(
            job_id=job.id, status=public.status, steps=public.steps, flow_run_id=job.flow_run_id
        )
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


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job's state does not allow this"},
    503: {"description": "Prefect is unavailable; nothing changed"},
    **_ERRORS,
}


def _unavailable(exc: OrchestratorUnavailable) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{exc}; nothing changed")


@router.post("/{job_id}/start", response_model=ActionResult, responses=_CONFLICT)
def start(
    job_id: UUID, session: SessionDep, organisation: OrganisationDep, orchestrator: OrchestratorDep
) -> ActionResult:
    """Start a job created with `auto_start: false`."""
    job = _job_or_404(session, organisation, job_id)
    if job.flow_run_id is not None or job.status != "pending":
        raise HTTPException(status.HTTP_409_CONFLICT, "the job has already been started")
    try:
        flow_run_id = start_job(
            session, job=job, organisation=organisation, orchestrator=orchestrator
        )
    except OrchestratorUnavailable as exc:
        raise _unavailable(exc) from None
    return ActionResult(success=True, status="pending", flow_run_id=flow_run_id)


@router.post("/{job_id}/cancel", response_model=ActionResult, responses=_CONFLICT)
def cancel(
    job_id: UUID, session: SessionDep, organisation: OrganisationDep, orchestrator: OrchestratorDep
) -> ActionResult:
    """Cancel the job: no step starts after this answers; running steps are stopped."""
    job = _job_or_404(session, organisation, job_id)
    try:
        cancel_job(session, job=job, orchestrator=orchestrator)
    except JobStateConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except OrchestratorUnavailable as exc:
        raise _unavailable(exc) from None
    return ActionResult(success=True, status="cancelled", flow_run_id=job.flow_run_id)


@router.post("/{job_id}/retry", response_model=ActionResult, responses=_CONFLICT)
def retry(
    job_id: UUID,
    session: SessionDep,
    organisation: OrganisationDep,
    orchestrator: OrchestratorDep,
    body: RetryRequest | None = None,
) -> ActionResult:
    """Re-run the failed, skipped and cancelled steps; with `from_step`, also that step and
    every step that depends on it. Completed steps outside that set are reused."""
    from_step = body.from_step if body else None
    if from_step is not None and from_step not in catalogue.BY_ID:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "type": "value_error",
                    "loc": ["body", "from_step"],
                    "msg": f"unknown step {from_step!r}; one of: {', '.join(catalogue.STEP_IDS)}",
                }
            ],
        )
    job = _job_or_404(session, organisation, job_id)
    try:
        flow_run_id = retry_job(
            session,
            job=job,
            organisation=organisation,
            orchestrator=orchestrator,
            from_step=from_step,
        )
    except JobStateConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ActiveJobExists as exists:
        raise _active_conflict(exists) from None
    except OrchestratorUnavailable as exc:
        raise _unavailable(exc) from None
    return ActionResult(success=True, status="in_progress", flow_run_id=flow_run_id)


@router.get(
    "/{job_id}/evidence/{evidence_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_ERRORS},
    dependencies=[],
)
def evidence(
    job_id: UUID,
    evidence_id: int,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    sig: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """A screenshot of a failed browser attempt: with an API key of the job's organisation,
    or with the signed link the job and its Prefect artifact give."""
    if sig is None or not valid(settings, str(job_id), evidence_id, sig):
        organisation = current_organisation(session, credentials)
        if find_job(session, organisation=organisation, job_id=str(job_id)) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"registration job {job_id} not found")
    shot = session.get(StepEvidence, evidence_id)
    if shot is None or shot.job_id != str(job_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"evidence {evidence_id} not found")
    return Response(shot.data, media_type=shot.content_type)


def _active_conflict(exists: ActiveJobExists) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        {
            "message": "the restaurant already has an active registration job",
            "active_job_id": exists.job_id,
        },
    )


restaurants = APIRouter(prefix="/api/restaurants", tags=["restaurants"])


@restaurants.get(
    "/{restaurant_id}/registration-jobs/active",
    response_model=ActiveJobPublic,
    responses={401: _ERRORS[401]},
)
def active(
    restaurant_id: Annotated[str, Path(min_length=1, max_length=200)],
    session: SessionDep,
    organisation: OrganisationDep,
    orchestrator: OrchestratorDep,
) -> ActiveJobPublic:
    """The restaurant's pending or in-progress job in your organisation, or null."""
    job = active_job(session, organisation=organisation, restaurant_id=restaurant_id)
    if job is None:
        return ActiveJobPublic(job=None)
    public = read_job(session, job=job, orchestrator=orchestrator)
    # Reading may have found it ended (its process died): then it is not active.
    return ActiveJobPublic(job=public if public.status in ("pending", "in_progress") else None)
