"""Registration jobs: create, read, list, watch, start, cancel, retry, input.

Reads answer from the materialised view (`api.reads`): no Prefect call, no lock, no write.
Transitions are one ledger transaction each (`api.service`): none calls Prefect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.exceptions import RequestValidationError
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import Field, TypeAdapter, ValidationError

from api import inputs, reads, service
from api.deps import (
    UNAUTHORIZED,
    CallerDep,
    CredentialsDep,
    OwnJobDep,
    SettingsDep,
    TokenQuery,
    ViewerDep,
    api_key,
    caller,
    not_found,
    token_organisation,
    unauthorized,
)
from api.events import EventHub
from api.headers import IF_NONE_MATCH_MAX
from api.schemas import (
    ActionResult,
    ActiveJobPublic,
    IdempotencyKey,
    InputRequest,
    JobCreate,
    JobCreated,
    JobList,
    JobPublic,
    ProgressPublic,
    RestaurantId,
    RetryRequest,
    ViewTokenPublic,
    ViewTokenRequest,
)
from regjobs import catalogue, ledger, refusals, viewtokens
from regjobs.catalogue import JobStatus
from regjobs.evidence import valid
from regjobs.settings import get_settings

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
_AT_LIMIT: dict[str, Any] = {
    "description": "The organisation has as many active jobs as it may "
    "(REGJOBS_ORG_ACTIVE_JOB_LIMIT, 1,000 by default; the limit in `detail`); "
    "`Retry-After` says when to try again",
    "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
}

#: The two reads every open tab polls take the request alone, not declared parameters and
#: dependencies: FastAPI's solving of those cost a read about twice the read itself, and
#: with them the reads missed their target (p90 <= 50 ms, >= 2,000 reads/s at 100
#: connections, measured with wrk: docs/figures.md). `_polled` reads the request as the
#: declared ones would (the 401s of `api.deps` first, then every parameter's 422 at once),
#: and this tells OpenAPI what it reads.
_POLLED: dict[str, Any] = {
    "security": [{"HTTPBearer": []}],
    "parameters": [
        {"name": "job_id", "in": "path", "required": True,
         "schema": {"type": "string", "format": "uuid", "title": "Job Id"}},
        {"name": "if-none-match", "in": "header", "required": False,
         "schema": {"anyOf": [{"type": "string", "maxLength": IF_NONE_MATCH_MAX},
                              {"type": "null"}], "title": "If-None-Match"}},
        {"name": "token", "in": "query", "required": False,
         "description": "A job view token, instead of an API key",
         "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Token"}},
    ],
}  # fmt: skip
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Validation Error",
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
    }
}
_JOB_ID = TypeAdapter(UUID)
#: Its lines joined into one list (`api.headers`).
_IF_NONE_MATCH = TypeAdapter(Annotated[str, Field(max_length=IF_NONE_MATCH_MAX)])


def _polled(request: Request) -> tuple[str, str, str | None]:
    """A polled read's credential (a bearer API key or view token, else `?token=`), job id
    and `If-None-Match`: 401 with neither (as `api.deps.api_key`), then 422 naming every
    parameter that is not valid."""
    scheme, key = get_authorization_scheme_param(request.headers.get("authorization"))
    if not key or scheme.lower() != "bearer":
        # Looked for in the raw query first: a read with a key parses no query at all.
        token = b"token=" in request.scope["query_string"] and request.query_params.get("token")
        if not token:
            raise unauthorized(UNAUTHORIZED)
        key = token
    errors: list[Any] = []
    job_id = _valid(_JOB_ID, request.path_params["job_id"], ("path", "job_id"), errors)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        _valid(_IF_NONE_MATCH, if_none_match, ("header", "if-none-match"), errors)
    if errors:
        raise RequestValidationError(errors)
    return key, str(job_id), if_none_match


def _valid(adapter: TypeAdapter[Any], value: str, loc: tuple[str, str], errors: list[Any]) -> Any:
    """`value` as `adapter` validates it; its errors, placed at `loc`, added to `errors`."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        errors.extend({**e, "loc": (*loc, *e["loc"])} for e in exc.errors(include_url=False))
        return None


