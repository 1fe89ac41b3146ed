"""Registration jobs: create, read, list, watch, start, cancel, retry.

Reads answer from the materialised view (`api.reads`): no Prefect call, no lock, no write.
Transitions are one ledger transaction each (`api.service`): none calls Prefect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api import hotpath, reads, service
from api.deps import (
    ApiKeyDep,
    CallerDep,
    CredentialsDep,
    OwnJobDep,
    SettingsDep,
    api_key,
    caller,
    not_found,
)
from api.events import EventHub
from api.schemas import (
    ActionResult,
    ActiveJobPublic,
    JobCreate,
    JobCreated,
    JobList,
    JobPublic,
    ProgressPublic,
    RetryRequest,
)
from regjobs import catalogue, ledger
from regjobs.catalogue import JobStatus
from regjobs.evidence import valid

router = APIRouter(prefix="/api/registration-jobs", tags=["registration-jobs"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid API key"},
    404: {"description": "No such job in your organisation"},
}
_ETAG_HEADERS = {"ETag": {"description": "The job's version", "schema": {"type": "string"}}}
_CACHED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: `If-None-Match` names the job's current version"},
    **_ERRORS,
}
_JSON = "application/json"
_TOO_LARGE: dict[str, Any] = {
    "description": "The body is larger than REGJOBS_MAX_BODY_BYTES (256 KiB by default)"
}

IfNoneMatch = Annotated[str | None, Header(max_length=1000)]
#: Any text but a NUL character (PostgreSQL cannot compare or store one).
NO_NUL = r"^[^\x00]*$"


async def _view(key: str, job_id: UUID, kind: reads.View) -> reads.Found:
    try:
        return await reads.run(reads.view, key, str(job_id), kind)
    except reads.NotFound:
        raise not_found(job_id) from None
    except reads.Unauthorized:
        # The key was checked in the job's own query; only a failed one is asked about.
        await caller(key)
        raise


def _cached(found: reads.Found, if_none_match: str | None, body: str | None = None) -> Response:
    status_code, headers, data = hotpath.answer(found, if_none_match, body or found.body)
    return Response(
        data, status_code=status_code, headers={k.decode(): v.decode() for k, v in headers}
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    responses={
        200: {"model": JobCreated, "description": "A repeated Idempotency-Key: the original job"},
        409: {"description": "The restaurant already has an active job (its id in `detail`)"},
        413: _TOO_LARGE,
        **_ERRORS,
    },
)
async def create(
    job_in: JobCreate,
    organisation: CallerDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=hotpath.IDEMPOTENCY_KEY_MAX)] = None,
) -> Response:
    """Create a job; unless `auto_start` is false its flow run is started in the background.
    Answers at once, whether Prefect is up or not (the job says what it waits for). (The
    plain success is usually answered before the framework: `api.hotpath`.)"""
    try:
        status_code, body = await service.create_answer(
            organisation_id=organisation.id,
            job_in=job_in,
            idempotency_key=idempotency_key,
            nudge=lambda: hotpath.nudge(request.app),
        )
    except ledger.ActiveJobExists as exists:
        raise _active_conflict(exists) from None
    return Response(body, status_code=status_code, media_type=_JSON)


@router.get("", response_model=JobList, responses={401: _ERRORS[401]})
async def list_jobs(
    organisation: CallerDep,
    restaurant_id: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)
    ] = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
) -> Response:
    """Your organisation's jobs, newest first, a page at a time (`next_cursor`)."""
    try:
        jobs, next_cursor = await reads.run(
            lambda: reads.list_jobs(
                organisation.id,
                restaurant_id=restaurant_id,
                status=status_,
                limit=limit,
                cursor=cursor,
            )
        )
    except reads.BadCursor as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"type": "value_error", "loc": ["query", "cursor"], "msg": str(exc)}],
        ) from None
    body = '{"jobs":[' + ",".join(jobs) + '],"next_cursor":' + json.dumps(next_cursor) + "}"
    return Response(body, media_type=_JSON)


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    responses={200: {"headers": _ETAG_HEADERS}, **_CACHED},
)
async def get(
    job_id: UUID, key: ApiKeyDep, settings: SettingsDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The job and its steps. Answers with an `ETag`; `If-None-Match` with it gives `304`
    while the job has not changed."""
    found = await _view(key, job_id, "job")
    body = reads.job_body(settings, str(job_id), found.organisation_id, found.body)
    return _cached(found, if_none_match, body)


@router.get(
    "/{job_id}/progress",
    response_model=ProgressPublic,
    responses={200: {"headers": _ETAG_HEADERS}, **_CACHED},
)
async def progress(job_id: UUID, key: ApiKeyDep, if_none_match: IfNoneMatch = None) -> Response:
    """Cheap enough to poll every few seconds from every tab: one read of the stored view;
    with `If-None-Match`, `304` and no body while nothing changed."""
    return _cached(await _view(key, job_id, "progress"), if_none_match)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`event: job` or `event: step`, `data:` the new state (JSON), "
            "`id:` the job's version at that event; a comment line every 15 s; the stream "
            "ends after the job's final event."
        },
        **_ERRORS,
    },
)
async def events(
    job_id: OwnJobDep,
    organisation: CallerDep,
    request: Request,
    settings: SettingsDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: every change of the job or a step, in order, from the start (or
    after `Last-Event-ID`), until the job's final event. A tab that listens needs no polling."""
    hub: EventHub = request.app.state.events
    async for event in hub.stream(job_id, last_event_id or 0):
        if event is None:
            yield ServerSentEvent(comment="keep-alive")
            continue
        data = event.data
        if event.kind == "step" and '"evidence_id"' in data:
            step = json.loads(data)
            reads.with_links(settings, job_id, organisation.id, [step])
            data = json.dumps(step)
        yield ServerSentEvent(raw_data=data, event=event.kind, id=str(event.seq))


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job's state does not allow this"},
    **_ERRORS,
}


