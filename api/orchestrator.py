"""The only door to Prefect, used by the reconciler and its dispatcher alone: no request
handler calls Prefect.

Every call is made once, in `single_tries()` (the client's own retries are off): the
reconciler calls again on its next cycle, and a Prefect that does not answer must not hold
it for the client's backoff. The exception: a write Prefect answers 503 (busy) is made again
at once, a few times (`BUSY_RETRIES`), rather than taken for Prefect being down.

A 503 is seen as it arrives (`_refuse_busy`, an httpx response hook): Prefect's client, even
with its retries off, sleeps its backoff (2 s) after a 503 before it returns it
(`_send_with_retry` backs off before it counts the tries left), which would hold the
dispatcher 2 s per busy answer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Scheduled

from regjobs import translate
from regjobs.ledger.outbox import Dispatch
from regjobs.settings import Settings
from regjobs.translate import FlowRunSnapshot

#: Flow runs read per call (Prefect's API pages at 200).
BATCH = 200
#: A write Prefect answers 503 is made again this many times, 0.1, 0.2 and 0.4 s later.
#: Prefect's server on SQLite answers 503 when a write meets another's lock ("database is
#: locked"), and is busy, not down; each write here is safe to repeat (a flow run's
#: idempotency key, a state set again).
BUSY_RETRIES = 3

T = TypeVar("T")


class FlowRunMade(NamedTuple):
    """A flow run the dispatcher made: its id, and the work queue Prefect put it on."""

    id: str
    work_queue: str | None


class OrchestratorUnavailable(RuntimeError):
    """Prefect could not be reached or has no registration-job deployment."""


class DeploymentMissing(OrchestratorUnavailable):
    pass


class PrefectBusy(OrchestratorUnavailable):
    """Prefect answered 503: up but busy (its SQLite database locked for a moment)."""


def _refuse_busy(response: httpx.Response) -> None:
    """A response hook of the client: a 503 raises at once, past the client's backoff."""
    if response.status_code == 503:
        response.read()
        raise PrefectBusy(f"Prefect is busy (503 from {response.request.url.path})")