async def _view(key: str, job_id: str, kind: reads.View) -> reads.Found:
    """The job's view for an API key or a view token of the job (`key`)."""
    try:
        if viewtokens.looks_like(key):
            organisation_id = token_organisation(get_settings(), key, job_id)
            return await reads.run(reads.view_of, organisation_id, job_id, kind)
        return await reads.run(reads.view, key, job_id, kind)
    except reads.NotFound:
        raise not_found(job_id) from None
    except reads.Unauthorized:
        # The key was checked in the job's own query; only a failed one is asked about.
        await caller(key)
        raise


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names this version (weak comparison, lists, `*`)."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def _cached(found: reads.Found, if_none_match: str | None, body: str | None = None) -> Response:
    """A read of the stored view: its `ETag`, and `304` while `If-None-Match` names it."""
    headers = {"ETag": found.etag, "Cache-Control": "no-cache"}
    if not_modified(if_none_match, found.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body or found.body, media_type=_JSON, headers=headers)


def _nudge(request: Request) -> None:
    """Hand a new run request or cancel to Prefect now, if this process's reconciler leads."""
    reconciler = getattr(request.app.state, "reconciler", None)
    if reconciler is not None:
        reconciler.nudge()


@router.post(
    "",
    operation_id="create_job",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    responses={
        200: {"model": JobCreated, "description": "A repeated Idempotency-Key: the original job"},
        409: {"description": "The restaurant already has an active job (its id in `detail`)"},
        413: _TOO_LARGE,
        429: {
            "description": "The organisation has as many active jobs as it may "
            "(REGJOBS_ORG_ACTIVE_JOB_LIMIT, 1,000 by default; the limit in `detail`), or an "
            "email in the config had too many refused logins lately "
            "(REGJOBS_LOGIN_REFUSAL_LIMIT in REGJOBS_LOGIN_REFUSAL_WINDOW_SECONDS; `detail` "
            "names its field); `Retry-After` says when to try again",
            "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
        },
        **_ERRORS,
    },
)
async def create(
    job_in: JobCreate,
    organisation: CallerDep,
    request: Request,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> Response:
    """Create a job; unless `auto_start` is false its flow run is started in the background.
    Answers at once, whether Prefect is up or not (the job says what it waits for)."""
    try:
        status_code, body = await service.create_answer(
            organisation_id=organisation.id,
            job_in=job_in,
            idempotency_key=idempotency_key,
            nudge=lambda: _nudge(request),
        )
    except ledger.ActiveJobExists as exists:
        raise _active_conflict(exists) from None
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ledger.TooManyActiveJobs as over:
        raise _at_limit(over) from None
    except refusals.TooManyRefusedLogins as refused:
        raise _refused_too_often(refused) from None
    return Response(body, status_code=status_code, media_type=_JSON)


@router.get("", operation_id="list_jobs", response_model=JobList, responses={401: _ERRORS[401]})
async def list_jobs(
    organisation: CallerDep,
    restaurant_id: Annotated[RestaurantId | None, Query()] = None,
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
    operation_id="get_job",
    response_model=JobPublic,
    responses={200: {"headers": _ETAG_HEADERS}, **_CACHED, **_INVALID},
    openapi_extra=_POLLED,
)
async def get(request: Request) -> Response:
    """The job and its steps. Answers with an `ETag`; `If-None-Match` with it gives `304`
    while the job has not changed."""
    key, job_id, if_none_match = _polled(request)
    found = await _view(key, job_id, "job")
    body = reads.job_body(get_settings(), job_id, found.organisation_id, found.body)
    return _cached(found, if_none_match, body)


@router.get(
    "/{job_id}/progress",
    operation_id="get_job_progress",
    response_model=ProgressPublic,
    responses={200: {"headers": _ETAG_HEADERS}, **_CACHED, **_INVALID},
    openapi_extra=_POLLED,
)
async def progress(request: Request) -> Response:
    """Cheap enough to poll every few seconds from every tab: one read of the stored view;
    with `If-None-Match`, `304` and no body while nothing changed."""
    key, job_id, if_none_match = _polled(request)
    return _cached(await _view(key, job_id, "progress"), if_none_match)


#: Retry-After of a stream refused for the key's cap (streams end when their jobs end).
STREAM_RETRY_AFTER_SECONDS = 10


async def stream_slot(
    request: Request, viewer: ViewerDep, settings: SettingsDep
) -> AsyncIterator[None]:
    """One of the key's (or view token's) event streams, held until the stream ends (the
    dependency's exit runs after the response is sent); 429 when it holds its cap already."""
    hub: EventHub = request.app.state.events
    with hub.claim(viewer.holder) as held:
        if not held:
            cap = settings.sse_streams_per_key
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"this API key has {cap} event streams open in this API process, the most it "
                f"may (REGJOBS_SSE_STREAMS_PER_KEY={cap}); close one, or poll /progress",
                headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)},
            )
        yield


