"""A browser slot held by a step whose machine dies comes back: the worker's machine, or
Prefect's and the worker's together (the browser steps through real Chromium: test_browser.py;
apart from it so that the two, about 2.5 minutes, run beside it in another test process)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from deployments.stack import Stack
from regjobs.catalogue import STEPS
from tests.helpers import (
    browser_slots_in_use,
    create,
    effects,
    fault,
    flow_run_pids,
    kill_all,
    kill_worker,
    own_accounts,
    progress,
    steps_by_id,
    wait_for,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("direct_mode")]


@pytest.mark.slow
def test_a_dead_worker_gives_back_its_browser_slot(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    """The machine dies during a browser step: the job fails within 30 s, the slot its step
    held comes back once the worker is found lost, and a retry completes with each effect
    once. The step is restaurant registration, the only browser step running then: a
    settings form submitted in the instant the machine dies is submitted again by the retry
    (docs/design.md, "What a dead worker can repeat")."""
    direct = {"REGJOBS_STEP_MODE": "direct"}
    # The portal holds the step's page for 120 s and the browser waits for it, so the step
    # is mid-flight, slot held, when the machine goes.
    stack.stop_child("worker")
    stack.start_worker(env={**direct, "REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS": "150"})
    fault(standin, step="restaurant_registration", mode="slow", seconds=120, times=1)
    job_id = create(api, restaurant_id)
    wait_for(
        lambda: (
            progress(api, job_id)["step_statuses"]["restaurant_registration"] == "running"
            and browser_slots_in_use() >= 1
        ),
        timeout=90,
        what="restaurant registration to run, holding a browser slot",
    )
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
    try:
        killed = time.monotonic()  # before: kill_worker then waits for the worker to go
        kill_worker(stack, flow_run_id)
        wait_for(
            lambda: progress(api, job_id)["status"] == "failed",
            timeout=30,
            interval=0.5,
            what="the job to fail",
        )
        print(f"job failed {time.monotonic() - killed:.1f} s after the kill")
        step = steps_by_id(api.get(f"/api/registration-jobs/{job_id}").json())[
            "restaurant_registration"
        ]
        assert step["status"] == "failed" and "worker was lost" in step["error_message"]
        # The reconciler frees the dead step's lease, by its id, once it has found the
        # worker lost (no heartbeat for 20 s); else Prefect would when the lease ends,
        # 15-60 s after the kill (60 s leases, renewed every 0.75 of that). Nothing is
        # freed by count.
        wait_for(
            lambda: browser_slots_in_use() == 0,
            timeout=75 - (time.monotonic() - killed),
            interval=0.5,
            what="the dead step's browser slot to come back when its lease ends",
        )
        back = time.monotonic() - killed
        print(f"browser slot back {back:.1f} s after the kill")
        assert back >= 15, "a slot came back before its holder could be found dead"
    finally:
        stack.stop_child("worker")
        stack.start_worker(env=direct)

    api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
    assert watch_job(api, job_id, timeout=120).job["status"] == "completed"
    assert effects(standin) == {s.id: 1 for s in STEPS}


@pytest.mark.slow
def test_a_prefect_crash_while_two_browser_steps_hold_both_slots_heals(
    api: httpx.Client, standin: httpx.Client, stack: Stack
) -> None:
    """The machine of Prefect and the worker crashes while two browser steps hold both
    slots (Prefect server, worker and flow-run processes SIGKILLed), and comes back: the
    held jobs fail within 30 s, the slots their dead steps held come back (their leases are
    on disk, so the server frees them when they run out; a slot with no lease at all is
    given back by the reconciler), and a new job completes within 120 s of the restart."""
    direct = {"REGJOBS_STEP_MODE": "direct"}
    stack.stop_child("worker")
    stack.start_worker(env={**direct, "REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS": "150"})
    fault(standin, step="restaurant_registration", mode="slow", seconds=120, times=2)
    held = [create(api, tag, **own_accounts(tag)) for tag in ("held-a", "held-b")]
    wait_for(
        lambda: (
            all(
                progress(api, job_id)["step_statuses"]["restaurant_registration"] == "running"
                for job_id in held
            )
            and browser_slots_in_use() == 2
        ),
        timeout=120,
        what="both jobs to hold a browser slot",
    )
    runs = [api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"] for job_id in held]
    victims = [pid for run in runs for pid in flow_run_pids(run)]
    os.killpg(stack.children["prefect"].process.pid, signal.SIGKILL)
    kill_worker(stack, None)
    kill_all(victims)
    stack.stop_child("prefect")
    try:
        stack.start_prefect()
        restarted = time.monotonic()
        stack.start_worker(env=direct)
        wait_for(
            lambda: all(progress(api, job_id)["status"] == "failed" for job_id in held),
            timeout=30,
            interval=0.5,
            what="the held jobs to fail",
        )
        print(f"held jobs failed {time.monotonic() - restarted:.1f} s after the restart")
        fresh = create(api, "after-crash", **own_accounts("after-crash"))
        job = watch_job(api, fresh, timeout=120 - (time.monotonic() - restarted)).job
        print(f"a new job completed {time.monotonic() - restarted:.1f} s after the restart")
        assert job["status"] == "completed", job["error_message"]
    finally:
        stack.stop_child("worker")
        stack.start_worker(env=direct)
