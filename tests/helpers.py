"""Helpers for tests that drive the real system over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact, StateType, TaskRun

from deployments.pids import alive, processes_with_env
from regjobs.catalogue import STEP_IDS, STEPS

# The stand-in's control calls, for the tests that import them from here.
from standin.client import effects as effects
from standin.client import fault as fault
from standin.client import release_held as release_held

if TYPE_CHECKING:
    from pytest import MarkDecorator

    from deployments.stack import Stack

FINAL_JOB = {"completed", "failed", "cancelled"}


class JobWatch:
    """What a poller saw of one job: every status each step was seen in, and the end."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.job: dict[str, Any] = {}

    def saw(self, step_id: str, status: str) -> bool:
        return status in self.seen.get(step_id, set())


#: Set (as `.ci/run` does) to run the soaks in their bounded form: fewer rounds of the same
#: trial, so CI stays within its time; unset, they run in full.
BOUNDED = os.environ.get("REGJOBS_TEST_BOUNDED", "") not in ("", "0")


def soak(full: int, bounded: int) -> int:
    """How many trials a soak runs: `full`, or `bounded` in CI's bounded form."""
    return bounded if BOUNDED else full


def wait_for(
    check: Callable[[], Any], *, timeout: float = 60, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until `check` returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def latest_artifact(key: str, shows: str | float = "", *, timeout: float = 15) -> Artifact:
    """The newest version of the artifact `key`, once its data shows `shows`: a job's
    artifacts are written just after it ends (and at most every REGJOBS_ARTIFACT_SECONDS
    before), so the API may answer its final status a moment before they do."""

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    seen: list[Any] = []

    def read() -> Artifact | None:
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
        newest = max(found, key=lambda a: a.created or 0) if found else None
        seen[:] = [(a.created, a.data) for a in found]
        if newest is None:
            return None
        if isinstance(shows, str):
            return newest if shows in str(newest.data) else None
        return newest if float(str(newest.data)) == shows else None

    try:
        artifact: Artifact = wait_for(read, timeout=timeout, what=f"{key!r} to show {shows!r}")
    except AssertionError as missing:
        raise AssertionError(f"{missing}; its versions: {seen}") from None
    return artifact


def watch_job(api: httpx.Client, job_id: str, *, timeout: float = 90) -> JobWatch:
    """Poll /progress until the job ends, recording every step status seen on the way."""
    watch = JobWatch()

    def ended() -> bool:
        response = api.get(f"/api/registration-jobs/{job_id}/progress")
        response.raise_for_status()
        progress = response.json()
        for step_id, status in progress["step_statuses"].items():
            watch.seen.setdefault(step_id, set()).add(status)
        return bool(progress["status"] in FINAL_JOB)

    wait_for(ended, timeout=timeout, interval=0.1, what=f"job {job_id} to end")
    watch.job = api.get(f"/api/registration-jobs/{job_id}").json()
    return watch


def steps_by_id(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in job["steps"]}


def full_config(**overrides: Any) -> dict[str, Any]:
    """The example config with every optional step on, sections overridden as given."""
    from deployments.demo import DEMO_CONFIG

    config = {k: dict(v) if isinstance(v, dict) else v for k, v in DEMO_CONFIG.items()}
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def own_accounts(tag: str) -> dict[str, dict[str, Any]]:
    """Config sections that give a job its own account, restaurant and onboarding user, so
    jobs at once count their own effects (`create(api, rid, **own_accounts(rid))`)."""
    return {
        "account": {"email": f"{tag}@example.com"},
        "restaurant": {"name": f"Restaurant {tag}"},
        "onboarding": {"user_email": f"owner-{tag}@example.com"},
    }


def new_key(stack: Stack, organisation: str) -> str:
    """A new API key of an organisation (made if new), through the key command."""
    out = stack.run(
        [sys.executable, "-m", "regjobs.auth", "create", "--organisation", organisation,
         "--label", "test"]
    )  # fmt: skip
    return out.strip().splitlines()[-1]


@dataclass
class Sse:
    """What a Server-Sent Events stream delivered: its events, its comment lines, and
    whether the server ended it (rather than the reader stopping)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended_by_server: bool = False

    @property
    def ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events]


def read_events(
    api: httpx.Client,
    job_id: str,
    *,
    last_event_id: int | None = None,
    until: Callable[[Sse], bool] = lambda _: False,
    base_url: str | None = None,
) -> Sse:
    """Read a job's event stream over HTTP, as a browser's EventSource would, until the
    server ends it or `until` says stop. Each event: id, event, data (parsed JSON)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    url = f"{base_url or ''}/api/registration-jobs/{job_id}/events"
    seen = Sse()
    fields: dict[str, str] = {}
    with api.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                seen.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                seen.events.append({**fields, "data": json.loads(fields["data"])})
                fields = {}
            if until(seen):
                return seen
        seen.ended_by_server = True
    return seen


# ------------------------------------------------ jobs, the stand-in and processes


#: A job without its menu (`full_config(menu=NO_MENU)`): the four browser steps of a
#: restaurant's settings and the API steps, a shorter job where the menu is not the point.
NO_MENU = {
    "import": False,
    "upload_images": False,
    "add_option_sets": False,
    "add_item_tags": False,
}


def create(api: httpx.Client, restaurant_id: str, **sections: Any) -> str:
    response = api.post(
        "/api/registration-jobs",
        json={"restaurant_id": restaurant_id, "execution_config": full_config(**sections)},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert [s["step_id"] for s in body["steps"]] == list(STEP_IDS)
    return str(body["job_id"])


def calls_of(standin: httpx.Client, step: str) -> list[dict[str, Any]]:
    return [c for c in standin.get("/_control/calls").json() if c["step"] == step]


def flow_run_state(flow_run_id: str) -> tuple[StateType, int]:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    assert run.state is not None
    return run.state.type, run.run_count


def progress(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/api/registration-jobs/{job_id}/progress")
    response.raise_for_status()
    return dict(response.json())


def wait_step(api: httpx.Client, job_id: str, step: str, status: str) -> None:
    wait_for(
        lambda: progress(api, job_id)["step_statuses"][step] == status,
        timeout=60,
        what=f"{step} to be {status}",
    )


def reconciler_cycling(api: httpx.Client, *, cycles: int = 2, timeout: float = 30) -> None:
    """Wait until the API process's reconciler leads and has run `cycles` more cycles: a
    test about what the reconciler notices starts once it is acting (an earlier test may
    have just handed the role over or restarted the process)."""

    def health() -> dict[str, Any]:
        return dict(api.get("/healthz").json())

    wait_for(lambda: health()["reconciler"] == "leader", timeout=timeout, what="a leader")
    start = health()["reconciler_cycles"]
    wait_for(
        lambda: health()["reconciler_cycles"] >= start + cycles,
        timeout=timeout,
        what=f"the reconciler to run {cycles} cycles",
    )


def hold_step(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str, step: str, seconds: float
) -> str:
    """A new job with `step` running: the stand-in holds the step's first call `seconds`."""
    fault(standin, step=step, mode="slow", seconds=seconds, times=1)
    job_id = create(api, restaurant_id)
    wait_step(api, job_id, step, "running")
    return job_id


def delete_flow_run_now(flow_run_id: str | UUID, *, timeout: float = 10) -> None:
    """Delete a flow run through Prefect's API without its client's backoff: Prefect on
    SQLite answers 503 when a write meets another writer, and the client then waits 2, 4,
    8 s... (a test that holds a step ~15 s saw the delete land after the step gave up).
    A 503 is tried again at once instead."""
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    def delete() -> bool:
        with (
            temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}),
            get_client(sync_client=True) as client,
        ):
            try:
                client.delete_flow_run(UUID(str(flow_run_id)))
            except httpx.HTTPStatusError as error:
                if error.response.status_code == 503:
                    return False
                raise
        return True

    wait_for(delete, timeout=timeout, interval=0.05, what=f"Prefect to delete {flow_run_id}")


def end_leftover_jobs(*, timeout: float = 90) -> list[str]:
    """Cancel every job an earlier test started and left active, and wait until none of
    their flow-run processes is alive, so none calls the stand-in during the next test (a
    call already in flight then counts nothing after the stand-in's reset). The ids of the
    jobs ended."""
    import contextlib

    from sqlalchemy import select

    from regjobs import ledger
    from regjobs.catalogue import ACTIVE_JOB_STATUSES
    from regjobs.db import read_session, transaction
    from regjobs.models import RegistrationJob

    with read_session() as session:
        leftovers = session.execute(
            select(RegistrationJob.id, RegistrationJob.flow_run_ids).where(
                RegistrationJob.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                RegistrationJob.run_generation > 0,  # not a job parked with auto_start false
            )
        ).all()
    for job_id, _runs in leftovers:
        with contextlib.suppress(ledger.Conflict):
            transaction(ledger.cancel_job, job_id=job_id)
    runs = [run for _job, job_runs in leftovers for run in job_runs or ()]
    wait_for(
        lambda: not any(flow_run_pids(run) for run in runs),
        timeout=timeout,
        interval=0.2,
        what=f"the flow runs of jobs earlier tests left running to end: {runs}",
    )
    return [job_id for job_id, _ in leftovers]


def flow_run_logs(flow_run_id: str | UUID, *, to_end: bool = True) -> list[Any]:
    """The log lines Prefect stored for a flow run. Logs reach Prefect in batches (every 2 s),
    some after the run's final state: with `to_end`, wait until no process of the run is left
    (each sends what it holds before it exits) and the engine's last line ("Finished in state
    ...") is there, so no later line is missed. (A run suspended waiting for a person has two
    processes: the first one's "Finished in state Suspended(...)" comes long before the
    resumed one's lines.)"""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run_id = UUID(str(flow_run_id))

    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            return list(client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))

    def to_its_end() -> list[Any] | None:
        if flow_run_pids(str(run_id)):
            return None
        found = read()
        finished = (
            log.task_run_id is None and log.message.startswith("Finished in state") for log in found
        )
        return found if any(finished) else None

    if not to_end:
        return read()
    return list(wait_for(to_its_end, timeout=30, what=f"the logs of flow run {run_id} to its end"))