@router.get(
    "/{job_id}/events",
    operation_id="stream_job_events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`event: job` or `event: step`, `data:` the new state (JSON), "
            "`id:` the job's version at that event; a comment line every 15 s; the stream "
            "ends after the job's final event."
        },
        429: {
            "description": "The key holds REGJOBS_SSE_STREAMS_PER_KEY streams already "
            "(`Retry-After`)"
        },
        **_ERRORS,
    },
)
async def events(
    viewer: ViewerDep,
    request: Request,
    settings: SettingsDep,
    _stream: Annotated[None, Depends(stream_slot)],
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: every change of the job or a step, in order, from the start (or
    after `Last-Event-ID`), until the job's final event. A tab that listens needs no polling."""
    hub: EventHub = request.app.state.events
    job_id = viewer.job_id
    async for event in hub.stream(job_id, last_event_id or 0):
        if event is None:
            yield ServerSentEvent(comment="keep-alive")
            continue
        data = event.data
        if event.kind == "step" and '"evidence_id"' in data:
            step = json.loads(data)
            reads.with_links(settings, job_id, viewer.organisation_id, [step])
            data = json.dumps(step)
        yield ServerSentEvent(raw_data=data, event=event.kind, id=str(event.seq))


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The job's state does not allow this"},
    **_ERRORS,
}


@router.post(
    "/{job_id}/start", operation_id="start_job", response_model=ActionResult, responses=_CONFLICT
)
async def start(job_id: OwnJobDep, request: Request) -> ActionResult:
    """Start a job created with `auto_start: false`."""
    try:
        await service.run(service.start_job, job_id=job_id)
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    _nudge(request)
    return ActionResult(success=True, status=JobStatus.PENDING, flow_run_id=None)


@router.post(
    "/{job_id}/cancel", operation_id="cancel_job", response_model=ActionResult, responses=_CONFLICT
)
async def cancel(job_id: OwnJobDep, request: Request) -> ActionResult:
    """Cancel the job: no step starts after this answers (its flow run loses the job at
    once, Prefect or not); running steps are stopped, and Prefect cancels the run."""
    try:
        job = await service.run(service.cancel_job, job_id=job_id)
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    _nudge(request)
    return ActionResult(success=True, status=JobStatus.CANCELLED, flow_run_id=job.flow_run_id)


