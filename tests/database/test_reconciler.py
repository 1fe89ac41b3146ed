"""The reconciler's own decisions against the real job database, with Prefect replaced by a
recording stand-in (the real thing: tests/e2e/test_browser_slots.py, test_replicas.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from prefect.client.schemas.objects import StateType

from api.orchestrator import Orchestrator
from api.reconciler import Reconciler
from regjobs import ledger, translate
from regjobs.db import read_session, transaction
from regjobs.models import RegistrationJob, utcnow
from regjobs.settings import get_settings
from regjobs.translate import FlowRunSnapshot, RunState
from tests.helpers import ledger_job

# Its jobs name made-up flow runs.
pytestmark = [pytest.mark.database, pytest.mark.usefixtures("own_database")]


class FakePrefect:
    """Counts browser slots as told and records what the reconciler asks of it."""

    def __init__(self, taken: int) -> None:
        self.taken = taken
        self.freed: list[str] = []
        self.events: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def browser_slots(self) -> tuple[int, int]:
        return self.taken, 2

    def free_lease(self, lease_id: str) -> None:
        self.freed.append(lease_id)
        self.taken -= 1

    def emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        self.events.append((event, resource, payload))

    def close(self) -> None:
        pass


class Clock:
    """The reconciler's clock, which the test moves on itself (no sleeping)."""

    def __init__(self) -> None:
        self.at = utcnow()

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def reconciler(
    prefect: FakePrefect, clock: Callable[[], datetime] = utcnow, **settings: Any
) -> Reconciler:
    return Reconciler(
        get_settings().model_copy(update=settings), cast(Orchestrator, prefect), now=clock
    )


def _holding(step_id: str) -> tuple[str, int, str]:
    """A job begun by its run, whose `step_id` holds a browser slot: (job, epoch, lease)."""
    job_id = ledger_job(restaurant_id=f"slot-{uuid.uuid4().hex[:8]}")
    start = transaction(ledger.begin_run, job_id=job_id, flow_run_id="flow-run-1", generation=1)
    lease = str(uuid.uuid4())
    transaction(ledger.hold_slot, job_id=job_id, epoch=start.epoch, step_id=step_id, lease=lease)
    return job_id, start.epoch, lease


def test_healing_frees_exactly_the_lease_of_a_holder_found_dead(
    stack_env: dict[str, str],
) -> None:
    dead_job, epoch, dead = _holding("restaurant_registration")
    _, _, live = _holding("restaurant_registration")
    with read_session() as session:
        job, rows = ledger.job_and_steps(session=session, job_id=dead_job)
    crashed = translate.job_public(
        job, rows, FlowRunSnapshot("flow-run-1", RunState(StateType.CRASHED, "Crashed"), {})
    )
    transaction(
        ledger.record_outcome, job_id=dead_job, epoch=epoch, flow_run_id="flow-run-1",
        observed_at=None, public=crashed, tell_prefect="no heartbeat",
    )  # fmt: skip
    prefect = FakePrefect(taken=transaction(ledger.slots_held) + 1)
    subject = reconciler(prefect, slot_leak_seconds=0.01)
    subject.heal_slots()
    assert dead in prefect.freed and live not in prefect.freed
    assert prefect.freed.count(dead) == 1
    subject.heal_slots()  # freed once: forgotten
    assert prefect.freed.count(dead) == 1
    assert dead not in {e.lease for e in transaction(ledger.leases_to_free)}


def test_slots_counted_beyond_live_holders_are_never_freed_by_count(
    stack_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Prefect counts more slots taken than the ledger's live holders hold (a slot whose
    lease is gone, or a holder the ledger has not recorded yet): nothing is freed by count,
    however long it lasts, since a count could free a live holder's slot. A lease is only
    ever freed by its id, as one of a run found ended (the test system's own jobs, on the
    same database, may end theirs meanwhile)."""

    class ByIdOnly(FakePrefect):
        def free_lease(self, lease_id: str) -> None:
            ended = {e.lease for e in transaction(ledger.leases_to_free)}
            assert lease_id in ended, f"freed {lease_id}, not the lease of an ended run"
            super().free_lease(lease_id)

    prefect = ByIdOnly(taken=transaction(ledger.slots_held) + 2)
    clock = Clock()
    subject = reconciler(prefect, clock, slot_leak_seconds=30)
    with caplog.at_level("WARNING", logger="regjobs.reconciler"):
        for _ in range(3):  # the excess lasts past `slot_leak_seconds`: reported, not freed
            subject.heal_slots()
            clock.advance(31)
    assert "none is freed by count" in caplog.text


def test_a_stall_is_marked_and_told_to_prefect_once(stack_env: dict[str, str]) -> None:
    job_id = ledger_job(restaurant_id="stall")
    prefect = FakePrefect(taken=0)
    # A job waiting longer than the limit for its run to start.
    clock = Clock()
    subject = reconciler(prefect, clock, queue_stall_seconds=60)
    clock.advance(61)
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
