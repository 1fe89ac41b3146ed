"""`python -m api.serve`: API processes behind one port, each on a socket of its own. Real
processes and sockets; the app served here answers with its process ID, so the test sees
which process took each connection."""

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

from deployments.stack import alive, free_port
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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`api.serve` with two processes of the pid app; its supervisor and port."""
    port = free_port()
    command = [sys.executable, "-m", "api.serve", "--app", "tests.e2e.test_serve:whoami"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env={**os.environ, "REGJOBS_AUTO_MIGRATE": "false", "REGJOBS_STATE_DIR": str(tmp_path)},
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(answering(port, 20)) == 2, timeout=60, what="two API processes")
        yield process, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_connections_opened_at_once_are_spread_evenly(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    """200 connections opened at once: each process takes 70-130 of them, every time (with
    one shared socket, as `uvicorn --workers` has, one of two took up to 151)."""
    _, port = served
    for _ in range(5):
        split = answering(port, 200)
        assert sum(split.values()) == 200 and len(split) == 2, split
        assert all(70 <= n <= 130 for n in split.values()), split


def test_a_dead_process_is_replaced_and_sigterm_ends_them_all(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = served
    victim = next(iter(answering(port, 20)))
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(split := answering(port, 20)) == 2 and victim not in split,
        timeout=60,
        what="a new process in place of the killed one",
    )
    serving = set(answering(port, 20))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in serving)


def test_a_taken_port_is_refused_naming_it() -> None:
    """A port something else listens on: an error naming it, no process started."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "api.serve", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_a_killed_supervisor_takes_its_processes_with_it(
    served: tuple[subprocess.Popen[bytes], int],
) -> None:
    """SIGKILL of the supervisor alone (its processes are not signalled): they end too, and
    nothing answers on the port any more."""
    process, port = served
    serving = set(answering(port, 20))
    assert len(serving) == 2
    process.kill()
    process.wait(timeout=10)
    wait_for(
        lambda: not any(alive(pid) for pid in serving),
        timeout=15,
        what="the API processes to end with their supervisor",
    )
    assert answering(port, 5) == Counter()
