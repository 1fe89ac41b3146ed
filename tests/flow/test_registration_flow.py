"""`registration_job` end to end inside this process: the step graph, fencing, cancel,
retry from a step and a step's timeout, against fake outside systems (conftest)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.runtime import flow_run

from regjobs import catalogue, ledger
from regjobs.catalogue import STEP_IDS, JobStatus, StepStatus
from regjobs.db import read_session, transaction
from regjobs.errors import ErrorClass
from regjobs.models import StepAttempt
from tests.flow.conftest import ANSWERS, FakeSystems, new_job, run_job, tune
from tests.helpers import step_of, wait_for

pytestmark = pytest.mark.flow

PHASE1 = [s.id for s in catalogue.STEPS if not s.needs]


@pytest.fixture(scope="module", autouse=True)
def _tier_time() -> Iterator[None]:
    """The tier's own time (the harness's start included), for the closing report."""
    began = time.monotonic()
    yield
    print(f"\nflow tier: {time.monotonic() - began:.1f} s")


def view(job_id: str) -> dict[str, Any]:
    with read_session() as session:
        return ledger.public_view(session=session, job_id=job_id).model_dump(mode="json")


def steps_of(job_id: str) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in view(job_id)["steps"]}


def attempts_of(job_id: str, step_id: str) -> list[StepAttempt]:
    with read_session() as session:
        return list(
            session.query(StepAttempt)
            .filter_by(job_id=job_id, step_id=step_id)
            .order_by(StepAttempt.attempt)
        )


def graph_edges(flow_run_id: Any) -> dict[str, set[str]]:
    """Each step's upstream steps as Prefect recorded them (its task run's `wait_for`),
    once it has recorded every step's task run (it may a moment after the flow run ends)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.objects import TaskRun, TaskRunResult

    def every_step() -> list[TaskRun] | None:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return runs if {step_of(r.name) for r in runs} == set(STEP_IDS) else None

    runs = wait_for(every_step, timeout=30, interval=0.2, what="every step's task run")
    step = {r.id: step_of(r.name) for r in runs}
    return {
        step[r.id]: {
            step[i.id] for i in r.task_inputs.get("wait_for", []) if isinstance(i, TaskRunResult)
        }
        for r in runs
    }


def test_every_step_runs_once_dependents_after_their_needs_the_first_phase_at_once(
    fake: FakeSystems,
) -> None:
    # Each step of the first phase waits until all four have begun: were they run one
    # after another, the first would wait for ever (and its guard fail the test).
    begun = asyncio.Event()

    async def together() -> None:
        if all(s in fake.started() for s in PHASE1):
            begun.set()
        await asyncio.wait_for(begun.wait(), timeout=30)

    fake.behaviours.update(dict.fromkeys(PHASE1, together))
    job_id = new_job()

    state = run_job(job_id)

    assert state.is_completed(), state
    assert sorted(fake.started()) == sorted(STEP_IDS)
    position = {(kind, s): i for i, (kind, s) in enumerate(fake.log)}
    for step in catalogue.STEPS:
        for need in step.needs:
            assert position[("end", need)] < position[("start", step.id)], (need, step.id)
    # Prefect draws the same graph: each step's task run waits for its needs' runs alone.
    assert graph_edges(state.state_details.flow_run_id) == {
        s.id: set(s.needs) for s in catalogue.STEPS
    }
    job = view(job_id)
    assert job["status"] == JobStatus.COMPLETED
    # One shape of result, whichever client answered: the fields the step gives.
    for s in job["steps"]:
        assert s["status"] == StepStatus.COMPLETED, s
        assert s["result_data"] == ANSWERS[s["step_id"]], s["step_id"]


