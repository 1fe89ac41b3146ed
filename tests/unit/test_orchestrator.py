"""The Prefect door's own rules, with Prefect's client replaced by a recorder (the real
thing: every end-to-end test)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import PrefectHTTPStatusError

from api.orchestrator import (
    BUSY_RETRIES,
    Orchestrator,
    OrchestratorUnavailable,
    PrefectBusy,
    _refuse_busy,
)
from regjobs.ledger import Dispatch
from regjobs.settings import Settings


class Recorder:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.states: list[str] = []

    def read_flow_runs(self, *, flow_run_filter: Any, limit: int) -> list[Any]:
        self.asked.append([str(i) for i in flow_run_filter.id.any_])
        return []

    def set_flow_run_state(self, flow_run_id: Any, state: Any, force: bool) -> None:
        self.states.append(str(flow_run_id))


def test_an_id_that_is_no_uuid_is_no_flow_run_and_breaks_nothing() -> None:
    client = Recorder()
    orchestrator = Orchestrator(Settings(), cast(SyncPrefectClient, client))
    real = str(uuid.uuid4())
    assert orchestrator.read_flow_runs(["flow-run-1", real, real]) == {}
    assert client.asked == [[real]]
    orchestrator.cancel("flow-run-1")
    orchestrator.mark_crashed("flow-run-1", "lost")
    assert client.states == []
    orchestrator.cancel(real)
    assert client.states == [real]


def _answer(status: int) -> Exception:
    """What Prefect's client raises on an answer `status`, with the orchestrator's
    response hook in place (test_a_503_is_raised_as_it_arrives shows the hook)."""
    request = httpx.Request("POST", "http://prefect.test/api/deployments/x/create_flow_run")
    response = httpx.Response(status, request=request, json={"exception_message": "locked"})
    if status == 503:
        with pytest.raises(PrefectBusy) as raised:
            _refuse_busy(response)
        return raised.value
    return PrefectHTTPStatusError(f"{status}", request=request, response=response)


class Busy:
    """Prefect's client whose writes are answered with `answers` in turn (a status to
    raise, or None for success)."""

    def __init__(self, *answers: int | None) -> None:
        self.answers = list(answers)
        self.writes = 0
        self.created: dict[str, Any] = {}

    def read_deployment_by_name(self, name: str) -> Any:
        return SimpleNamespace(id=uuid.uuid4())

    def _write(self) -> Any:
        self.writes += 1
        status = self.answers.pop(0)
        if status is not None:
            raise _answer(status)
        return SimpleNamespace(id=uuid.UUID(int=self.writes))

    def create_flow_run_from_deployment(self, *args: Any, **kwargs: Any) -> Any:
        self.created = kwargs
        made = self._write()
        # Prefect puts a run without a queue on the deployment's.
        made.work_queue_name = kwargs.get("work_queue_name") or "release-deployed-last"
        return made

    def set_flow_run_state(self, *args: Any, **kwargs: Any) -> Any:
        return self._write()


RUN = Dispatch(1, "job-1", 1, "rest-1", "Demo Pizza", "demo")


def test_a_write_prefect_answers_503_is_made_again_until_it_takes() -> None:
    """Prefect's SQLite server answers 503 ("database is locked") while another write holds
    its lock: busy, not down. The dispatch is made again and its run recorded."""
    client = Busy(503, 503, None)
    orchestrator = Orchestrator(Settings(), cast(SyncPrefectClient, client))
    assert orchestrator.create_flow_run(RUN).id == str(uuid.UUID(int=3))
    assert client.writes == 3
    cancel = Busy(503, None)
    Orchestrator(Settings(), cast(SyncPrefectClient, cancel)).cancel(str(uuid.uuid4()))
    assert cancel.writes == 2


def test_a_pinned_job_s_run_goes_to_its_release_s_queue_tagged_with_it() -> None:
    """A job not yet pinned runs on the deployment's queue (the release deployed last); a
    pinned one on its release's queue, which only that release's workers poll."""
    client = Busy(None, None, None)
    orchestrator = Orchestrator(Settings(), cast(SyncPrefectClient, client))
    made = orchestrator.create_flow_run(RUN)
    assert made.work_queue == "release-deployed-last"
    assert client.created["work_queue_name"] is None
    assert not [t for t in client.created["tags"] if t.startswith("release:")]
    pinned = Dispatch(2, "job-2", 1, "rest-2", "Demo Pizza", "demo", None, "0123abcd4567")
    made = orchestrator.create_flow_run(pinned)
    assert made.work_queue == client.created["work_queue_name"] == "release-0123abcd4567"
    assert "release:0123abcd4567" in client.created["tags"]
    implicit = Dispatch(3, "job-3", 1, "rest-3", "Demo Pizza", "demo", None, "dev")
    assert orchestrator.create_flow_run(implicit).work_queue == "default"


def test_prefect_busy_past_the_retries_or_failing_otherwise_is_unavailable() -> None:
    busy = Busy(*[503] * (BUSY_RETRIES + 1))
    with pytest.raises(OrchestratorUnavailable, match="503"):
        Orchestrator(Settings(), cast(SyncPrefectClient, busy)).create_flow_run(RUN)
    assert busy.writes == BUSY_RETRIES + 1
    refused = Busy(400, None)
    with pytest.raises(OrchestratorUnavailable, match="400"):
        Orchestrator(Settings(), cast(SyncPrefectClient, refused)).create_flow_run(RUN)
    assert refused.writes == 1


def test_a_503_is_raised_as_it_arrives() -> None:
    """Prefect's own client, against a server that answers 503 to everything: the
    orchestrator's client raises PrefectBusy at once, where Prefect's client alone sleeps
    its 2-s backoff first even with its retries off."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    calls: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503, json={"exception_message": "database is locked"})

    settings = {PREFECT_API_URL: "http://prefect.test/api"}
    with temporary_settings(updates=settings), Orchestrator.single_tries():
        client = get_client(
            httpx_settings={
                "transport": httpx.MockTransport(busy),
                "event_hooks": {"response": [_refuse_busy]},
            },
            sync_client=True,
        )
        orchestrator = Orchestrator(Settings(), client)
        started = time.monotonic()
        with pytest.raises(PrefectBusy, match="busy"):
            orchestrator.cancel(str(uuid.uuid4()))
        elapsed = time.monotonic() - started
    assert len(calls) == BUSY_RETRIES + 1
    # Its own pauses only (0.1 + 0.2 + 0.4 s), no 2-s backoff of the client's.
    assert elapsed < 4, elapsed  # (four 2-s backoffs without the hook)
