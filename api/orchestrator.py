"""The API's only door to Prefect: start flow runs and read their state, cheaply.

`/progress` is polled every few seconds by every open tab, so a flow run's state is read
from Prefect at most once per `flow_state_ttl_seconds` per job, whatever the number of
callers; concurrent callers of one job wait for a single read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from api.translate import FlowRunSnapshot, RunState, TaskRunSnapshot
from regjobs.models import RegistrationJob
from regjobs.settings import Settings


class OrchestratorUnavailable(RuntimeError):
    """Prefect could not be reached or has no registration-job deployment."""


def _run_state(state: State | None) -> RunState:
    if state is None:
        return RunState(StateType.PENDING, "Pending")
    return RunState(
        state.type, state.name or state.type.value.title(), state.message, state.timestamp
    )


class Orchestrator:
    def __init__(self, settings: Settings, client: SyncPrefectClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._deployment_id: UUID | None = None
        self._cache: dict[str, tuple[float, FlowRunSnapshot | None]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        #: How many times Prefect was asked for a flow run's state (for benchmarks).
        self.state_reads = 0

    @property
    def client(self) -> SyncPrefectClient:
        if self._client is None:
            self._client = get_client(httpx_settings={"timeout": 10}, sync_client=True)
            self._client.__enter__()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    @contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        try:
            yield
        except ObjectNotFound as exc:
            raise OrchestratorUnavailable(
                f"Prefect has no deployment {self.settings.deployment!r}: run the set-up"
            ) from exc
        except Exception as exc:
            raise OrchestratorUnavailable(f"Prefect is unavailable: {exc}") from exc

    def deployment_id(self) -> UUID:
        if self._deployment_id is None:
            with self._unavailable_as_error():
                deployment = self.client.read_deployment_by_name(self.settings.deployment)
            self._deployment_id = deployment.id
        return self._deployment_id

    def healthy(self) -> tuple[bool, bool]:
        """Whether Prefect answers, and whether the deployment exists."""
        if self.client.api_healthcheck() is not None:
            return False, False
        try:
            self.deployment_id()
        except OrchestratorUnavailable:
            return True, False
        return True, True

    def start(self, job: RegistrationJob, organisation: str) -> str:
        """Create a flow run of the deployment for this job; the job id is its only parameter."""
        with self._unavailable_as_error():
            run: FlowRun = self.client.create_flow_run_from_deployment(
                self.deployment_id(),
                parameters={"job_id": job.id},
                name=f"{job.restaurant_name} · {job.id[:8]}",
                tags=[f"restaurant:{job.restaurant_id}", f"organisation:{organisation}"],
            )
        self._cache.pop(job.id, None)
        return str(run.id)

    def cancel(self, job_id: str, flow_run_id: str) -> None:
        """Ask Prefect to cancel the flow run: its runner stops the flow-run process."""
        with self._unavailable_as_error():
            self.client.set_flow_run_state(UUID(flow_run_id), State(type=StateType.CANCELLING))
        self._cache.pop(job_id, None)

    def mark_crashed(self, job_id: str, flow_run_id: str, message: str) -> None:
        """Tell Prefect a run is dead (so the UI agrees and it can be retried)."""
        with contextlib.suppress(Exception):
            self.client.set_flow_run_state(
                UUID(flow_run_id), State(type=StateType.CRASHED, message=message), force=True
            )
        self._cache.pop(job_id, None)

    def snapshot(self, job_id: str, flow_run_id: str | None) -> FlowRunSnapshot | None:
        """The flow run's state and its task runs, at most `flow_state_ttl_seconds` old."""
        if flow_run_id is None:
            return None
        ttl = self.settings.flow_state_ttl_seconds
        cached = self._cache.get(job_id)
        if cached and time.monotonic() - cached[0] < ttl and _same_run(cached[1], flow_run_id):
            return cached[1]
        with self._lock_for(job_id):
            cached = self._cache.get(job_id)
            if cached and time.monotonic() - cached[0] < ttl and _same_run(cached[1], flow_run_id):
                return cached[1]
            snap = self._read(flow_run_id)
            self._cache[job_id] = (time.monotonic(), snap)
            return snap

    def _lock_for(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def _read(self, flow_run_id: str) -> FlowRunSnapshot | None:
        self.state_reads += 1
        try:
            # No retries here: while Prefect is down, answer from the ledger at once rather
            # than hold every poller for the client's retry backoff.
            with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
                run = self.client.read_flow_run(UUID(flow_run_id))
                task_runs = self.client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
        except ObjectNotFound:
            return None
        except Exception:
            # Prefect is briefly unreachable: answer from the ledger alone rather than fail.
            return None
        return FlowRunSnapshot(
            id=str(run.id),
            state=_run_state(run.state),
            task_runs={
                str(t.id): TaskRunSnapshot(str(t.id), _run_state(t.state), t.run_count)
                for t in task_runs
            },
        )


def _same_run(snap: FlowRunSnapshot | None, flow_run_id: str) -> bool:
    return snap is None or snap.id == flow_run_id
