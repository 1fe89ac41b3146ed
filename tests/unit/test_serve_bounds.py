"""An API process's connection bounds (api.serve): the request-head deadline that uvicorn
lacks, the open-file limit raised at start, and the connection limit kept below it.

Real uvicorn servers on loopback, in threads of this process, with a small ASGI app."""

from __future__ import annotations

import logging
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from api.serve import (
    RESERVED_FILES,
    HeaderTimeoutProtocol,
    connection_limit,
    header_timeout_protocol,
    raise_open_files_limit,
    server_config,
)
from deployments.stack import free_port
from regjobs.settings import get_settings
from tests.helpers import wait_for

TIMEOUT = 0.5


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 with its length."""
    assert scope["type"] == "http"
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serving(**options: Any) -> Iterator[int]:
    """uvicorn with `options` on a free loopback port; the port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="the server to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed the connection (what it sent before is read and dropped)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def answer(sock: socket.socket) -> bytes:
    """One whole answer (head and its Content-Length of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_connection_that_sends_nothing_is_closed_after_the_head_deadline() -> None:
    with serving(http=header_timeout_protocol(TIMEOUT)) as port, connect(port) as sock:
        opened = time.monotonic()
        wait_for(lambda: closed_by_server(sock), timeout=5, interval=0.02, what="the close")
        took = time.monotonic() - opened
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1.5, took


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline() -> None:
    """A slow-loris client: each byte resets no timer; the head's deadline holds."""
    with serving(http=header_timeout_protocol(TIMEOUT)) as port, connect(port) as sock:
        opened = time.monotonic()
        head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        sent, stop = [0], threading.Event()

        def trickle() -> None:
            for byte in head:
                if stop.wait(0.05):  # the slow client's pace, not a wait for a condition
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return
                sent[0] += 1

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            wait_for(lambda: closed_by_server(sock), timeout=5, interval=0.02, what="the close")
        finally:
            stop.set()
            sender.join()
        took = time.monotonic() - opened
    # More than one byte arrived before the deadline and none of them reset it (with three
    # test processes on two cores the sender got 4 bytes out in 0.5 s; 5 was asked before).
    assert 2 <= sent[0] < len(head), "the client was sending while it was cut off"
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1.5, took


def test_the_next_request_on_a_kept_alive_connection_has_a_deadline_too() -> None:
    # uvicorn's keep-alive timeout far longer: what closes it is the head's deadline.
    options = {"http": header_timeout_protocol(TIMEOUT), "timeout_keep_alive": 30}
    with serving(**options) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        wait_for(lambda: closed_by_server(sock), timeout=5, interval=0.02, what="the close")
        took = time.monotonic() - started
    assert took < TIMEOUT + 1.5, took


def test_a_slow_body_is_not_cut_by_the_head_deadline() -> None:
    with serving(http=header_timeout_protocol(TIMEOUT)) as port, connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        time.sleep(3 * TIMEOUT)  # the client's pause, longer than the head's deadline
        sock.sendall(b"hello")
        got = answer(sock)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n5")


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_uvicorn_alone_holds_a_silent_connection_past_its_keep_alive_timeout(http: str) -> None:
    """Why `HeaderTimeoutProtocol` exists: uvicorn's own protocols arm no timer for a new
    connection (its keep-alive timeout starts after a response)."""
    with serving(http=http, timeout_keep_alive=TIMEOUT) as port, connect(port) as sock:
        readable, _, _ = select.select([sock], [], [], 4 * TIMEOUT)
        assert readable == [], "uvicorn closed it: HeaderTimeoutProtocol may no longer be needed"


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_connection_limit_fits_the_open_file_limit(caplog: pytest.LogCaptureFixture) -> None:
    assert connection_limit(2000, 20000) == 2000
    with caplog.at_level(logging.WARNING, logger="regjobs.api.serve"):
        assert connection_limit(2000, 1024) == 1024 - RESERVED_FILES
    assert "REGJOBS_API_MAX_CONNECTIONS=2000 does not fit" in caplog.text


def test_each_api_process_is_configured_with_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGJOBS_API_MAX_CONNECTIONS", "1500")
    monkeypatch.setenv("REGJOBS_API_HEADER_TIMEOUT_SECONDS", "4")
    get_settings.cache_clear()
    try:
        config = server_config("api.main:app", "127.0.0.1", 8000)
    finally:
        get_settings.cache_clear()
    assert config.limit_concurrency == 1500
    assert isinstance(config.http, type) and issubclass(config.http, HeaderTimeoutProtocol)
    assert config.http.header_timeout == 4


def test_loading_the_app_leaves_uvicorns_logging_as_uvicorn_set_it() -> None:
    """uvicorn configures its loggers, then imports the app. Importing `prefect` itself (its
    `__getattr__`, as `from prefect import x` does) runs Prefect's logging set-up, which
    lowered uvicorn's logger to WARNING: the API never logged "Application startup
    complete", and whoever waited for that line waited for ever. Prefect's modules are
    imported by name (`prefect.logging`), never through `prefect`."""
    code = (
        "import logging, uvicorn.config\n"
        "uvicorn.config.Config('api.main:app')\n"
        "before = logging.getLogger('uvicorn').level, list(logging.getLogger().handlers)\n"
        "import api.main\n"
        "after = logging.getLogger('uvicorn').level, list(logging.getLogger().handlers)\n"
        "assert before == after, (before, after)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