def flow_run_pids(flow_run_id: str) -> list[int]:
    """Live processes whose environment names this flow run (the flow-run process)."""
    return [pid for pid in processes_with_env("PREFECT__FLOW_RUN_ID", flow_run_id) if alive(pid)]


def kill_worker(stack: Stack, flow_run_id: str | None) -> None:
    """SIGKILL the worker and the flow run's process, as when their machine dies: no process
    is left to report anything."""
    victims = flow_run_pids(flow_run_id) if flow_run_id else []
    os.killpg(stack.children["worker"].process.pid, signal.SIGKILL)
    kill_all(victims)
    stack.stop_child("worker")


def kill_all(pids: list[int]) -> None:
    """SIGKILL each process still there (one in the worker's group went with it)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------ in-process servers and raw sockets


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free loopback port in this process; its URL."""
    import threading

    import uvicorn

    from deployments.stack import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def api_in_thread(**env: str) -> Iterator[str]:
    """The API app served in this process with these settings and its reconciler off (no
    Prefect here); its URL. The settings are as before once it ends."""
    import pytest

    from regjobs.settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGJOBS_RECONCILER", "false")
        for name, value in env.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        from api.main import create_app

        try:
            with serve_in_thread(create_app()) as base:
                yield base
        finally:
            get_settings.cache_clear()


