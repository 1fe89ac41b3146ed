"""`python -m api.serve`: API processes behind one port, each on a socket of its own. Real
processes and sockets; the app served here answers with its process ID, so the test sees
which process took each connection. (Keeping them running is the launcher's:
tests/e2e/test_launcher.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from deployments.stack import free_port
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def whoami(scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
    """An ASGI app that answers with its process ID."""
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def answering(port: int, connections: int) -> Counter[int]:
    """Open `connections` connections at once, then ask on each which process has it."""

    async def burst() -> list[int]:
        opened = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(connections))
        )

        async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return int(answer.split(b"\r\n\r\n", 1)[1])

        return list(await asyncio.gather(*(ask(r, w) for r, w in opened)))

    try:
        return Counter(asyncio.run(burst()))
    except (OSError, ValueError):
        return Counter()


def serve(port: int, state: Path) -> subprocess.Popen[bytes]:
    """One `api.serve` process of the pid app on `port`."""
    command = [sys.executable, "-m", "api.serve", "--app", "tests.e2e.test_serve:whoami"]
    return subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "REGJOBS_AUTO_MIGRATE": "false", "REGJOBS_STATE_DIR": str(state)},
        start_new_session=True,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], int]]:
    """Two `api.serve` processes of the pid app on one port; them and the port."""
    port = free_port()
    processes = [serve(port, tmp_path) for _ in range(2)]
    try:
        wait_for(lambda: len(answering(port, 20)) == 2, timeout=60, what="two API processes")
        yield processes, port
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_connections_opened_at_once_are_spread_evenly(
    served: tuple[list[subprocess.Popen[bytes]], int],
) -> None:
    """200 connections opened at once: each process takes 70-130 of them, every time (with
    one shared socket, as `uvicorn --workers` has, one of two took up to 151)."""
    _, port = served
    for _ in range(5):
        split = answering(port, 200)
        assert sum(split.values()) == 200 and len(split) == 2, split
        assert all(70 <= n <= 130 for n in split.values()), split


def test_one_process_ends_on_sigterm_and_the_other_serves_on(
    served: tuple[list[subprocess.Popen[bytes]], int],
) -> None:
    processes, port = served
    first, second = processes
    first.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then ends by the signal it caught (as systemd expects).
    assert first.wait(timeout=30) in (0, -signal.SIGTERM)
    assert set(answering(port, 20)) == {second.pid}


def test_a_taken_port_is_refused_naming_it() -> None:
    """A port something else listens on: an error naming it, no process started."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "api.serve", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
