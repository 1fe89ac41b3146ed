"""The request headers the API reads, and its rules for them, kept before the routes (one
middleware), so that no part of a chain can read one request two ways:

- a header that must come once (`Authorization`, `Content-Type`, `Idempotency-Key`,
  `Last-Event-ID`) sent on more than one line is `422` naming it. Taking one of the lines
  silently (Starlette takes the first, other software the last) would let two parts of a
  chain disagree on who calls or what the body is;
- `If-None-Match`, a list, may come on several lines: they are one list (RFC 9110, 5.3),
  joined here into one line as a proxy may join them; the route bounds the list's length.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

#: Headers the API reads that must come once, with the name an error shows.
ONCE: Final = {
    b"authorization": "Authorization",
    b"content-type": "Content-Type",
    b"idempotency-key": "Idempotency-Key",
    b"last-event-id": "Last-Event-ID",
}
#: Headers that are lists, their lines joined into one.
LISTS: Final = (b"if-none-match",)
#: The longest `If-None-Match` taken (its lines joined; longer: 422).
IF_NONE_MATCH_MAX: Final = 1000


def repeated(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, int]]:
    """The must-come-once headers sent more than once, with how many times, in order."""
    counts: dict[bytes, int] = {}
    for name, _ in headers:
        if name in ONCE:
            counts[name] = counts.get(name, 0) + 1
    return [(name, n) for name, n in counts.items() if n > 1]


def joined(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with the lines of each list header joined into one, where the first was."""
    if sum(1 for name, _ in headers if name in LISTS) < 2:
        return headers
    values: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in LISTS:
            values.setdefault(name, []).append(value)
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name not in LISTS:
            out.append((name, value))
        elif name in values:
            out.append((name, b", ".join(values.pop(name))))
    return out


def repeated_answer(found: list[tuple[bytes, int]]) -> bytes:
    """The 422's body for repeated must-come-once headers (the shape of every 422)."""
    detail = [
        {
            "type": "header_repeated",
            "loc": ["header", name.decode()],
            "msg": f"{ONCE[name]} was sent {n} times: send it once",
        }
        for name, n in found
    ]
    return json.dumps({"detail": detail}).encode()


class HeaderRules:
    """The rules above, for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        found = repeated(scope["headers"])
        if found:
            body = repeated_answer(found)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 422, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return None
        scope["headers"] = joined(scope["headers"])
        return await self.app(scope, receive, send)