@dataclass
class BigUpload:
    """How a large upload over a raw socket went."""

    #: The HTTP status of the answer, if one came.
    status: int | None
    #: The answer as received (head and body).
    answer: bytes
    #: Body bytes sent before the answer came (or the server closed the connection).
    sent: int
    #: Whether sending stopped because the server had closed the connection.
    closed_by_server: bool


def upload(
    base_url: str,
    path: str,
    *,
    total: int,
    chunked: bool = False,
    headers: dict[str, str] | None = None,
    piece: int = 64 * 1024,
) -> BigUpload:
    """POST a body of `total` bytes over a raw socket, a piece at a time, looking for an
    answer before each piece: stops as soon as the server answers or closes."""
    import select
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30)
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    answer = b""
    sent = 0
    closed = False

    def answered() -> bool:
        nonlocal answer, closed
        readable, _, _ = select.select([sock], [], [], 0.02)
        if not readable:
            return False
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            closed = True
            return True
        if not data:
            closed = True
        answer += data
        return True

    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while sent < total and not answered():
            size = min(piece, total - sent)
            data = b" " * size
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (size, data) if chunked else data)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += size
        # Whatever else of the answer is on its way, until the server closes (every caller
        # expects a close; a close with body unread comes as a reset, below).
        sock.settimeout(30)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                # Closed with part of the body unread: the kernel answers with a reset.
                closed = True
                break
            except TimeoutError:
                break
            if not data:
                closed = True
                break
            answer += data
    finally:
        sock.close()
    status = None
    if answer.startswith(b"HTTP/1.1 "):
        status = int(answer[9:12])
    return BigUpload(status, answer, sent, closed)