@router.post(
    "/{job_id}/retry",
    operation_id="retry_job",
    response_model=ActionResult,
    responses={413: _TOO_LARGE, 429: _AT_LIMIT, **_CONFLICT},
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
    except ledger.TooManyActiveJobs as over:
        raise _at_limit(over) from None
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    _nudge(request)
    return ActionResult(success=True, status=JobStatus.IN_PROGRESS, flow_run_id=None)


@router.post(
    "/{job_id}/view-token",
    operation_id="create_job_view_token",
    response_model=ViewTokenPublic,
    status_code=status.HTTP_201_CREATED,
    responses=_ERRORS,
)
async def view_token(
    job_id: OwnJobDep,
    organisation: CallerDep,
    settings: SettingsDep,
    body: ViewTokenRequest | None = None,
) -> ViewTokenPublic:
    """A token a browser may hold instead of your API key: it opens this job's GET,
    `/progress`, `/events`, evidence and `/input` (as `?token=` or a bearer) until
    `expires_at`, and nothing else. `url` is the job status page with it, to link to or
    embed in an iframe."""
    made = viewtokens.issue(
        settings, job_id, organisation.id, ttl_seconds=body.expires_in_seconds if body else None
    )
    return ViewTokenPublic(
        token=made.token,
        expires_at=made.expires_at,
        url=viewtokens.page_url(settings, job_id, made.token),
    )


@router.post(
    "/{job_id}/input",
    operation_id="provide_job_input",
    response_model=ActionResult,
    responses={
        409: {"description": "No step of the job waits for input (or another input, or a "
              "cancel, came first)"},
        413: _TOO_LARGE,
        422: {"description": "The merged config is not valid, a field asked for is "
              "unchanged, or the outside system still refuses the login (the job keeps "
              "waiting); `detail` names the field, never its value"},
        429: {"description": "Too many refused logins for the email lately "
              "(REGJOBS_LOGIN_REFUSAL_LIMIT); `Retry-After` says when to try again"},
        **_ERRORS,
    },
)  # fmt: skip
async def provide_input(viewer: ViewerDep, body: InputRequest, request: Request) -> ActionResult:
    """Corrected input for a step that waits for a person (`action_required`), with an API
    key or a view token of the job (`?token=` or a bearer): merged into
    the stored config and validated as a create is, checked with the outside system first
    where it can (a login), stored encrypted as a new config version; the waiting step runs
    again and the job goes on in the same flow run (Prefect resumes it, now or once it
    answers again). Completed steps are never executed again."""
    job_id = viewer.job_id
    try:
        checked = await service.run(inputs.check, job_id=job_id, partial=body.execution_config)
        await inputs.verify(checked)
        job = await service.run(inputs.store, checked=checked)
    except ledger.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except inputs.InputInvalid as invalid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, invalid.errors) from None
    except refusals.TooManyRefusedLogins as refused:
        raise _refused_too_often(refused) from None
    _nudge(request)
    return ActionResult(success=True, status=JobStatus.IN_PROGRESS, flow_run_id=job.flow_run_id)


#: The largest id a row can have (a signed 64-bit integer); beyond it nothing exists.
MAX_ROW_ID = 2**63 - 1


@router.get(
    "/{job_id}/evidence/{evidence_id}",
    operation_id="get_job_evidence",
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
    token: TokenQuery = None,
) -> Response:
    """A screenshot of a failed browser attempt: with an API key of the job's organisation
    or a view token of the job (bearer or `token`), or with the signed link the job and its
    Prefect artifact give (`org`, `exp`, `sig`), until it expires. A link or token that is
    expired, altered or of another organisation or job is 404."""
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
        bearer = credentials.credentials if credentials is not None else ""
        given = token or (bearer if viewtokens.looks_like(bearer) else None)
        if given:
            organisation_id = token_organisation(settings, given, str(job_id))
        else:
            organisation_id = (await caller(await api_key(credentials))).id
        if not await reads.run(reads.job_exists, organisation_id, str(job_id)):
            raise not_found(job_id)
    shot = None
    if 1 <= evidence_id <= MAX_ROW_ID:
        shot = await reads.run(reads.evidence, str(job_id), evidence_id)
    if shot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"evidence {evidence_id} not found")
    return Response(shot[0], media_type=shot[1])


#: Retry-After of a 429 at the organisation's limit of active jobs: about a job's length.
AT_LIMIT_RETRY_AFTER = 30


def _refused_too_often(refused: refusals.TooManyRefusedLogins) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        refused.detail,
        headers={"Retry-After": refused.retry_header},
    )


def _at_limit(over: ledger.TooManyActiveJobs) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        {"message": str(over), "limit": over.limit},
        headers={"Retry-After": str(AT_LIMIT_RETRY_AFTER)},
    )


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
    operation_id="get_active_job",
    response_model=ActiveJobPublic,
    responses={401: _ERRORS[401]},
)
async def active(
    restaurant_id: Annotated[RestaurantId, Path()],
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
