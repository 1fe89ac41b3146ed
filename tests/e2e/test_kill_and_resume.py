"""Kill the worker (with its flow runs) at many points of a job's life, restart it, retry:
every job completes and every side effect happened exactly once.

The kill points come from a seeded random list (KILL_SEED, KILL_POINTS), so a failure can
be replayed exactly. The lease is short here (4 s, beats every second) so the test does
not wait 20 s per point; the production default is measured in test_control.py.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import httpx
import pytest

from deployments.stack import Stack
from regjobs.catalogue import STEP_IDS
from tests.helpers import FINAL_JOB, create, effects, kill_worker, wait_for, watch_job

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("KILL_SEED", "20261129"))
POINTS = int(os.environ.get("KILL_POINTS", "20"))
FAST_LEASE = {"REGJOBS_WORKER_LOST_SECONDS": "4", "REGJOBS_HEARTBEAT_SECONDS": "1"}


@pytest.fixture
def fast_lease(stack: Stack) -> Any:
    stack.stop_child("api")
    stack.start_api(env=FAST_LEASE)
    stack.stop_child("worker")
    stack.start_worker(env=FAST_LEASE)
    try:
        yield
    finally:
        stack.stop_child("api")
        stack.start_api()
        stack.stop_child("worker")
        stack.start_worker()


@pytest.mark.usefixtures("fast_lease")
def test_kill_the_worker_anywhere_and_resume(
    api: httpx.Client, standin: httpx.Client, stack: Stack
) -> None:
    rng = random.Random(SEED)
    # From the POST (nothing started yet) to well past the last step (0.3 s per call).
    points = [round(rng.uniform(0.0, 9.0), 2) for _ in range(POINTS)]
    outcomes: list[str] = []
    for n, delay in enumerate(points):
        standin.post("/_control/reset").raise_for_status()
        for step in STEP_IDS:
            standin.post(
                "/_control/faults", json={"step": step, "mode": "slow", "seconds": 0.3}
            ).raise_for_status()
        job_id = create(api, f"kill-{SEED}-{n}-{time.time_ns()}")
        time.sleep(delay)  # the kill point itself, not a wait for a condition
        status = api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"]
        kill_worker(stack, api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"])
        stack.start_worker(env=FAST_LEASE)

        def settled(job_id: str = job_id) -> str | None:
            current = api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"]
            return current if current in FINAL_JOB else None

        # A job killed before its flow run was claimed is still queued: the new worker runs
        # it. One claimed by the dead worker stays Pending in Prefect: failed after 30 s.
        ended = wait_for(
            settled,
            timeout=90,
            interval=0.2,
            what=f"job {n} (killed at {delay} s, {status}) to settle: "
            f"{api.get(f'/api/registration-jobs/{job_id}').text}",
        )
        if ended != "completed":
            api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
            ended = watch_job(api, job_id, timeout=60).job["status"]
        assert ended == "completed", (n, delay)
        # Calls the killed process had in flight end in the stand-in too; then count.
        wait_for(
            lambda: all(c["end"] for c in standin.get("/_control/calls").json()),
            timeout=10,
            what="calls in flight to end",
        )
        assert effects(standin) == dict.fromkeys(STEP_IDS, 1), (n, delay)
        outcomes.append(status)
    print(
        f"kill-and-resume: {len(points)} kill points (seed {SEED}), all jobs completed, "
        f"every effect once; killed while {sorted(set(outcomes))}"
    )
    assert len(points) >= 20
