"""The two reads every open tab polls (a job, its `/progress`) and the create a burst
sends all at once, answered before the framework's routing, dependency injection and
middleware stack, which cost several times the read itself and a quarter of a create
(measured: docs/figures.md).

Only the plain success of a well-formed request is answered here: the stored view, or
`304` for a matching `If-None-Match`; a valid create's 201 (or, for a repeated
`Idempotency-Key`, 200). Anything else (no key, a bad key, another organisation's or an
unknown job, a malformed id, a body the model refuses, a restaurant with an active job) goes
on to the routes in `api.routes.jobs`, with the body as it came, and they own every error
answer and the OpenAPI description. Both answer a create through `service.create_answer`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError

from api import reads, service
from api.schemas import JobCreate
from regjobs.ledger import ActiveJobExists
from regjobs.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CREATE_PATH = "/api/registration-jobs"
#: The longest `Idempotency-Key` the route takes (longer: its 422).
IDEMPOTENCY_KEY_MAX = 200

_PATH = re.compile(
    r"^/api/registration-jobs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(/progress)?$"
)


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether `If-None-Match` names this version (weak comparison, lists, `*`)."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def answer(
    found: reads.Found, if_none_match: str | None, body: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of a read of the stored view: `304` while unchanged."""
    headers = [(b"etag", found.etag.encode()), (b"cache-control", b"no-cache")]
    if not_modified(if_none_match, found.etag):
        return 304, headers, b""
    data = body.encode()
    return 200, [*headers, (b"content-type", b"application/json"),
                 (b"content-length", str(len(data)).encode())], data  # fmt: skip


class HotReads:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "POST" and scope["path"] == CREATE_PATH:
            return await self.create(scope, receive, send)
        if scope["method"] != "GET":
            return await self.app(scope, receive, send)
        match = _PATH.match(scope["path"])
        key = if_none_match = None
        if match:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    key = _bearer(value)
                elif name == b"if-none-match":
                    if_none_match = value.decode("latin-1")
        if not match or not key:
            return await self.app(scope, receive, send)
        job_id, progress = match.group(1), bool(match.group(2))
        try:
            found = await reads.run(reads.view, key, job_id, "progress" if progress else "job")
        except (reads.NotFound, reads.Unauthorized):
            return await self.app(scope, receive, send)  # the routes answer errors
        body = (
            found.body
            if progress
            else reads.job_body(self.settings, job_id, found.organisation_id, found.body)
        )
        status, headers, data = answer(found, if_none_match, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def create(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = idempotency_key = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                key = _bearer(value)
            elif name == b"content-type":
                json_body = value.split(b";")[0].strip().lower() == b"application/json"
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
        if not key or not json_body:
            return await self.app(scope, receive, send)
        try:
            caller = await reads.caller_of(key)  # before a byte of the body is read
        except reads.Unauthorized:
            return await self.app(scope, receive, send)
        body, receive = await _read_body(receive)
        try:
            job_in = JobCreate.model_validate(json.loads(body))
        except (ValueError, ValidationError, RecursionError):
            return await self.app(scope, receive, send)  # the route answers what is wrong
        if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            return await self.app(scope, receive, send)
        app = scope.get("app")
        try:
            status, data = await service.create_answer(
                organisation_id=caller.id,
                job_in=job_in,
                idempotency_key=idempotency_key,
                nudge=lambda: nudge(app),
            )
        except ActiveJobExists:
            # The route answers the 409 (its create is refused again, writing nothing).
            return await self.app(scope, receive, send)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(data)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def _bearer(authorization: bytes) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None for any other scheme."""
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def nudge(app: Any) -> None:
    """Hand a new run request or cancel to Prefect now, if this process's reconciler leads."""
    reconciler = getattr(app.state, "reconciler", None) if app is not None else None
    if reconciler is not None:
        reconciler.nudge()


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that gives it again, as it came, to whatever
    answers the request after all."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            return b"".join(chunks), _replay([message], receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
