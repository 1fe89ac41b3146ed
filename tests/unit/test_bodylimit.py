"""The request body limit (api.bodylimit): a declared length over the limit is answered
before any of the body is read; a streamed body is answered once it passes the limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI

from api.bodylimit import BodyLimit
from tests.helpers import serve_in_thread, upload

LIMIT = 4096


class Recorder:
    """An ASGI app that reads the whole body, and says what it saw."""

    def __init__(self) -> None:
        self.called = False
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[list[dict[str, Any]], int]:
    """Run one request through `app`; the messages sent and how many chunks were read."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        if read > len(chunks):
            await asyncio.sleep(3600)  # a client that never sends more
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    return sent, read


def status_of(sent: list[dict[str, Any]]) -> int:
    return int(sent[0]["status"])


def test_a_declared_length_over_the_limit_is_413_before_reading_anything() -> None:
    inner = Recorder()
    sent, read = call(
        BodyLimit(inner, LIMIT), [b"x" * 100], [(b"content-length", str(10 * 2**20).encode())]
    )
    assert status_of(sent) == 413
    assert read == 0 and not inner.called
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(sent[1]["body"]) == {
        "detail": f"the request body is larger than {LIMIT} bytes"
    }


def test_a_streamed_body_is_413_once_it_passes_the_limit_not_at_its_end() -> None:
    inner = Recorder()
    chunks = [b"x" * 1000] * 100  # 100 kB, no length declared
    sent, read = call(BodyLimit(inner, LIMIT), chunks, [(b"transfer-encoding", b"chunked")])
    assert status_of(sent) == 413
    assert read == 5  # 5000 bytes: the first chunk past 4096
    assert len(inner.body) == 4000


def test_a_body_within_the_limit_passes_whole() -> None:
    inner = Recorder()
    chunks = [b"x" * 1000] * 4
    sent, _ = call(BodyLimit(inner, LIMIT), chunks, [(b"content-length", b"4000")])
    assert status_of(sent) == 200
    assert inner.body == b"x" * 4000


def test_exactly_the_limit_passes() -> None:
    inner = Recorder()
    sent, _ = call(BodyLimit(inner, LIMIT), [b"x" * LIMIT], [])
    assert status_of(sent) == 200


def test_other_scopes_pass_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(BodyLimit(app, LIMIT)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def _framework_app() -> Any:
    app = FastAPI()

    @app.post("/items")
    async def items(body: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(body)}

    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    return app


def test_over_a_real_socket_a_declared_10_mib_body_is_answered_at_once() -> None:
    with serve_in_thread(_framework_app()) as base:
        result = upload(base, "/items", total=10 * 2**20)
    assert result.status == 413, result.answer[:300]
    # Answered before the body: a few 64-KiB pieces at most went out before the answer
    # (two here alone, three on a loaded CI machine), not the 10 MiB.
    assert result.sent <= 8 * 64 * 1024, result.sent
    assert b"connection: close" in result.answer.lower()
    assert result.closed_by_server
    body = result.answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {"detail": "the request body is larger than 4096 bytes"}


def test_over_a_real_socket_a_chunked_body_is_cut_off_past_the_limit() -> None:
    with serve_in_thread(_framework_app()) as base:
        result = upload(base, "/items", total=10 * 2**20, chunked=True, piece=1024)
    assert result.status == 413, result.answer[:300]
    assert result.sent < 10 * 2**20 // 4
    body = result.answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {"detail": "the request body is larger than 4096 bytes"}


def test_over_a_real_socket_a_small_body_is_served() -> None:
    import httpx

    with serve_in_thread(_framework_app()) as base:
        response = httpx.post(f"{base}/items", json={"a": 1, "b": 2})
    assert response.status_code == 200
    assert response.json() == {"keys": 2}
