"""Kill the worker (with its flow runs) at many points of a job's life, restart it, retry:
every job completes and every side effect happened exactly once. Through the app's
endpoints, and in direct mode with the browser steps in real Chromium.

The kill points come from a seeded random list (KILL_SEED, KILL_POINTS), so a failure can
be replayed exactly. Five jobs live at once, each started so that the one kill finds it at
its own point, from "not yet claimed by the worker" to "after its last step". The lease is
short here (4 s, beats every second) so the test does not wait 20 s per round; the
production default is measured in test_control.py.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import httpx
import pytest

from deployments.stack import Stack
from regjobs.catalogue import STEP_IDS, StepKind, step
from tests.helpers import (
    FINAL_JOB,
    create,
    effects,
    fault,
    flow_run_pids,
    kill_all,
    kill_worker,
    own_accounts,
    soak,
    wait_for,
    watch_job,
)

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("KILL_SEED", "20261129"))
#: 20 kill points a mode; 4 in CI's bounded form (`tests.helpers.soak`).
POINTS = int(os.environ.get("KILL_POINTS", soak(20, 4)))
AT_ONCE = 5
FAST_LEASE = {"REGJOBS_WORKER_LOST_SECONDS": "4", "REGJOBS_HEARTBEAT_SECONDS": "1"}
#: How late in a job's life a kill may come, by mode (past the last step either way).
LATEST = {"endpoints": 9.0, "direct": 45.0}


@pytest.fixture(params=["endpoints", "direct"])
def mode(request: pytest.FixtureRequest, stack: Stack) -> Iterator[str]:
    worker_env = {**FAST_LEASE, "REGJOBS_STEP_MODE": request.param}
    stack.stop_child("api")
    stack.start_api(env=FAST_LEASE)
    stack.stop_child("worker")
    stack.start_worker(env=worker_env)
    try:
        yield str(request.param)
    finally:
        # The session's worker comes back even if the API's restart fails: a worker left in
        # this test's mode would run every later test's jobs in it.
        try:
            stack.stop_child("api")
            stack.start_api()
        finally:
            stack.stop_child("worker")
            stack.start_worker()


def settled(api: httpx.Client, job_id: str, what: str) -> str:
    """The job's status once it ended (a job killed before it was claimed just runs)."""

    def ended() -> str | None:
        status = str(api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"])
        return status if status in FINAL_JOB else None

    return str(wait_for(ended, timeout=120, interval=0.5, what=what))


def kill_everything(stack: Stack, api: httpx.Client, jobs: list[str]) -> None:
    """The worker's machine dies: the worker and every flow-run process, at once."""
    runs = [api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"] for job_id in jobs]
    victims = [pid for run in runs if run for pid in flow_run_pids(run)]
    kill_worker(stack, None)
    kill_all(victims)


@pytest.mark.timeout(1500)  # 20 kill points with real Chromium: 8-10 min on this machine
def test_kill_the_worker_anywhere_and_resume(
    api: httpx.Client, standin: httpx.Client, stack: Stack, mode: str
) -> None:
    rng = random.Random(f"{SEED}-{mode}")
    points = [round(rng.uniform(0.0, LATEST[mode]), 2) for _ in range(POINTS)]
    worker_env = {**FAST_LEASE, "REGJOBS_STEP_MODE": mode}
    killed_while: list[str] = []
    for first in range(0, len(points), AT_ONCE):
        delays = sorted(points[first : first + AT_ONCE], reverse=True)
        standin.post("/_control/reset").raise_for_status()
        for s in STEP_IDS:
            if step(s).kind is StepKind.API or mode == "endpoints":
                fault(standin, step=s, mode="slow", seconds=0.3)
        # Start each job `delay` seconds before the one kill: the latest point first.
        kill_at = time.monotonic() + delays[0]
        jobs = []
        for n, delay in enumerate(delays):
            time.sleep(max(0.0, kill_at - delay - time.monotonic()))
            tag = f"kill-{SEED}-{mode}-{first + n}-{time.time_ns()}"
            jobs.append(create(api, tag, **own_accounts(tag)))
        time.sleep(max(0.0, kill_at - time.monotonic()))  # the kill point, not a wait
        killed_while += [
            api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"] for job_id in jobs
        ]
        kill_everything(stack, api, jobs)
        stack.start_worker(env=worker_env)

        ended = {
            job_id: settled(api, job_id, f"job killed at {delay} s to settle")
            for job_id, delay in zip(jobs, delays, strict=True)
        }
        # Every job the kill stopped is retried at once; then each is watched to its end.
        retried = [job_id for job_id, status in ended.items() if status != "completed"]
        for job_id in retried:
            api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
        for job_id in retried:
            ended[job_id] = watch_job(api, job_id, timeout=300).job["status"]
        for job_id, delay in zip(jobs, delays, strict=True):
            assert ended[job_id] == "completed", (
                mode,
                delay,
                api.get(f"/api/registration-jobs/{job_id}").text,
            )
        # Calls the killed processes had in flight end in the stand-in too; then count.
        wait_for(
            lambda: all(c["end"] for c in standin.get("/_control/calls").json()),
            timeout=30,
            what="calls in flight to end",
        )
        assert effects(standin) == dict.fromkeys(STEP_IDS, len(jobs)), (mode, delays)
    print(
        f"kill-and-resume ({mode}): {len(points)} kill points (seed {SEED}), every job "
        f"completed, every effect once; killed while {sorted(set(killed_while))}"
    )
    assert len(points) == POINTS >= soak(20, 4)