@router.post("/{job_id}/start", response_model=ActionResult, responses=_CONFLICT)
async def start(job_id: OwnJobDep, request: Request) -> ActionResult:
    """Start a job created with `auto_start: false`."""
    try:
        await service.run(service.start_job, job_id=job_id)
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    hotpath.nudge(request.app)
    return ActionResult(success=True, status=JobStatus.PENDING, flow_run_id=None)


@router.post("/{job_id}/cancel", response_model=ActionResult, responses=_CONFLICT)
async def cancel(job_id: OwnJobDep, request: Request) -> ActionResult:
    """Cancel the job: no step starts after this answers (its flow run loses the job at
    once, Prefect or not); running steps are stopped, and Prefect cancels the run."""
    try:
        job = await service.run(service.cancel_job, job_id=job_id)
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    hotpath.nudge(request.app)
    return ActionResult(success=True, status=JobStatus.CANCELLED, flow_run_id=job.flow_run_id)


@router.post(
    "/{job_id}/retry", response_model=ActionResult, responses={413: _TOO_LARGE, **_CONFLICT}
)
async def retry(
    job_id: UUID,
    organisation: CallerDep,
    request: Request,
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
    if not await reads.run(reads.job_exists, organisation.id, str(job_id)):
        raise not_found(job_id)
    try:
        await service.run(
            service.retry_job,
            organisation_id=organisation.id,
            job_id=str(job_id),
            from_step=from_step,
        )
    except ledger.ActiveJobExists as exists:
        raise _active_conflict(exists) from None
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    hotpath.nudge(request.app)
    return ActionResult(success=True, status=JobStatus.IN_PROGRESS, flow_run_id=None)


#: The largest id a row can have (a signed 64-bit integer); beyond it nothing exists.
MAX_ROW_ID = 2**63 - 1


@router.get(
    "/{job_id}/evidence/{evidence_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_ERRORS},
)
async def evidence(
    job_id: UUID,
    evidence_id: int,
    settings: SettingsDep,
    credentials: CredentialsDep,
    org: Annotated[str | None, Query(max_length=64)] = None,
    exp: Annotated[str | None, Query(max_length=20)] = None,
    sig: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """A screenshot of a failed browser attempt: with an API key of the job's organisation,
    or with the signed link the job and its Prefect artifact give (`org`, `exp`, `sig`),
    until it expires. A link that is expired, altered or of another organisation is 404."""
    if org is not None or exp is not None or sig is not None:
        if not (
            org
            and exp
            and sig
            and valid(settings, str(job_id), evidence_id, org, exp, sig)
            and await reads.run(reads.job_exists, org, str(job_id))
        ):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such evidence link (or it expired)")
    else:
        organisation = await caller(await api_key(credentials))
        if not await reads.run(reads.job_exists, organisation.id, str(job_id)):
            raise not_found(job_id)
    shot = None
    if 1 <= evidence_id <= MAX_ROW_ID:
        shot = await reads.run(reads.evidence, str(job_id), evidence_id)
    if shot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"evidence {evidence_id} not found")
    return Response(shot[0], media_type=shot[1])


def _active_conflict(exists: ledger.ActiveJobExists) -> HTTPException:
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
async def active(
    restaurant_id: Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)],
    organisation: CallerDep,
    settings: SettingsDep,
) -> Response:
    """The restaurant's pending or in-progress job in your organisation, or null."""
    view = await reads.run(reads.active_job, organisation.id, restaurant_id)
    if view is None:
        return Response('{"job":null}', media_type=_JSON)
    job_id = json.loads(view)["id"]
    body = reads.job_body(settings, job_id, organisation.id, view)
    return Response('{"job":' + body + "}", media_type=_JSON)
