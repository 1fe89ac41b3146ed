"""The ledger against the real job database (SQLite; PostgreSQL in CI's second pass):
fencing by epoch, who may begin a job, compare-and-set transitions, the materialised view
and its events. Each test makes its own organisation and job."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType
from sqlalchemy import func, select

from regjobs import catalogue, ledger, translate
from regjobs.catalogue import STEP_IDS, JobStatus
from regjobs.config import ExecutionConfig
from regjobs.db import bulk_insert, read_session, transaction
from regjobs.errors import Classified, ErrorClass
from regjobs.models import (
    JobEvent,
    JobRun,
    Organisation,
    RegistrationJob,
    RegistrationJobStep,
    StepAttempt,
    utcnow,
)
from regjobs.translate import FlowRunSnapshot, RunState
from tests.helpers import full_config, ledger_job

# Its jobs name made-up flow runs.
pytestmark = [pytest.mark.database, pytest.mark.usefixtures("own_database")]


@pytest.fixture(autouse=True)
def _settings(stack_env: dict[str, str]) -> None:
    """The job database of this test session (no system started)."""


#: A job of an organisation of its own, with its run request unless `auto_start=False`.
new_job = ledger_job


def begin(job_id: str, flow_run_id: str = "flow-run-1", **kwargs: Any) -> ledger.RunStart:
    kwargs.setdefault("generation", 1)
    return transaction(ledger.begin_run, job_id=job_id, flow_run_id=flow_run_id, **kwargs)


def snapshot(job_id: str) -> dict[str, Any]:
    """Everything a write could change: the job row, its steps, attempts, runs, events."""
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None
        rows = session.scalars(
            select(RegistrationJobStep).where(RegistrationJobStep.job_id == job_id)
        ).all()
        attempts = session.scalar(
            select(func.count()).select_from(StepAttempt).where(StepAttempt.job_id == job_id)
        )
        events = session.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)
        )
        return {
            "job": {c.name: getattr(job, c.key) for c in RegistrationJob.__table__.columns},
            "steps": {
                r.step_id: (r.status, r.attempts, r.result_data, r.progress, r.error_message)
                for r in rows
            },
            "attempts": attempts,
            "events": events,
        }


def events_of(job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with read_session() as session:
        rows = session.execute(
            select(JobEvent.seq, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.seq)
        ).tuples()
        return [(seq, kind, json.loads(data)) for seq, kind, data in rows]


def view_of(job_id: str) -> dict[str, Any]:
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None and job.view is not None
        return dict(json.loads(job.view))


FAILURE = Classified(ErrorClass.NON_RETRYABLE, "HTTP 404")

#: Every write a flow-run process makes, each with a stale epoch.
STALE_WRITES: dict[str, Callable[[str, int], Any]] = {
    "start_attempt": lambda job_id, epoch: transaction(
        ledger.start_attempt, job_id=job_id, epoch=epoch, step_id="code_generation",
        flow_run_id="flow-run-1", task_run_id=None,
    ),
    "complete_attempt": lambda job_id, epoch: transaction(
        ledger.complete_attempt, job_id=job_id, epoch=epoch, step_id="account_registration",
        attempt=1, result={"account_id": "stale"}, warning=None,
    ),
    "fail_attempt": lambda job_id, epoch: transaction(
        ledger.fail_attempt, job_id=job_id, epoch=epoch, step_id="account_registration",
        attempt=1, error=FAILURE, will_retry=False,
    ),
    "set_progress": lambda job_id, epoch: transaction(
        ledger.set_progress, job_id=job_id, epoch=epoch, step_id="account_registration",
        progress="stale",
    ),
    "skip_steps": lambda job_id, epoch: transaction(
        ledger.skip_steps, job_id=job_id, epoch=epoch, reasons={"item_tags": "stale"}
    ),
    "finish_run": lambda job_id, epoch: transaction(
        ledger.finish_run, job_id=job_id, epoch=epoch, status=JobStatus.COMPLETED,
        error_message=None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("write", sorted(STALE_WRITES))
@pytest.mark.parametrize("taken_by", ["cancel", "another run"])
def test_a_write_with_a_stale_epoch_changes_nothing(write: str, taken_by: str) -> None:
    job_id = new_job()
    old = begin(job_id)
    transaction(
        ledger.start_attempt, job_id=job_id, epoch=old.epoch, step_id="account_registration",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    if taken_by == "cancel":
        transaction(ledger.cancel_job, job_id=job_id)
        expected = "the job was cancelled"
    else:
        # A Prefect rerun of the same flow run (run count 2) takes the job over.
        begin(job_id, run_count=2)
        expected = "flow run flow-run-1 took over"
    before = snapshot(job_id)

    with pytest.raises(ledger.OwnershipLost, match=expected):
        STALE_WRITES[write](job_id, old.epoch)

    assert snapshot(job_id) == before
    assert not transaction(ledger.heartbeat, job_id=job_id, epoch=old.epoch)
    # The read before each walk of the graph says so too, and why.
    with read_session() as session:
        seen = ledger.walk_state(session=session, job_id=job_id, epoch=old.epoch)
    assert seen.lost is not None and expected in seen.lost


def test_a_heartbeat_is_stamped_by_the_clock_the_reconciler_judges_it_by() -> None:
    """A flow run on a host whose clock is a minute behind renews its lease. On PostgreSQL
    (the shape across hosts) the stamp is the database's clock, which the reconciler reads
    as its `now` too: the host's clock changes nothing (with hosts 2 s apart, a live job
    was once failed as lost). SQLite is embedded, one host: its clock is the host's."""
    import time_machine

    from api.reconciler import Reconciler
    from regjobs.db import database_now, get_engine

    assert Reconciler.now is database_now  # the reconciler's clock, unless a test sets one
    job_id = new_job()
    start = begin(job_id)
    true_now = datetime.now(UTC)
    with time_machine.travel(true_now - timedelta(seconds=60), tick=True):
        assert transaction(ledger.heartbeat, job_id=job_id, epoch=start.epoch)
        with read_session() as session:
            job = session.get(RegistrationJob, job_id)
            assert job is not None and job.heartbeat_at is not None
            stamped = job.heartbeat_at
    judged = database_now()
    if get_engine().dialect.name == "postgresql":
        assert abs((stamped - true_now).total_seconds()) < 10, (stamped, true_now)
        assert 0 <= (judged - stamped).total_seconds() < 10, (judged, stamped)
    else:
        assert abs((stamped - true_now).total_seconds() + 60) < 10, (stamped, true_now)