@dataclass
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(
    base_url: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
) -> RawAnswer:
    """One request over its own socket with its headers exactly as listed, a header given
    twice sent on two lines (as no ordinary client sends it), and its answer."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value.encode("latin-1"))
        if body or method in ("POST", "PUT"):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return RawAnswer(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


# ------------------------------------------------ secrets audits


#: The colour Playwright paints masked elements with in a screenshot (its default).
MASK_COLOUR = (255, 0, 255)


def png_colour_count(data: bytes, colour: tuple[int, int, int]) -> int:
    """How many pixels of an 8-bit RGB or RGBA PNG (as Chromium writes them) are `colour`."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, b""
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    count = 0
    for row in range(height):
        start = row * (stride + 1)
        method, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if method == 1:
                line[i] = (line[i] + left) & 0xFF
            elif method == 2:
                line[i] = (line[i] + up) & 0xFF
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif method == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        count += sum(
            1 for i in range(0, stride, channels) if (line[i], line[i + 1], line[i + 2]) == colour
        )
        previous = line
    return count


def secrets_haystacks(
    api: httpx.Client, stack: Stack, db: Any, job_id: str, *extra_responses: httpx.Response
) -> dict[str, bytes]:
    """Everywhere a secret of a job could end up, by name: every API answer about the job
    (its screenshots and its status page included), every column of every table of the job
    database, Prefect's view (flow and task runs, their states and state history, logs,
    artifacts, run inputs) and every file of its database, and every process log."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from sqlalchemy import inspect, text

    job = api.get(f"/api/registration-jobs/{job_id}").json()
    haystacks: dict[str, bytes] = {f"answer {n}": r.content for n, r in enumerate(extra_responses)}
    for path in (
        f"/api/registration-jobs/{job_id}",
        f"/api/registration-jobs/{job_id}/progress",
        f"/api/registration-jobs?restaurant_id={job['restaurant_id']}",
        f"/api/restaurants/{job['restaurant_id']}/registration-jobs/active",
    ):
        haystacks[f"GET {path}"] = api.get(path).content
    haystacks["events"] = json.dumps(read_events(api, job_id).events).encode()
    # The job status page a view token opens, its script and its style sheet.
    made = api.post(f"/api/registration-jobs/{job_id}/view-token")
    assert made.status_code == 201, made.text
    page = f"{stack.config.api_url}/jobs/{made.json()['url'].split('/jobs/', 1)[1]}"
    haystacks["status page"] = httpx.get(page).content
    for asset in ("job.js", "job.css"):
        haystacks[f"status page {asset}"] = httpx.get(
            f"{stack.config.api_url}/jobs/assets/{asset}"
        ).content
    for step in job["steps"]:
        for shot in step.get("evidence") or ():
            haystacks[f"screenshot {shot['evidence_id']}"] = httpx.get(shot["url"]).content

    with db.connect() as connection:
        for table in inspect(db).get_table_names():
            rows = connection.execute(text(f'SELECT * FROM "{table}"')).all()
            haystacks[f"table {table}"] = repr(rows).encode()

    run_ids = [UUID(r) for r in job["flow_run_ids"]] if job.get("flow_run_ids") else []
    if not run_ids and job.get("flow_run_id"):
        run_ids = [UUID(job["flow_run_id"])]
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            run = client.read_flow_run(run_id)
            haystacks[f"flow run {run_id}"] = run.model_dump_json().encode()
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            for task_run in task_runs:
                haystacks[f"task run {task_run.id}"] = task_run.model_dump_json().encode()
                states = client.read_task_run_states(task_run.id)
                haystacks[f"task run {task_run.id} states"] = "\n".join(
                    s.model_dump_json() for s in states
                ).encode()
            ended = run.state is not None and run.state.type in (
                StateType.COMPLETED,
                StateType.FAILED,
            )
            logs = flow_run_logs(run_id, to_end=ended)
            haystacks[f"Prefect logs {run_id}"] = "\n".join(log.message for log in logs).encode()
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            # Run inputs (a suspended run's schema, description and the input it was
            # resumed with): Prefect keeps them in plain text, in `flow_run_input`.
            inputs = client.filter_flow_run_input(
                flow_run_id=run_id, key_prefix="", limit=1000, exclude_keys=set()
            )
            haystacks[f"flow run inputs {run_id}"] = "\n".join(
                f"{i.key}={i.value}" for i in inputs
            ).encode()
            haystacks[f"artifacts {run_id}"] = repr(
                [(a.key, a.data, a.description) for a in artifacts]
            ).encode()
    for file in (stack.config.state_dir / "prefect").rglob("*"):
        if file.is_file():
            haystacks[f"Prefect file {file.relative_to(stack.config.state_dir)}"] = (
                file.read_bytes()
            )
    for file in stack.logs_dir.glob("*.log"):
        haystacks[f"log {file.name}"] = file.read_bytes()
    return haystacks


def _forms(value: str) -> set[bytes]:
    """`value` as given and JSON-, HTML- and URL-escaped (`regjobs.secrets.forms`), as bytes."""
    from regjobs.secrets import forms

    return {text.encode() for text in forms(value) if text}


def occurrences(
    secret: str, haystacks: dict[str, bytes], public: Iterable[str] = ()
) -> dict[str, int]:
    """Where `secret` appears in the clear (as given, JSON-, HTML- or URL-escaped), and how
    often. An occurrence that lies inside an occurrence of one of `public` (compared without
    regard to ASCII case, as given, escaped or in the slug form a subdomain is derived with)
    is left out: those are the job's public values, which the user typed and the job shows
    to anyone who can read it, so a password equal to the restaurant's name is "found"
    wherever the name is, and one that shares "harbour-" with it wherever the subdomain is."""
    from regjobs.config import derive_subdomain

    forms = _forms(secret)
    needles: set[bytes] = set()
    for value in public:
        if value:
            needles |= {form.lower() for form in _forms(value)}
            needles.add(derive_subdomain(value).encode())
    needles.discard(b"")
    found = {}
    for name, data in haystacks.items():
        spans = [(start, start + len(form)) for form in forms for start in _finds(form, data)]
        if spans and needles:
            lower = data.lower()
            inside = [
                (start, start + len(needle))
                for needle in needles
                for start in _finds(needle, lower)
            ]
            spans = [(s, e) for s, e in spans if not any(ps <= s and e <= pe for ps, pe in inside)]
        if spans:
            found[name] = len(spans)
    return found


def _finds(needle: bytes, data: bytes) -> Iterator[int]:
    """Every start of `needle` in `data`, overlapping ones included."""
    start = data.find(needle)
    while start != -1:
        yield start
        start = data.find(needle, start + 1)


class StepModes:
    """The step mode of the test system's worker and its flow runs: the stack's own
    (`endpoints`, the tests' settings) unless a test asks for `direct`. The worker is
    restarted only when the mode changes, so tests that need either mode may run in any
    order (the `step_modes` fixture)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.mode = "endpoints"

    def use(self, mode: str) -> None:
        if mode == self.mode:
            return
        self.stack.stop_child("worker")
        self.stack.start_worker(env=None if mode == "endpoints" else {"REGJOBS_STEP_MODE": mode})
        self.mode = mode


# ------------------------------------------------------------- waiting for a person


def wait_for_person(api: httpx.Client, job_id: str, *, timeout: float = 90) -> dict[str, Any]:
    """The job once a step waits for a person and its flow run is Suspended in Prefect
    (failing early, with the job, if it ends instead)."""

    def waiting() -> dict[str, Any] | None:
        job = api.get(f"/api/registration-jobs/{job_id}").json()
        assert job["status"] not in FINAL_JOB, job
        if job["action_required"] and job["flow_run_id"]:
            state, _ = flow_run_state(job["flow_run_id"])
            if state is StateType.PAUSED:
                # Read again: the run suspends only once its other steps have ended, which
                # the job read before Prefect's state may not have shown yet.
                return dict(api.get(f"/api/registration-jobs/{job_id}").json())
        return None

    return dict(wait_for(waiting, timeout=timeout, what=f"job {job_id} to wait for a person"))


def give_input(api: httpx.Client, job_id: str, **sections: Any) -> httpx.Response:
    """`POST .../input` with these config sections."""
    return api.post(f"/api/registration-jobs/{job_id}/input", json={"execution_config": sections})


def held_by(flow_run_id: str, job_id: str) -> dict[str, Any]:
    """What a job's flow run holds now: its processes (the flow-run process, Chromium: any
    live process whose environment names the run), its browser slots in the ledger."""
    from deployments.pids import chromium_processes
    from regjobs.db import read_session
    from regjobs.models import RegistrationJobStep

    pids = flow_run_pids(flow_run_id)
    with read_session() as session:
        slots = [
            r.step_id
            for r in session.query(RegistrationJobStep).filter_by(job_id=job_id)
            if r.slot_since is not None
        ]
    return {"processes": pids, "chromium": chromium_processes(pids), "slots": slots}


def browser_slots_in_use() -> int:
    """The browser slots Prefect counts taken (its global concurrency limit)."""
    from regjobs.settings import get_settings

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(get_settings().browser_limit_name)
    return int(limit.active_slots)


def job_events(job_id: str) -> set[tuple[str, str | None]]:
    """(event, step) of the job's `regjobs.*` events Prefect has stored."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(prefix=["regjobs."]),
        resource=EventResourceFilter(id_prefix=[f"regjobs.job.{job_id}"]),
    )
    return {(e.event, e.resource.get("regjobs.step")) for e in stored_events(wanted)}


def stored_events(wanted: Any) -> list[Any]:
    """Every event Prefect has stored that the filter (an `EventFilter`) matches."""
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=wanted, limit=50)
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(str(page.next_page))
            events += page.events
    return events


def task_run_events(flow_run_id: str, state: str) -> list[str]:
    """The task-run names of Prefect's own `prefect.task-run.<state>` events of a flow run
    (what an automation on a step's start or end matches)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    wanted = EventFilter(
        event=EventNameFilter(name=[f"prefect.task-run.{state}"]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    return [str(e.resource.get("prefect.resource.name")) for e in stored_events(wanted)]


_LABELS = {s.label: s.id for s in STEPS}


def step_of(name: str) -> str:
    """The step a task run of Prefect stands for. Prefect creates a task run named
    `<task name>-<3 hex>` and renames it to its `task_run_name` as it starts; a marker run
    that ends at once was seen to keep the first name ('Option sets-6fb')."""
    return _LABELS[name] if name in _LABELS else _LABELS[re.sub(r"-[0-9a-f]{3}$", "", name)]


def task_runs(
    flow_run_id: str, steps: Iterable[str] = STEP_IDS, *, timeout: float = 30
) -> dict[str, TaskRun]:
    """The flow run's task runs by step id (their names are the steps' labels), once each of
    `steps` has one and every one is in a final state: Prefect records task runs and their
    states from their events, a moment after the flow run may have ended (CI read a step's
    task run `Running`, and another's final message empty, after their jobs had ended)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    wanted = set(steps)

    def read() -> dict[str, TaskRun] | None:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
        by_step = {step_of(r.name): r for r in runs}
        assert len(by_step) == len(runs), [r.name for r in runs]
        ended = all(r.state is not None and r.state.is_final() for r in runs)
        return by_step if wanted <= by_step.keys() and ended else None

    found: dict[str, TaskRun] = wait_for(
        read, timeout=timeout, what=f"the task runs of {sorted(wanted)}, in a final state"
    )
    return found


def forget_settings() -> None:
    """Forget this process's cached settings (and what was made from them)."""
    from regjobs.settings import get_settings
    from tasks.steps import step_task

    get_settings.cache_clear()
    # Each step's task carries the settings' retries and timeout.
    step_task.cache_clear()


def postgresql_only(why: str) -> MarkDecorator:
    """A mark that skips a test unless REGJOBS_TEST_DATABASE=postgresql (CI's PostgreSQL
    pass runs it); `why`: what SQLite lacks for it."""
    import pytest

    return pytest.mark.skipif(
        os.environ.get("REGJOBS_TEST_DATABASE", "sqlite") != "postgresql",
        reason=f"{why}; runs in the PostgreSQL pass of .ci/run",
    )


class environment:
    """Set environment variables (and forget cached settings) until the block ends."""

    def __init__(self, env: dict[str, str] | Any) -> None:
        self.env = env

    def __enter__(self) -> None:
        self.saved = dict(os.environ)
        os.environ.update(self.env)
        forget_settings()

    def __exit__(self, *exc: object) -> None:
        os.environ.clear()
        os.environ.update(self.saved)
        forget_settings()


@contextmanager
def scratch_job_database(folder: Path, pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated job database until the block ends, its URL: SQLite in `folder`, or
    a scratch PostgreSQL database with REGJOBS_TEST_DATABASE=postgresql (CI's PostgreSQL
    pass), dropped after."""
    from regjobs.db import engine_for, migrate, scratch_postgres_database

    with contextlib.ExitStack() as stack:
        if os.environ.get("REGJOBS_TEST_DATABASE", "sqlite") == "postgresql":
            url = stack.enter_context(scratch_postgres_database(pg_admin_url, "regjobs_own"))
        else:
            url = f"sqlite:///{folder / 'regjobs.db'}"
        migrate(url)
        yield url
        engine_for(url).dispose()


@contextmanager
def own_job_database(state: Path, pg_admin_url: str) -> Iterator[Path]:
    """A migrated job database and state folder (`state`) of their own for this process
    until the block ends (`scratch_job_database`). No reconciler watches it, as the session's
    test system's watches the session's database."""
    with (
        scratch_job_database(state, pg_admin_url) as url,
        environment({"DATABASE_URL": url, "REGJOBS_STATE_DIR": str(state)}),
    ):
        yield state


def ledger_job(
    *, auto_start: bool = True, restaurant_id: str | None = None, **sections: Any
) -> str:
    """A job made in the ledger itself (no API, no Prefect), of an organisation of its own:
    its id. `auto_start`: with its first run request; `sections` go over `full_config()`."""
    import uuid

    from regjobs import ledger
    from regjobs.config import ExecutionConfig
    from regjobs.db import transaction
    from regjobs.models import Organisation

    def make(*, session: Any) -> str:
        organisation = Organisation(name=f"org-{uuid.uuid4().hex[:12]}")
        session.add(organisation)
        session.flush()
        job = ledger.create_job(
            session=session,
            organisation_id=organisation.id,
            restaurant_id=restaurant_id or f"r-{uuid.uuid4().hex[:8]}",
            config=ExecutionConfig.model_validate(full_config(**sections)),
            auto_start=auto_start,
        )
        return str(job.id)

    return transaction(make)


def become_nobody() -> None:
    """In a forked child: drop to the `nobody` user, groups and all."""
    os.setgroups([])
    nobody = pwd.getpwnam("nobody")
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def as_nobody(action: Callable[[], str]) -> str:
    """What `action` answers when run by the `nobody` user, in a forked child."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: becomes nobody, reports, exits without pytest's clean-up
        try:
            os.close(reader)
            become_nobody()
            try:
                answer = action()
            except OSError as error:
                answer = f"{type(error).__name__}: {error.strerror}"
            os.write(writer, answer.encode())
        finally:
            os._exit(0)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 4096):
        chunks.append(chunk)
    os.close(reader)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()
