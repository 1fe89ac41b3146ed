"""The reconciler's own decisions against the real job database, with Prefect replaced by a
recording stand-in (the real thing: tests/e2e/test_browser.py, test_replicas.py)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

import pytest

from api.orchestrator import Orchestrator
from api.reconciler import Reconciler
from regjobs import ledger
from regjobs.config import ExecutionConfig
from regjobs.db import read_session, transaction
from regjobs.models import Organisation, RegistrationJob
from regjobs.settings import get_settings
from tests.helpers import full_config

pytestmark = pytest.mark.database


class FakePrefect:
    """Counts browser slots as told and records what the reconciler asks of it."""

    def __init__(self, taken: int) -> None:
        self.taken = taken
        self.given_back: list[int] = []
        self.events: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def browser_slots(self) -> tuple[int, int]:
        return self.taken, 2

    def give_back_slots(self, slots: int) -> None:
        self.given_back.append(slots)
        self.taken -= slots

    def emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        self.events.append((event, resource, payload))

    def close(self) -> None:
        pass


def reconciler(prefect: FakePrefect, **settings: Any) -> Reconciler:
    return Reconciler(get_settings().model_copy(update=settings), cast(Orchestrator, prefect))


def test_slots_nobody_holds_are_given_back_only_after_they_outlast_a_lease(
    stack_env: dict[str, str],
) -> None:
    held = transaction(ledger.slots_held)
    prefect = FakePrefect(taken=held + 2)
    subject = reconciler(prefect, slot_leak_seconds=0.5)
    subject.heal_slots()
    assert prefect.given_back == []  # a lease of a dead holder may still free them
    time.sleep(0.6)
    subject.heal_slots()
    assert prefect.given_back == [2]
    subject.heal_slots()
    assert prefect.given_back == [2]


def test_slots_live_holders_hold_are_never_given_back(stack_env: dict[str, str]) -> None:
    held = transaction(ledger.slots_held)
    prefect = FakePrefect(taken=held)
    subject = reconciler(prefect, slot_leak_seconds=0)
    for _ in range(3):
        subject.heal_slots()
    assert prefect.given_back == []


def _new_job(restaurant_id: str) -> str:
    """A new job (with its run request) of an organisation of its own."""

    def make(*, session: Any) -> str:
        organisation = Organisation(name=f"{restaurant_id}-{uuid.uuid4().hex[:8]}")
        session.add(organisation)
        session.flush()
        job = ledger.create_job(
            session=session,
            organisation_id=organisation.id,
            restaurant_id=restaurant_id,
            config=ExecutionConfig.model_validate(full_config()),
        )
        return job.id

    return transaction(make)


def test_a_stall_is_marked_and_told_to_prefect_once(stack_env: dict[str, str]) -> None:
    job_id = _new_job("stall")
    prefect = FakePrefect(taken=0)
    # A job waiting longer than the limit for its run to start (here: no limit at all).
    subject = reconciler(prefect, queue_stall_seconds=1e-6)
    time.sleep(0.01)
    subject.find_stalls()
    ours = [e for e in prefect.events if e[2]["job_id"] == job_id]
    assert [(event, payload["step_id"]) for event, _, payload in ours] == [
        ("regjobs.job.stalled", None)
    ]
    assert ours[0][1]["prefect.resource.id"] == f"regjobs.job.{job_id}"
    subject.find_stalls()
    assert len([e for e in prefect.events if e[2]["job_id"] == job_id]) == 1
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None and job.view is not None
        assert json.loads(job.view)["stalled_since"] is not None


class DispatchingPrefect(FakePrefect):
    """Creates flow runs (ids only), and on the first one a create arrives meanwhile."""

    def __init__(self) -> None:
        super().__init__(taken=0)
        self.created: list[tuple[str, float]] = []
        self.arrived: tuple[str, float] | None = None

    def create_flow_run(self, run: ledger.Dispatch) -> str:
        self.created.append((run.job_id, time.monotonic()))
        if self.arrived is None:
            self.arrived = (_new_job(f"yield-late-{uuid.uuid4().hex[:8]}"), time.monotonic())
        return str(uuid.uuid4())


def test_the_dispatcher_pauses_while_a_new_burst_of_creates_arrives(
    stack_env: dict[str, str],
) -> None:
    ours = {_new_job(f"yield-{n}-{uuid.uuid4().hex[:8]}") for n in range(3)}
    prefect = DispatchingPrefect()
    subject = reconciler(prefect, dispatch_settle_seconds=0.4, reconcile_seconds=5)
    subject.dispatch()
    dispatched = [(job, at) for job, at in prefect.created if job in ours]
    assert len(dispatched) == 3
    assert prefect.arrived is not None
    late_job, arrived_at = prefect.arrived
    # The run after the one during which the create came waited for that create to settle.
    after = [at for _, at in prefect.created if at > arrived_at]
    assert after and min(after) - arrived_at >= 0.3, (after, arrived_at)
    # The late create is the next pass's, not this one's.
    assert late_job not in {job for job, _ in prefect.created}