class Orchestrator:
    def __init__(self, settings: Settings, client: SyncPrefectClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._deployment_id: UUID | None = None

    @property
    def client(self) -> SyncPrefectClient:
        if self._client is None:
            self._client = get_client(
                httpx_settings={"timeout": 10, "event_hooks": {"response": [_refuse_busy]}},
                sync_client=True,
            )
            self._client.__enter__()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.__exit__(None, None, None)
            self._client = None

    @staticmethod
    def single_tries() -> contextlib.AbstractContextManager[object]:
        """Prefect's client without its retries, for the thread that enters this (settings
        are per context; entering them per call costs more than the call)."""
        return temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0})

    @contextmanager
    def _once(self) -> Iterator[None]:
        """Any failure to reach Prefect as OrchestratorUnavailable."""
        try:
            yield
        except (OrchestratorUnavailable, ObjectNotFound):
            raise
        except Exception as exc:
            raise OrchestratorUnavailable(f"Prefect is unavailable ({_brief(exc)})") from exc

    def deployment_id(self) -> UUID:
        if self._deployment_id is None:
            try:
                with self._once():
                    deployment = self.client.read_deployment_by_name(self.settings.deployment)
            except ObjectNotFound as exc:
                raise DeploymentMissing(
                    f"Prefect has no deployment {self.settings.deployment!r}: run the set-up"
                ) from exc
            self._deployment_id = deployment.id
        return self._deployment_id

    def ping(self) -> None:
        """Raise OrchestratorUnavailable unless Prefect's API answers its health check."""
        with self._once():
            failure = self.client.api_healthcheck()
        if failure is not None:
            raise OrchestratorUnavailable(f"Prefect is unavailable ({_brief(failure)})")

    def create_flow_run(self, run: Dispatch) -> FlowRunMade:
        """The flow run of a run request. Prefect's idempotency key (`<job>:<generation>`)
        makes a second call for the same request return the first call's run, so a dispatch
        retried after a timeout never makes two. A job pinned to a release gets its run on
        that release's work queue (and a `release:<version>` tag); a job not yet pinned, on
        the deployment's queue (the release deployed last)."""
        tags = [*run.labels.tags, *([f"release:{run.code_version}"] if run.code_version else [])]
        deployment_id = self.deployment_id()
        try:
            with self._once():
                flow_run: FlowRun = _again_while_busy(
                    lambda: self.client.create_flow_run_from_deployment(
                        deployment_id,
                        parameters={"job_id": run.job_id},
                        name=run.labels.name,
                        tags=tags,
                        idempotency_key=run.idempotency_key,
                        work_queue_name=run.work_queue,
                        # Its place in the work pool's queue (workers take the runs
                        # waiting there by their start time): fair between organisations.
                        state=Scheduled(scheduled_time=run.start_at) if run.start_at else None,
                    )
                )
        except ObjectNotFound as exc:
            self._deployment_id = None  # deleted since: look it up again next time
            raise DeploymentMissing(
                f"Prefect has no deployment {self.settings.deployment!r}: run the set-up"
            ) from exc
        return FlowRunMade(str(flow_run.id), flow_run.work_queue_name)

    def queue_polls(self) -> dict[str, datetime | None]:
        """When a worker last polled each work queue of the pool (None: never)."""
        with self._once():
            queues = self.client.read_work_queues(work_pool_name=self.settings.work_pool)
        return {q.name: q.last_polled for q in queues}

    def read_flow_runs(self, flow_run_ids: Sequence[str]) -> dict[str, FlowRunSnapshot]:
        """The state of each flow run Prefect has, by id, in one call per 200 runs; a run
        Prefect does not have is absent."""
        found: dict[str, FlowRunSnapshot] = {}
        # An id that is no UUID names no flow run Prefect could have (it is absent).
        ids = [i for i in dict.fromkeys(flow_run_ids) if _uuid(i)]
        for start in range(0, len(ids), BATCH):
            chunk = [UUID(i) for i in ids[start : start + BATCH]]
            with self._once():
                runs = self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                    limit=len(chunk),
                )
            for run in runs:
                found[str(run.id)] = FlowRunSnapshot(
                    str(run.id), translate.run_state(run.state), {}
                )
        return found

    def cancel(self, flow_run_id: str, *, suspended: bool = False) -> None:
        """Ask Prefect to cancel the flow run: its runner stops the flow-run process. A run
        that already ended, or that Prefect no longer has, needs nothing. A `suspended`
        run (waiting for a person) has no process for a runner to stop: it is cancelled
        outright (Cancelling would wait for one, for minutes)."""
        if not _uuid(flow_run_id):
            return
        state = State(type=StateType.CANCELLED if suspended else StateType.CANCELLING)
        with contextlib.suppress(ObjectNotFound), self._once():
            _again_while_busy(
                lambda: self.client.set_flow_run_state(UUID(flow_run_id), state, force=suspended)
            )

    def resume(self, flow_run_id: str, config_version: int) -> bool:
        """Resume a suspended flow run with a person's input: the config version number,
        nothing else (Prefect keeps run inputs in plain text). False while the run is not
        suspended yet (it is still suspending, or not begun): asked again later. A run that
        ended, resumed already or that Prefect no longer has needs nothing (True)."""
        if not _uuid(flow_run_id):
            return True
        with self._once():
            try:
                run = self.client.read_flow_run(UUID(flow_run_id))
            except ObjectNotFound:
                return True
            state = run.state
            if state is None or state.type in (StateType.RUNNING, StateType.PENDING):
                return False  # still on its way to Suspended, or begun again already
            if state.type is not StateType.PAUSED:
                return True
            answer = _again_while_busy(
                lambda: self.client.resume_flow_run(
                    UUID(flow_run_id), run_input={"config_version": config_version}
                )
            )
        return answer.status is SetStateStatus.ACCEPT or (
            answer.state is not None and answer.state.type is StateType.FAILED
        )

    def mark_failed(self, flow_run_id: str, message: str) -> None:
        """Tell Prefect a suspended run failed (it waited for a person past its limit)."""
        if not _uuid(flow_run_id):
            return
        with contextlib.suppress(ObjectNotFound), self._once():
            _again_while_busy(
                lambda: self.client.set_flow_run_state(
                    UUID(flow_run_id), State(type=StateType.FAILED, message=message), force=True
                )
            )

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        """Tell Prefect a run is dead (so the UI agrees and it can be retried)."""
        if not _uuid(flow_run_id):
            return
        with contextlib.suppress(ObjectNotFound), self._once():
            _again_while_busy(
                lambda: self.client.set_flow_run_state(
                    UUID(flow_run_id), State(type=StateType.CRASHED, message=message), force=True
                )
            )

    def browser_slots(self) -> tuple[int, int]:
        """The browser limit's slots taken, and its size, as Prefect counts them."""
        with self._once():
            limit = self.client.read_global_concurrency_limit_by_name(
                self.settings.browser_limit_name
            )
        return limit.active_slots, limit.limit

    def free_lease(self, lease_id: str) -> None:
        """Free one browser slot's lease by its id (Prefect's decrement-with-lease: the
        slots of that lease alone; nothing if Prefect has already freed it)."""
        if not _uuid(lease_id):
            return
        with self._once():
            _again_while_busy(
                lambda: self.client.release_concurrency_slots_with_lease(lease_id=UUID(lease_id))
            )

    def emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        """A Prefect event (automations can act on it: notify someone)."""
        with self._once():
            emit_event(event=event, resource=resource, payload=payload)


def _again_while_busy(write: Callable[[], T]) -> T:
    """`write()`, made again while Prefect answers 503, at most BUSY_RETRIES times; then
    PrefectBusy (the reconciler tries again at its next cycle)."""
    for attempt in range(BUSY_RETRIES):
        try:
            return write()
        except PrefectBusy:
            time.sleep(0.1 * 2**attempt)
    return write()


def _uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
