"""Hostile connections against a running API process (`python -m api.serve`, as the stack
starts it): 1,100 idle sockets leave `/healthz` and job reads answering and are closed by
the server after the request-head deadline; one event stream more than a key's cap is 429
while another key still streams."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.stack import Stack, free_port
from regjobs.settings import get_settings
from tests.helpers import full_config, new_key, wait_for

pytestmark = pytest.mark.e2e

HEAD_TIMEOUT = 5
STREAMS_PER_KEY = 3
IDLE = 1100


@pytest.fixture(scope="module")
def bounded(stack: Stack) -> Iterator[str]:
    """An API process of the test system with a short head deadline and a small stream cap
    (out of the reconciler election); its URL."""
    port = free_port()
    stack.start_api(
        {
            "REGJOBS_API_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
            "REGJOBS_SSE_STREAMS_PER_KEY": str(STREAMS_PER_KEY),
            "REGJOBS_RECONCILER": "false",
        },
        name="api-bounded",
        port=port,
        workers=1,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.stop_child("api-bounded")


@pytest.fixture
def parked_job(api: httpx.Client, restaurant_id: str) -> Iterator[str]:
    """A job created with `auto_start: false`: it stays pending, so its stream stays open."""
    response = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id,
            "auto_start": False,
            "execution_config": full_config(),
        },
    )
    assert response.status_code == 201, response.text
    job_id = str(response.json()["job_id"])
    yield job_id
    api.post(f"/api/registration-jobs/{job_id}/cancel")


@pytest.fixture
def many_files() -> Iterator[None]:
    """This test's own open-file limit, raised for its 1,100 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= IDLE + 500, f"the hard open-file limit ({hard}) is too low for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def sockets_held(group: int) -> int:
    """Open sockets of the processes of a process group (the API's supervisor and its
    uvicorn process)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[2]) != group:
                continue
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    count += os.readlink(fd).startswith("socket:")
    return count


def test_1100_idle_sockets_leave_the_api_answering_and_are_closed_at_the_head_deadline(
    stack: Stack, bounded: str, parked_job: str, many_files: None, dev_key: str
) -> None:
    port = int(bounded.rsplit(":", 1)[1])
    group = stack.children["api-bounded"].process.pid
    before = sockets_held(group)
    opened = time.monotonic()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(IDLE)]
    print(f"{IDLE} sockets opened in {time.monotonic() - opened:.2f} s")
    try:
        # The server has accepted them all (not left them in the listen backlog).
        wait_for(
            lambda: sockets_held(group) >= before + IDLE,
            timeout=HEAD_TIMEOUT,
            interval=0.05,
            what=f"the API process to hold the {IDLE} connections",
        )
        with httpx.Client(
            base_url=bounded, headers={"Authorization": f"Bearer {dev_key}"}, timeout=10
        ) as client:
            asked = time.monotonic()
            health = client.get("/healthz")
            health_took = time.monotonic() - asked
            asked = time.monotonic()
            job = client.get(f"/api/registration-jobs/{parked_job}")
            job_took = time.monotonic() - asked
        print(f"with {IDLE} idle sockets: /healthz {health_took * 1000:.0f} ms, "
              f"job read {job_took * 1000:.0f} ms")  # fmt: skip
        assert health.status_code == 200, health.text
        assert job.status_code == 200 and job.json()["id"] == parked_job
        assert health_took < 2 and job_took < 2
        assert time.monotonic() - opened < HEAD_TIMEOUT, "too slow to tell: the deadline passed"

        # Every idle socket is closed by the server, at the deadline, not before.
        selector = selectors.DefaultSelector()
        for sock in idle:
            selector.register(sock, selectors.EVENT_READ)
        closed_at: list[float] = []

        def all_closed() -> bool:
            for key, _ in selector.select(0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1024)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"the server sent {data!r} to an idle socket"
                selector.unregister(sock)
                closed_at.append(time.monotonic())
            return len(closed_at) == IDLE

        wait_for(all_closed, timeout=HEAD_TIMEOUT + 30, interval=0.05, what="the closes")
        selector.close()
        first, last = min(closed_at) - opened, max(closed_at) - opened
        print(f"closed by the server {first:.2f}-{last:.2f} s after the first was opened")
        assert first >= HEAD_TIMEOUT - 0.2
        wait_for(
            lambda: sockets_held(group) <= before + 5,
            timeout=10,
            what="the API process to let go of the sockets",
        )
    finally:
        for sock in idle:
            sock.close()


def test_one_stream_over_a_keys_cap_is_429_while_another_key_streams(
    stack: Stack, bounded: str, parked_job: str, dev_key: str
) -> None:
    url = f"/api/registration-jobs/{parked_job}/events"
    other_key = new_key(stack, get_settings().dev_organisation)  # the same organisation's

    def client(key: str) -> httpx.Client:
        return httpx.Client(
            base_url=bounded, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def first_event(lines: Iterator[str]) -> str:
        """The next event's type line. (The caller keeps `lines`: leaving a `for` over
        `iter_lines()` closes the generator, and with it httpx closes the connection.)"""
        for line in lines:
            if line.startswith("event:"):
                return line
        raise AssertionError("the stream ended without an event")

    def refused(client: httpx.Client) -> httpx.Response:
        """One more stream's answer, which must be a refusal (an accepted stream would
        never end: it is closed at once, failing the test, instead of read)."""
        with client.stream("GET", url) as response:
            assert response.status_code == 429, "accepted beyond the cap"
            response.read()
            return response

    with client(dev_key) as mine, client(other_key) as theirs, contextlib.ExitStack() as held:
        streams = [held.enter_context(mine.stream("GET", url)) for _ in range(STREAMS_PER_KEY)]
        readers = [response.iter_lines() for response in streams]
        for response, lines in zip(streams, readers, strict=True):
            assert response.status_code == 200
            assert first_event(lines).startswith("event: ")

        answer = refused(mine)
        assert answer.headers["Retry-After"] == "10"
        detail = answer.json()["detail"]
        assert f"has {STREAMS_PER_KEY} event streams open" in detail
        assert f"REGJOBS_SSE_STREAMS_PER_KEY={STREAMS_PER_KEY}" in detail

        with theirs.stream("GET", url) as other:
            assert other.status_code == 200
            other_lines = other.iter_lines()
            assert first_event(other_lines).startswith("event: ")
            refused(mine)  # still: the other key's stream is its own
            # ... and mine still stream (the refused ones closed none of them).
            for lines in readers:
                assert first_event(lines).startswith("event: ")

        # A stream the client closes gives its place back (the refused ones took none).
        readers.pop()
        streams.pop().close()

        def opens() -> bool:
            response = held.enter_context(mine.stream("GET", url))
            if response.status_code == 200:
                return True
            response.close()
            return False

        wait_for(opens, timeout=10, what="the closed stream's place to be free")
        refused(mine)
