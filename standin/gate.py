"""The pure-ASGI layer in front of every step-serving route: records calls, applies faults.

It applies the network fault modes (status, timeout, reset, slow); the admin portal's own
modes (hide_element, expire_session) need the page and the session, so `standin.portal`
applies them, finding the request's `Call` in the scope under `CALL_SCOPE_KEY`.

It works below FastAPI on purpose: a `reset` fault must start a response and then break it
off, which only raw ASGI messages can do.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from standin.faults import NETWORK_MODES, Fault
from standin.state import CURRENT_CALL, Call, StandinState

#: The scope key under which a gated request's `Call` travels to the app (the admin portal
#: reads it to apply its own fault modes and to mark the call with them).
CALL_SCOPE_KEY = "standin.call"

#: Body length announced by a `reset` answer, of which only a few bytes are ever sent.
_RESET_ANNOUNCED_LENGTH = 64


class InjectedConnectionReset(Exception):
    """Raised mid-response so the server aborts the connection (a `reset` fault)."""


class QuietInjectedResets(logging.Filter):
    """Turn the server's traceback for an injected reset into one plain line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InjectedConnectionReset):
            record.msg, record.args = "injected fault: connection reset (%s)", (record.exc_info[1],)
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_injected_resets(logger_name: str = "uvicorn.error") -> None:
    """Install `QuietInjectedResets` on the server's error logger, once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QuietInjectedResets) for f in logger.filters):
        logger.addFilter(QuietInjectedResets())


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _accepts_html(scope: Scope) -> bool:
    accept = b", ".join(v for k, v in scope.get("headers", ()) if k.lower() == b"accept")
    return b"text/html" in accept.lower()


async def _send_error(
    send: Send,
    scope: Scope,
    status: int,
    detail: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """An error answer: an HTML page for a browser (it accepts text/html), JSON otherwise."""
    if not _accepts_html(scope):
        await _send_json(send, status, {"detail": detail}, headers)
        return
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status} {html.escape(phrase)}</title></head>\n"
        f"<body><h1>{html.escape(phrase)}</h1>\n"
        f'<p class="fault-detail">{html.escape(detail)}</p></body></html>\n'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class StepGate:
    """Wraps the app; `resolve` names the step a request serves, or None to pass it through."""

    def __init__(
        self, app: ASGIApp, *, state: StandinState, resolve: Callable[[Scope], str | None]
    ) -> None:
        self.app = app
        self.state = state
        self.resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        step = self.resolve(scope) if scope["type"] == "http" else None
        if step is None:
            await self.app(scope, receive, send)
            return
        client = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-registration-step"),
            None,
        )
        call = self.state.begin_call(step, scope["method"], scope["path"], client)
        fault = self.state.faults.take(step, NETWORK_MODES)
        call.fault = fault.mode if fault else None
        scope = {**scope, CALL_SCOPE_KEY: call}
        serving = CURRENT_CALL.set(call)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
            await send(message)

        try:
            if fault is None:
                await self.app(scope, receive, recording_send)
            else:
                await self._misbehave(fault, scope, receive, recording_send)
        except InjectedConnectionReset:
            call.status = None
            raise
        except Exception:
            if call.status is None:
                call.status = 500  # what the error middleware outside answers
            raise
        finally:
            call.end = time.time()
            CURRENT_CALL.reset(serving)

    async def _misbehave(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.mode == "slow":
            # Its delay, or until a test releases it (`/_control/release`).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.state.held().wait(), fault.delay)
            await self.app(scope, receive, send)
        elif fault.mode == "status":
            headers = []
            if fault.retry_after is not None:
                headers.append((b"retry-after", str(fault.retry_after).encode()))
            await _send_error(
                send, scope, fault.status, f"injected fault: HTTP {fault.status}", headers
            )
        elif fault.mode == "echo":
            body = await _read_body(receive)
            message = f"injected fault: rejected {body.decode('utf-8', 'replace')}"
            if _accepts_html(scope):
                await _send_error(send, scope, fault.status, message)
            else:
                detail = {"code": "rejected", "message": message}
                await _send_json(send, fault.status, {"detail": detail})
        elif fault.mode == "echo_ok":
            body = await _read_body(receive)
            try:
                received: Any = json.loads(body)
            except ValueError:
                received = body.decode("utf-8", "replace")
            await _send_json(send, 200, {"received": received})
        elif fault.mode == "timeout":
            try:
                await asyncio.wait_for(_until_disconnect(receive), fault.delay)
            except TimeoutError:
                await _send_error(send, scope, 504, "injected fault: timeout")
            # Otherwise the caller gave up first: nobody is left to answer.
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(_RESET_ANNOUNCED_LENGTH).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"', "more_body": True})
            raise InjectedConnectionReset(f"{scope['method']} {scope['path']}")


def request_call(scope: Scope) -> Call | None:
    """The `Call` the gate recorded for this request, if it serves a step."""
    call = scope.get(CALL_SCOPE_KEY)
    return call if isinstance(call, Call) else None