def test_the_epoch_holder_writes_and_every_attempt_carries_its_epoch() -> None:
    job_id = new_job()
    start = begin(job_id)
    attempt = transaction(
        ledger.start_attempt, job_id=job_id, epoch=start.epoch, step_id="account_registration",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    transaction(
        ledger.complete_attempt, job_id=job_id, epoch=start.epoch,
        step_id="account_registration", attempt=attempt.number, result={"a": 1}, warning=None,
    )  # fmt: skip
    assert transaction(ledger.heartbeat, job_id=job_id, epoch=start.epoch)
    with read_session() as session:
        epochs = session.scalars(select(StepAttempt.epoch).where(StepAttempt.job_id == job_id))
        assert list(epochs) == [start.epoch]
        seen = ledger.walk_state(session=session, job_id=job_id, epoch=start.epoch)
    assert (seen.lost, seen.config_version) == (None, start.config_version)
    assert seen.states["account_registration"].status is catalogue.StepStatus.COMPLETED
    assert view_of(job_id)["steps"][0]["status"] == "completed"


def test_only_the_current_run_may_begin_an_active_job() -> None:
    job_id = new_job()
    # A run made for an older generation (the dispatcher's key says which) is refused.
    with pytest.raises(ledger.RunRefused, match="not starting another"):
        begin(job_id, "stale-run", generation=0)
    # An operator's run of an active job that already has a run request is refused too.
    with pytest.raises(ledger.RunRefused):
        begin(job_id, "operator-run", generation=None)
    first = begin(job_id, "flow-run-1", generation=1)
    # The same run beginning again with the same Prefect run count is not a rerun.
    with pytest.raises(ledger.RunRefused, match="already began"):
        begin(job_id, "flow-run-1", generation=1)
    assert snapshot(job_id)["job"]["epoch"] == first.epoch


def test_a_run_cancelled_before_it_began_never_starts_late() -> None:
    job_id = new_job()
    transaction(ledger.record_dispatch, run_id=_run_id(job_id, 1), flow_run_id="flow-run-1")
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    # The cancelled run starts at last (Prefect had not heard of the cancel yet).
    with pytest.raises(ledger.RunRefused):
        begin(job_id, "flow-run-1", generation=1)
    # The retry's run is the one that may begin.
    assert begin(job_id, "flow-run-2", generation=2).epoch > 0


def test_an_ended_job_is_begun_again_only_by_a_deliberate_rerun() -> None:
    job_id = new_job()
    start = begin(job_id)
    transaction(
        ledger.finish_run, job_id=job_id, epoch=start.epoch, status=JobStatus.FAILED,
        error_message="failed step: Account registration",
    )  # fmt: skip
    # Prefect's Retry of the same run: run count 2.
    again = begin(job_id, "flow-run-1", generation=1, run_count=2)
    assert again.epoch > start.epoch
    assert snapshot(job_id)["job"]["status"] == "in_progress"


def test_cancel_and_retry_are_compare_and_set_on_the_status() -> None:
    job_id = new_job()
    transaction(ledger.cancel_job, job_id=job_id)
    with pytest.raises(ledger.Conflict):
        transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    with pytest.raises(ledger.Conflict):
        transaction(ledger.retry_job, job_id=job_id, from_step=None)
    with pytest.raises(ledger.Conflict):
        transaction(ledger.start_job, job_id=job_id)


def test_concurrent_transitions_one_wins_each_round() -> None:
    """20 threads race cancel and retry on one job: every call wins or conflicts, and the
    job's run requests and epochs show one winner per transition."""
    job_id = new_job()
    outcomes: list[str] = []
    barrier = threading.Barrier(20)

    def call(i: int) -> None:
        barrier.wait()
        try:
            if i % 2:
                transaction(ledger.cancel_job, job_id=job_id)
                outcomes.append("cancel")
            else:
                transaction(ledger.retry_job, job_id=job_id, from_step=None)
                outcomes.append("retry")
        except ledger.Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 20
    cancels, retries = outcomes.count("cancel"), outcomes.count("retry")
    # Transitions alternate: a retry needs an ended job, a cancel an active one.
    assert cancels >= 1 and retries in (cancels - 1, cancels)
    with read_session() as session:
        runs = session.scalar(
            select(func.count()).select_from(JobRun).where(JobRun.job_id == job_id)
        )
    assert runs == 1 + retries


def test_record_outcome_for_a_stale_epoch_or_an_ended_job_writes_nothing() -> None:
    job_id = new_job()
    start = begin(job_id)
    with read_session() as session:
        job, rows = ledger.job_and_steps(session=session, job_id=job_id)
    crashed = translate.job_public(
        job, rows, FlowRunSnapshot("flow-run-1", RunState(StateType.CRASHED, "Crashed"), {})
    )
    # The flow fails the step for good and ends the job after the reconciler read it.
    transaction(
        ledger.start_attempt, job_id=job_id, epoch=start.epoch, step_id="onboarding_sync",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    transaction(
        ledger.fail_attempt, job_id=job_id, epoch=start.epoch, step_id="onboarding_sync",
        attempt=1, error=FAILURE, will_retry=False,
    )  # fmt: skip
    transaction(
        ledger.finish_run, job_id=job_id, epoch=start.epoch, status=JobStatus.FAILED,
        error_message="failed step: Onboarding sync",
    )  # fmt: skip
    before = snapshot(job_id)
    written = transaction(
        ledger.record_outcome, job_id=job_id, epoch=start.epoch, flow_run_id="flow-run-1",
        observed_at=None, public=crashed,
    )  # fmt: skip
    assert written is False
    assert snapshot(job_id) == before
    assert snapshot(job_id)["steps"]["onboarding_sync"][0] == "failed"


def test_record_outcome_fences_a_live_process() -> None:
    job_id = new_job()
    start = begin(job_id)
    with read_session() as session:
        job, rows = ledger.job_and_steps(session=session, job_id=job_id)
    crashed = translate.job_public(
        job, rows, FlowRunSnapshot("flow-run-1", RunState(StateType.CRASHED, "Crashed"), {})
    )
    assert transaction(
        ledger.record_outcome, job_id=job_id, epoch=start.epoch, flow_run_id="flow-run-1",
        observed_at=None, public=crashed, tell_prefect="no heartbeat",
    )  # fmt: skip
    with pytest.raises(ledger.OwnershipLost, match="the job was ended"):
        STALE_WRITES["start_attempt"](job_id, start.epoch)
    view = view_of(job_id)
    assert (view["status"], view["next_action"]) == ("failed", "retry")
    with read_session() as session:
        pending = ledger.deliveries(session=session)
    assert any(d.flow_run_id == "flow-run-1" and d.kind == "crash" for d in pending)


def test_every_change_bumps_the_version_with_one_event_per_changed_part() -> None:
    job_id = new_job()
    created = events_of(job_id)
    # Creation: every step, then the job.
    assert [kind for _, kind, _ in created] == ["step"] * 12 + ["job"]
    assert [seq for seq, _, _ in created] == list(range(1, 14))
    start = begin(job_id)
    before = len(events_of(job_id))
    transaction(
        ledger.set_progress, job_id=job_id, epoch=start.epoch, step_id="account_registration",
        progress="half way",
    )  # fmt: skip
    after = events_of(job_id)
    assert len(after) == before + 1
    _, kind, data = after[-1]
    assert (kind, data["step_id"], data["progress"]) == ("step", "account_registration", "half way")
    transaction(
        ledger.start_attempt, job_id=job_id, epoch=start.epoch, step_id="account_registration",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    last = events_of(job_id)
    assert [s for s, _, _ in last] == list(range(1, len(last) + 1))
    view = view_of(job_id)
    assert view["version"] == last[-1][0]
    assert view["steps"][0]["status"] == "running"
    # A write that changes nothing public (the same progress again) adds no event.
    transaction(
        ledger.set_progress, job_id=job_id, epoch=start.epoch, step_id="account_registration",
        progress="half way",
    )  # fmt: skip
    assert len(events_of(job_id)) == len(last)


def test_attempts_count_across_runs() -> None:
    job_id = new_job()
    first = begin(job_id)
    for _ in range(2):
        attempt = transaction(
            ledger.start_attempt, job_id=job_id, epoch=first.epoch, step_id="code_generation",
            flow_run_id="flow-run-1", task_run_id=None,
        )  # fmt: skip
        transaction(
            ledger.fail_attempt, job_id=job_id, epoch=first.epoch, step_id="code_generation",
            attempt=attempt.number, error=FAILURE, will_retry=attempt.number < 2,
        )  # fmt: skip
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    second = begin(job_id, "flow-run-2", generation=2)
    attempt = transaction(
        ledger.start_attempt, job_id=job_id, epoch=second.epoch, step_id="code_generation",
        flow_run_id="flow-run-2", task_run_id=None,
    )  # fmt: skip
    assert attempt.number == 3
    step = next(s for s in view_of(job_id)["steps"] if s["step_id"] == "code_generation")
    # The third attempt is the first of this run: running, not retrying.
    assert (step["attempts"], step["status"]) == (3, "running")


def test_an_attempt_knows_whether_its_idempotency_key_was_used_before() -> None:
    """The second attempt of a generation (in the same run or after a retry) is a repeat;
    a deliberate run again from the step (a new generation) is not."""
    job_id = new_job()

    def attempt(epoch: int, run: str) -> ledger.Attempt:
        return transaction(
            ledger.start_attempt, job_id=job_id, epoch=epoch, step_id="code_generation",
            flow_run_id=run, task_run_id=None,
        )  # fmt: skip

    first = begin(job_id)
    one = attempt(first.epoch, "flow-run-1")
    transaction(
        ledger.fail_attempt, job_id=job_id, epoch=first.epoch, step_id="code_generation",
        attempt=one.number, error=FAILURE, will_retry=True,
    )  # fmt: skip
    two = attempt(first.epoch, "flow-run-1")
    assert (one.repeat, two.repeat) == (False, True)
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    second = begin(job_id, "flow-run-2", generation=2)
    three = attempt(second.epoch, "flow-run-2")
    assert (three.generation, three.repeat) == (two.generation, True)
    transaction(
        ledger.complete_attempt, job_id=job_id, epoch=second.epoch, step_id="code_generation",
        attempt=three.number, result={"code": "x"}, warning=None,
    )  # fmt: skip
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step="code_generation")
    third = begin(job_id, "flow-run-3", generation=3)
    four = attempt(third.epoch, "flow-run-3")
    assert (four.generation, four.repeat) == (three.generation + 1, False)


def test_a_job_without_a_view_gets_one_when_migrated() -> None:
    job_id = new_job()

    def forget(*, session: Any) -> None:
        job = session.get(RegistrationJob, job_id)
        job.view = job.progress_view = job.summary_view = None

    transaction(forget)
    assert transaction(ledger.publish_missing_views) >= 1
    assert view_of(job_id)["id"] == job_id
    assert {s["step_id"] for s in view_of(job_id)["steps"]} == set(STEP_IDS)


def _run_id(job_id: str, generation: int) -> int:
    with read_session() as session:
        run = session.scalars(
            select(JobRun).where(JobRun.job_id == job_id, JobRun.generation == generation)
        ).one()
        return run.id


def test_a_run_that_ends_before_it_begins_is_replaced_a_few_times_then_not() -> None:
    job_id = new_job()
    for generation in range(1, ledger.RUNS_BEFORE_BEGIN + 1):
        flow_run_id = f"flow-run-{generation}"
        transaction(
            ledger.record_dispatch, run_id=_run_id(job_id, generation), flow_run_id=flow_run_id
        )
        epoch = snapshot(job_id)["job"]["epoch"]
        replaced = transaction(
            ledger.replace_unbegun_run, job_id=job_id, epoch=epoch, flow_run_id=flow_run_id,
            reason="the worker could not start it", tell_prefect="never started",
        )  # fmt: skip
        if generation < ledger.RUNS_BEFORE_BEGIN:
            assert replaced
            view = view_of(job_id)
            assert (view["status"], view["flow_run_id"]) == ("pending", None)
            assert "ended before it began" in view["pending_reason"]
            # The replaced run, should it start after all, may not begin the job.
            with pytest.raises(ledger.RunRefused):
                begin(job_id, flow_run_id, generation=generation)
        else:
            assert not replaced  # the job is left to fail with its reason
    with read_session() as session:
        crashes = [d for d in ledger.deliveries(session=session) if d.kind == "crash"]
    assert {d.flow_run_id for d in crashes} >= {"flow-run-1", "flow-run-2"}


def test_a_run_that_began_is_not_replaced() -> None:
    job_id = new_job()
    start = begin(job_id)
    assert not transaction(
        ledger.replace_unbegun_run, job_id=job_id, epoch=start.epoch, flow_run_id="flow-run-1",
        reason="crashed",
    )  # fmt: skip


def lease() -> str:
    return str(uuid.uuid4())


def slot_of(job_id: str, step_id: str) -> tuple[Any, str | None]:
    with read_session() as session:
        row = session.scalars(
            select(RegistrationJobStep).where(
                RegistrationJobStep.job_id == job_id, RegistrationJobStep.step_id == step_id
            )
        ).one()
        return row.slot_since, row.slot_lease


def test_slots_held_count_only_live_holders_of_active_jobs() -> None:
    before = transaction(ledger.slots_held)
    job_id = new_job()
    start = begin(job_id)
    leases = {"restaurant_registration": lease(), "website_configuration": lease()}
    for step, held in leases.items():
        transaction(ledger.hold_slot, job_id=job_id, epoch=start.epoch, step_id=step, lease=held)
    assert transaction(ledger.slots_held) == before + 2
    assert transaction(
        ledger.give_back_slot, job_id=job_id, step_id="website_configuration",
        lease=leases["website_configuration"],
    )  # fmt: skip
    assert slot_of(job_id, "website_configuration") == (None, None)
    assert transaction(ledger.slots_held) == before + 1
    # A holder that lost the job cannot claim a slot; an ended job holds none.
    transaction(ledger.cancel_job, job_id=job_id)
    with pytest.raises(ledger.OwnershipLost):
        transaction(
            ledger.hold_slot, job_id=job_id, epoch=start.epoch, step_id="menu_import",
            lease=lease(),
        )  # fmt: skip
    assert transaction(ledger.slots_held) == before


def test_a_stale_holders_give_back_changes_nothing() -> None:
    """Cancel then retry while the first run's browser step holds a slot: the new run's
    step holds the slot under its own lease before the old run has given its slot back.
    The old run's give-back, when it comes, leaves the new holder's record as it was."""
    job_id = new_job()
    first = begin(job_id)
    old = lease()
    step = "restaurant_registration"
    transaction(ledger.hold_slot, job_id=job_id, epoch=first.epoch, step_id=step, lease=old)
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    # The retry forgets the old lease (its holder gives it back to Prefect itself).
    assert slot_of(job_id, step) == (None, None)
    second = begin(job_id, "flow-run-2", generation=2)
    new = lease()
    before = transaction(ledger.slots_held)
    transaction(ledger.hold_slot, job_id=job_id, epoch=second.epoch, step_id=step, lease=new)
    held = snapshot(job_id)
    assert slot_of(job_id, step)[1] == new
    # Now the old run gives its slot back: nothing changes.
    assert not transaction(ledger.give_back_slot, job_id=job_id, step_id=step, lease=old)
    assert snapshot(job_id) == held
    assert transaction(ledger.slots_held) == before + 1
    # The holder of the lease the step names does give it back.
    assert transaction(ledger.give_back_slot, job_id=job_id, step_id=step, lease=new)
    assert slot_of(job_id, step) == (None, None)
    assert transaction(ledger.slots_held) == before


def test_the_lease_of_a_holder_found_dead_is_kept_to_free_by_its_id() -> None:
    job_id = new_job()
    start = begin(job_id)
    step, dead = "restaurant_registration", lease()
    transaction(ledger.hold_slot, job_id=job_id, epoch=start.epoch, step_id=step, lease=dead)
    with read_session() as session:
        job, rows = ledger.job_and_steps(session=session, job_id=job_id)
    crashed = translate.job_public(
        job, rows, FlowRunSnapshot("flow-run-1", RunState(StateType.CRASHED, "Crashed"), {})
    )
    before = transaction(ledger.slots_held)
    assert transaction(
        ledger.record_outcome, job_id=job_id, epoch=start.epoch, flow_run_id="flow-run-1",
        observed_at=None, public=crashed, tell_prefect="no heartbeat",
    )  # fmt: skip
    assert transaction(ledger.slots_held) == before - 1
    assert slot_of(job_id, step) == (None, dead)
    ours = [e for e in transaction(ledger.leases_to_free) if e.job_id == job_id]
    assert ours == [ledger.ExpiredLease(job_id, step, dead)]
    # Once freed, the reconciler forgets it, and only the lease the step names.
    other = lease()
    assert not transaction(ledger.forget_lease, job_id=job_id, step_id=step, lease=other)
    assert transaction(ledger.forget_lease, job_id=job_id, step_id=step, lease=dead)
    assert slot_of(job_id, step) == (None, None)
    assert not [e for e in transaction(ledger.leases_to_free) if e.job_id == job_id]


def test_stalls_are_found_once_and_cleared_by_the_next_change() -> None:
    job_id = new_job()
    start = begin(job_id)
    transaction(
        ledger.start_attempt, job_id=job_id, epoch=start.epoch, step_id="code_generation",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    code_generation = catalogue.step("code_generation").timeout_seconds

    def found(after: float) -> list[ledger.Stall]:
        with read_session() as session:
            return [
                s
                for s in ledger.stalls(
                    session=session,
                    now=utcnow() + timedelta(seconds=after),
                    step_grace=60,
                    timeout_scale=1,
                    queue_limit=3600,
                )
                if s.job_id == job_id
            ]

    assert found(code_generation) == []
    [stall] = found(code_generation + 61)
    assert (stall.step_ids, stall.job_waiting) == (["code_generation"], False)
    since = utcnow()
    assert transaction(
        ledger.mark_stalled, job_id=job_id, epoch=start.epoch, step_ids=stall.step_ids,
        job_stalled=False, since=since,
    )  # fmt: skip
    view = view_of(job_id)
    step = next(s for s in view["steps"] if s["step_id"] == "code_generation")
    assert step["stalled_since"] is not None and view["stalled_since"] == step["stalled_since"]
    assert found(code_generation + 61) == []  # marked already
    transaction(
        ledger.fail_attempt, job_id=job_id, epoch=start.epoch, step_id="code_generation",
        attempt=1, error=FAILURE, will_retry=True,
    )  # fmt: skip
    assert view_of(job_id)["stalled_since"] is None


def test_a_job_waiting_too_long_for_its_run_is_a_stall() -> None:
    job_id = new_job()
    with read_session() as session:
        waiting = ledger.stalls(
            session=session, now=utcnow() + timedelta(hours=2), step_grace=60,
            timeout_scale=1, queue_limit=3600,
        )  # fmt: skip
    assert any(s.job_id == job_id and s.job_waiting for s in waiting)


def test_a_batch_of_creates_reads_back_as_written_whatever_its_text_holds() -> None:
    """`create_jobs` writes with batch INSERTs: text with backslashes, quotes, a `\\N` and
    non-ASCII comes back unchanged (tabs and newlines too, in an event's text), JSON columns
    parse, left-out columns take their defaults, and times keep their zone."""
    name = 'Caf\u00e9 \\N \\ "Chez" L\u00e9a \u6f22 \U0001f600'
    config = full_config(restaurant={"name": name})

    def make(*, session: Any) -> list[str]:
        organisation = Organisation(name=f"batch-{uuid.uuid4().hex[:8]}")
        session.add(organisation)
        session.flush()
        batch = [
            ledger.NewJob(
                organisation.id, f"r-{uuid.uuid4().hex[:8]}", ExecutionConfig.model_validate(config)
            )
            for _ in range(3)
        ]
        jobs = ledger.create_jobs(session=session, batch=batch)
        awkward = {"text": "tab\there, new\nline\r, back\\slash \\t \\N", "none": None}
        bulk_insert(
            session,
            JobEvent.__table__,
            [{"job_id": jobs[0].id, "seq": 100, "kind": "step", "data": json.dumps(awkward)}],
        )
        return [job.id for job in jobs]

    before = utcnow()
    job_ids = transaction(make)
    assert len(job_ids) == 3
    with read_session() as session:
        for job_id in job_ids:
            job = session.get(RegistrationJob, job_id)
            assert job is not None
            assert job.restaurant_name == name
            assert job.config_public["restaurant"]["name"] == name
            assert ledger.job_config(job).restaurant.name == name
            assert job.flow_run_ids == []
            assert before - timedelta(seconds=1) <= job.created_at <= utcnow()
            view = json.loads(job.view or "")
            assert (view["restaurant_name"], view["status"]) == (name, JobStatus.PENDING)
            rows = session.scalars(
                select(RegistrationJobStep).where(RegistrationJobStep.job_id == job_id)
            ).all()
            assert sorted(r.step_id for r in rows) == sorted(STEP_IDS)
            assert {(r.status, r.attempts, r.generation_attempts) for r in rows} == {
                ("pending", 0, 0)
            }
            events = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq < 100)
            ).all()
            assert sorted(e.seq for e in events) == list(range(1, len(STEP_IDS) + 2))
            assert all(e.created_at is not None for e in events)
            runs = session.scalars(select(JobRun).where(JobRun.job_id == job_id)).all()
            assert [(r.generation, r.dispatched_at) for r in runs] == [(1, None)]
        written = session.scalars(
            select(JobEvent.data).where(JobEvent.job_id == job_ids[0], JobEvent.seq == 100)
        ).one()
    assert json.loads(written) == {
        "text": "tab\there, new\nline\r, back\\slash \\t \\N",
        "none": None,
    }


def test_the_dispatcher_sees_how_many_requests_wait_and_takes_only_those_it_saw() -> None:
    first, second = new_job(), new_job()
    with read_session() as session:
        count, newest, last = ledger.run_requests_waiting(session=session)
        runs = {r.job_id: r.run_id for r in ledger.runs_to_dispatch(session=session, limit=10_000)}
        seen = ledger.runs_to_dispatch(session=session, limit=10_000, up_to=runs[first])
    assert count >= 2 and newest is not None and last is not None
    assert last >= runs[second] > runs[first]
    assert newest >= utcnow() - timedelta(minutes=5)
    assert first in {r.job_id for r in seen} and second not in {r.job_id for r in seen}


def test_a_batch_a_unique_index_refuses_raises_integrity_error() -> None:
    """Whichever way the rows go in (COPY on PostgreSQL), a refused batch is SQLAlchemy's
    IntegrityError, which the create path catches to try the jobs one by one."""
    from sqlalchemy.exc import IntegrityError

    def make(*, session: Any) -> None:
        organisation = Organisation(name=f"dup-{uuid.uuid4().hex[:8]}")
        session.add(organisation)
        session.flush()
        config = ExecutionConfig.model_validate(full_config())
        twice = [ledger.NewJob(organisation.id, "same-restaurant", config, "key-1")] * 2
        ledger.create_jobs(session=session, batch=twice)

    with pytest.raises(IntegrityError):
        transaction(make)


def test_a_step_that_needs_a_person_keeps_the_fields_until_it_runs_again() -> None:
    """The fields a person can correct stay on the step row (the input form asks for
    them); the step waits (`action_required`, no next action of its own); a retry after a
    cancel queues the step again without them."""
    from regjobs.errors import LoginRefused, classify
    from regjobs.models import RegistrationJobStep

    job_id = new_job()
    run = begin(job_id)
    attempt = transaction(
        ledger.start_attempt, job_id=job_id, epoch=run.epoch, step_id="onboarding_user",
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    refused = LoginRefused(
        "refused", fields=("onboarding.user_email", "onboarding.user_password"), email="a@b.c"
    )
    transaction(
        ledger.fail_attempt, job_id=job_id, epoch=run.epoch, step_id="onboarding_user",
        attempt=attempt.number, error=classify(refused), will_retry=False,
    )  # fmt: skip

    def fields() -> Any:
        with read_session() as session:
            row = session.get(RegistrationJobStep, (job_id, "onboarding_user"))
            assert row is not None
            return row.status, row.action_fields, row.next_action

    assert fields() == (
        "action_required",
        ["onboarding.user_email", "onboarding.user_password"],
        None,
    )
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    assert fields() == ("pending", None, None)


def test_a_failed_attempts_screenshot_stays_in_the_view_through_cancel_retry_and_success() -> None:
    """The view reads the screenshots only when one may exist (a failed attempt left it):
    it keeps showing the first attempt's through every later write of the step, also once
    the step is queued again with that one attempt, and a step never tried shows none."""
    job_id = new_job()
    step = "restaurant_registration"

    def evidence() -> dict[str, list[tuple[int, int]]]:
        return {
            s["step_id"]: [(e["attempt"], e["evidence_id"]) for e in s["evidence"]]
            for s in view_of(job_id)["steps"]
        }

    def only(shots: list[tuple[int, int]]) -> dict[str, list[tuple[int, int]]]:
        return {s: shots if s == step else [] for s in STEP_IDS}

    first = begin(job_id)
    one = transaction(
        ledger.start_attempt, job_id=job_id, epoch=first.epoch, step_id=step,
        flow_run_id="flow-run-1", task_run_id=None,
    )  # fmt: skip
    assert evidence() == only([])
    shot = transaction(
        ledger.fail_attempt, job_id=job_id, epoch=first.epoch, step_id=step,
        attempt=one.number, error=Classified(ErrorClass.RETRYABLE, "the portal timed out"),
        will_retry=True, evidence=b"\x89PNG screenshot",
    )  # fmt: skip
    assert shot is not None
    kept = [(one.number, shot)]
    assert evidence() == only(kept)
    transaction(ledger.cancel_job, job_id=job_id)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    # Queued again with its one (failed) attempt.
    assert next(s for s in view_of(job_id)["steps"] if s["step_id"] == step)["attempts"] == 1
    assert evidence()[step] == kept
    second = begin(job_id, "flow-run-2", generation=2)
    two = transaction(
        ledger.start_attempt, job_id=job_id, epoch=second.epoch, step_id=step,
        flow_run_id="flow-run-2", task_run_id=None,
    )  # fmt: skip
    assert evidence()[step] == kept
    transaction(
        ledger.complete_attempt, job_id=job_id, epoch=second.epoch, step_id=step,
        attempt=two.number, result={"restaurant_id": "r-1"}, warning=None,
    )  # fmt: skip
    assert evidence() == only(kept)
