"""The Prefect door's own rules, with Prefect's client replaced by a recorder (the real
thing: every end-to-end test)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from prefect.client.orchestration import SyncPrefectClient

from api.orchestrator import Orchestrator
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