def test_a_stale_owners_writes_are_refused(fake: FakeSystems) -> None:
    job_id = new_job()

    async def taken_over() -> None:
        # A newer run of the same flow run (Prefect's retry of it after a crash, say)
        # takes the job under a new epoch while this step is under way.
        await asyncio.to_thread(
            transaction,
            ledger.begin_run,
            job_id=job_id,
            flow_run_id=flow_run.get_id(),
            run_count=2,
        )

    fake.behaviours["restaurant_registration"] = taken_over

    state = run_job(job_id)

    assert state.is_cancelled(), state
    steps = steps_of(job_id)
    # The old run's result was not written, and it started nothing more.
    assert steps["restaurant_registration"]["status"] == StepStatus.PENDING
    assert steps["restaurant_registration"]["result_data"] is None
    after = {s for s in STEP_IDS if "restaurant_registration" in catalogue.ancestors(s)}
    assert not after & set(fake.started())
    assert view(job_id)["status"] == JobStatus.IN_PROGRESS  # the new owner's now


def test_cancel_stops_the_running_step_and_starts_no_other(fake: FakeSystems) -> None:
    job_id = new_job()
    cancelled_at: list[int] = []

    def cancel() -> None:
        transaction(ledger.cancel_job, job_id=job_id)
        # Marked in the thread: the run may stop this step before the await returns.
        cancelled_at.append(len(fake.log))

    async def cancelled_meanwhile() -> None:
        await asyncio.to_thread(cancel)
        await asyncio.Event().wait()  # until the run stops it

    fake.behaviours["services_configuration"] = cancelled_meanwhile

    state = run_job(job_id)

    assert state.is_cancelled(), state
    [mark] = cancelled_at
    assert [e for e in fake.log[mark:] if e[0] == "start"] == []
    assert ("end", "services_configuration") not in fake.log
    job = view(job_id)
    assert job["status"] == JobStatus.CANCELLED
    steps = steps_of(job_id)
    assert steps["services_configuration"]["status"] == StepStatus.CANCELLED
    assert steps["item_tags"]["status"] in (StepStatus.CANCELLED, StepStatus.COMPLETED)


def test_a_rerun_from_a_step_runs_it_and_its_dependents_only(fake: FakeSystems) -> None:
    job_id = new_job()
    assert run_job(job_id).is_completed()
    fake.log.clear()

    state = run_job(job_id, from_step="payment_configuration")

    assert state.is_completed(), state
    assert sorted(fake.started()) == ["onboarding_sync", "payment_configuration"]
    steps = steps_of(job_id)
    assert all(s["status"] == StepStatus.COMPLETED for s in steps.values())
    assert steps["payment_configuration"]["attempts"] == 2
    assert steps["menu_import"]["attempts"] == 1


def test_a_timed_out_attempt_is_a_retryable_failure_then_fails_the_step(
    fake: FakeSystems,
) -> None:
    # Code generation's own timeout (120 s) becomes 3.6 s; every other step is quick, and
    # its timeout is 3.6 s or more (at 0.005, 0.6-0.9 s, a loaded CI machine once timed
    # out account registration first, and code generation never ran).
    tune(REGJOBS_STEP_TIMEOUT_SCALE="0.03", REGJOBS_STEP_RETRIES="1")

    async def hangs() -> None:
        await asyncio.Event().wait()

    fake.behaviours["code_generation"] = hangs
    job_id = new_job()

    state = run_job(job_id)

    assert state.is_failed(), state
    assert fake.started("code_generation") == ["code_generation"] * 2
    # Both recorded, each a retryable failure: the first one retried by Prefect, the
    # second with the step's retries spent.
    attempts = attempts_of(job_id, "code_generation")
    assert [a.attempt for a in attempts] == [1, 2]
    for attempt in attempts:
        assert attempt.status == StepStatus.FAILED
        assert attempt.error_class == ErrorClass.RETRYABLE
        assert attempt.error_message == "the step took longer than its timeout"
    steps = steps_of(job_id)
    assert steps["code_generation"]["status"] == StepStatus.FAILED
    assert steps["code_generation"]["attempts"] == 2
    assert steps["website_configuration"]["status"] == StepStatus.SKIPPED
    assert steps["menu_import"]["status"] == StepStatus.COMPLETED
