"""The two reads every open tab polls (a job, its `/progress`), answered before the
framework's routing, dependency injection and middleware stack, which cost several times
the read itself (measured: docs/figures.md).

Only the plain success of a well-formed request is answered here: the stored view, or
`304` for a matching `If-None-Match`. Anything else (no key, a bad key, another
organisation's or an unknown job, a malformed id) goes on to the routes in
`api.routes.jobs`, which own every error answer and the OpenAPI description.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api import reads
from regjobs.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        match = _PATH.match(scope["path"])
        key = if_none_match = None
        if match:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    scheme, _, credentials = value.decode("latin-1").partition(" ")
                    key = credentials.strip() if scheme.lower() == "bearer" else None
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
