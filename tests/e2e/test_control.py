"""Controlling jobs: start, cancel, retry, reruns from Prefect, one active job per
restaurant, organisations and keys, dead flow-run processes. All over HTTP against a real
Prefect server and worker."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from deployments.stack import Stack
from deployments.stack_config import FLOW_RUN_NICE
from regjobs.catalogue import STEP_IDS
from tests.helpers import (
    calls_of,
    create,
    effects,
    fault,
    flow_run_pids,
    flow_run_state,
    full_config,
    hold_step,
    kill_worker,
    steps_by_id,
    wait_for,
    wait_step,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.database]


# ------------------------------------------------------------------------------ cancel


def test_cancel_during_a_held_step(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="restaurant_registration", mode="slow", seconds=30)
    job_id = create(api, restaurant_id)
    wait_step(api, job_id, "restaurant_registration", "running")

    asked = time.monotonic()
    answer = api.post(f"/api/registration-jobs/{job_id}/cancel")
    answered_at = time.time()
    took = time.monotonic() - asked
    print(f"cancel answered in {took:.2f} s")
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and answer.json()["status"] == "cancelled"
    assert took < 2

    def cancelled() -> dict[str, Any] | None:
        job = dict(api.get(f"/api/registration-jobs/{job_id}").json())
        return job if job["status"] == "cancelled" else None

    job = wait_for(cancelled, timeout=10, what="the job to be cancelled")
    step = steps_by_id(job)["restaurant_registration"]
    assert step["status"] == "cancelled"
    assert {s["status"] for s in job["steps"][4:]} == {"cancelled"}
    wait_for(
        lambda: flow_run_state(job["flow_run_id"])[0] is StateType.CANCELLED,
        timeout=30,
        what="Prefect to end the flow run Cancelled",
    )
    started_after = [c for c in standin.get("/_control/calls").json() if c["start"] > answered_at]
    assert started_after == []
    # Cancelling an ended job is a conflict.
    again = api.post(f"/api/registration-jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_cancel_from_prefect_shows_as_cancelled(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    fault(standin, step="menu_import", mode="slow", seconds=30)
    job_id = create(api, restaurant_id)
    wait_step(api, job_id, "menu_import", "running")
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]

    stack.run([sys.executable, "-m", "prefect", "flow-run", "cancel", flow_run_id])

    job = watch_job(api, job_id, timeout=30).job
    assert job["status"] == "cancelled"
    assert steps_by_id(job)["menu_import"]["status"] == "cancelled"
    assert steps_by_id(job)["item_tags"]["status"] in ("cancelled", "skipped")


# ------------------------------------------------------------------------------- retry


def test_retry_after_a_failure_runs_only_what_did_not_complete(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="menu_import", mode="status", status=400)
    job = watch_job(api, create(api, restaurant_id)).job
    steps = steps_by_id(job)
    assert job["status"] == "failed"
    assert steps["menu_import"]["status"] == "failed"
    for skipped in ("option_sets", "item_tags"):
        assert steps[skipped]["status"] == "skipped"
        assert "Menu import" in steps[skipped]["skip_reason"]
    for done in STEP_IDS[5:9]:
        assert steps[done]["status"] == "completed", done

    # Retrying a failed job while the fault stays would fail again; clear it first.
    standin.delete("/_control/faults").raise_for_status()
    answer = api.post(f"/api/registration-jobs/{job['id']}/retry", json={})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "in_progress"
    # While it runs, another retry is a conflict.
    assert api.post(f"/api/registration-jobs/{job['id']}/retry").status_code == 409

    retried = watch_job(api, job["id"]).job
    assert retried["status"] == "completed"
    assert retried["flow_run_id"] != job["flow_run_id"]  # a new flow run
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)
    # Attempts count across runs: one in the first run, one in the retry.
    assert steps_by_id(retried)["menu_import"]["attempts"] == 2
    assert steps_by_id(retried)["option_sets"]["attempts"] == 1
    # A completed job has nothing to retry without from_step.
    assert api.post(f"/api/registration-jobs/{job['id']}/retry").status_code == 409


def test_retry_from_a_completed_step_reruns_it_and_its_dependents_only(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    job = watch_job(api, create(api, restaurant_id)).job
    assert job["status"] == "completed"
    before = effects(standin)

    answer = api.post(
        f"/api/registration-jobs/{job['id']}/retry", json={"from_step": "website_configuration"}
    )
    assert answer.status_code == 200, answer.text
    again = watch_job(api, job["id"]).job

    assert again["status"] == "completed"
    after = effects(standin)
    assert after["website_configuration"] == before["website_configuration"] + 1
    assert {k: v for k, v in after.items() if k != "website_configuration"} == {
        k: v for k, v in before.items() if k != "website_configuration"
    }


def test_retry_from_menu_import_reruns_the_menu_chain(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    job = watch_job(api, create(api, restaurant_id)).job
    before = effects(standin)
    api.post(
        f"/api/registration-jobs/{job['id']}/retry", json={"from_step": "menu_import"}
    ).raise_for_status()
    assert watch_job(api, job["id"]).job["status"] == "completed"
    after = effects(standin)
    chain = {"menu_import", "option_sets", "item_tags"}
    assert {k for k in STEP_IDS if after[k] != before[k]} == chain


def test_prefect_deployment_run_resumes_the_same_job(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    fault(standin, step="option_sets", mode="status", status=422)
    job = watch_job(api, create(api, restaurant_id)).job
    assert job["status"] == "failed"
    standin.delete("/_control/faults").raise_for_status()

    stack.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "registration-job/registration-job",
            "--param",
            f"job_id={job['id']}",
        ]
    )

    def resumed() -> dict[str, Any] | None:
        current = dict(api.get(f"/api/registration-jobs/{job['id']}").json())
        moved = current["flow_run_id"] != job["flow_run_id"]
        return current if moved and current["status"] == "completed" else None

    done = wait_for(resumed, timeout=60, what="the deployment run to complete the job")
    assert steps_by_id(done)["option_sets"]["status"] == "completed"
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)


@pytest.mark.slow
def test_kill_the_flow_run_process_fails_the_job_and_retry_completes(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "payment_configuration", 30)
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
    pids = flow_run_pids(flow_run_id)
    assert pids, "the flow-run process was not found"

    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def failed() -> dict[str, Any] | None:
        job = dict(api.get(f"/api/registration-jobs/{job_id}").json())
        return job if job["status"] == "failed" else None

    job = wait_for(failed, timeout=10, what="the job to fail after the kill")
    print(f"job failed {time.monotonic() - killed:.1f} s after the kill")
    step = steps_by_id(job)["payment_configuration"]
    assert step["status"] == "failed"
    assert "worker was lost" in step["error_message"]
    # The database says so too: the restaurant is free again.
    active = api.get(f"/api/restaurants/{restaurant_id}/registration-jobs/active").json()
    assert active == {"job": None}

    api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
    retried = watch_job(api, job_id).job
    assert retried["status"] == "completed"
    # The killed request finishes in the stand-in later; the idempotency key makes the
    # retry's call and that one a single effect.
    wait_for(
        lambda: all(c["end"] for c in calls_of(standin, "payment_configuration")),
        timeout=40,
        what="the held payment call to end",
    )
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)


# ------------------------------------------------------------- start, active, idempotency


def test_start_a_job_created_without_auto_start(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    created = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id,
            "auto_start": False,
            "execution_config": full_config(),
        },
    )
    assert created.status_code == 201
    job_id = created.json()["job_id"]
    assert created.json()["flow_run_id"] is None
    job = api.get(f"/api/registration-jobs/{job_id}").json()
    assert job["status"] == "pending" and job["current_step"] == 0
    active = api.get(f"/api/restaurants/{restaurant_id}/registration-jobs/active").json()
    assert active["job"]["id"] == job_id
    assert standin.get("/_control/calls").json() == []

    started = api.post(f"/api/registration-jobs/{job_id}/start")
    assert started.status_code == 200, started.text
    assert api.post(f"/api/registration-jobs/{job_id}/start").status_code == 409
    assert watch_job(api, job_id).job["status"] == "completed"
    after = api.get(f"/api/restaurants/{restaurant_id}/registration-jobs/active").json()
    assert after == {"job": None}


def test_one_active_job_per_restaurant_under_50_concurrent_creates(
    api: httpx.Client, db: Any, restaurant_id: str
) -> None:
    body = {"restaurant_id": restaurant_id, "auto_start": False, "execution_config": full_config()}
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: api.post("/api/registration-jobs", json=body), range(50)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 49, codes
    winner = next(a for a in answers if a.status_code == 201).json()["job_id"]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["detail"]["active_job_id"] == winner
    from sqlalchemy import func, select

    from regjobs.models import RegistrationJob

    with db.connect() as connection:
        count = connection.execute(
            select(func.count())
            .select_from(RegistrationJob)
            .where(RegistrationJob.restaurant_id == restaurant_id)
        ).scalar_one()
    assert count == 1
    assert api.post(f"/api/registration-jobs/{winner}/cancel").status_code == 200
    # Cancelled is not active: the restaurant can have a new job.
    assert api.post("/api/registration-jobs", json=body).status_code == 201


def test_idempotency_key_returns_the_original_job(api: httpx.Client, restaurant_id: str) -> None:
    body = {"restaurant_id": restaurant_id, "auto_start": False, "execution_config": full_config()}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.post("/api/registration-jobs", json=body, headers=key)
    second = api.post("/api/registration-jobs", json=body, headers=key)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["job_id"] == second.json()["job_id"]
    api.post(f"/api/registration-jobs/{first.json()['job_id']}/cancel").raise_for_status()


def test_concurrent_creates_with_one_idempotency_key_all_get_the_original_job(
    api: httpx.Client, db: Any, restaurant_id: str
) -> None:
    body = {"restaurant_id": restaurant_id, "auto_start": False, "execution_config": full_config()}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(
                lambda _: api.post("/api/registration-jobs", json=body, headers=key), range(20)
            )
        )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 19 + [201], codes
    assert len({a.json()["job_id"] for a in answers}) == 1
    api.post(f"/api/registration-jobs/{answers[0].json()['job_id']}/cancel").raise_for_status()


@pytest.mark.slow
def test_kill_the_worker_with_its_flow_runs_fails_the_job_within_30_s(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "menu_import", 30)
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
    assert flow_run_pids(flow_run_id), "the flow-run process was not found"
    # Flow runs yield the cores to the API (FLOW_RUN_NICE): the worker and the run's process.
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for pid in [stack.children["worker"].process.pid, *flow_run_pids(flow_run_id)]:
        assert os.getpriority(os.PRIO_PROCESS, pid) == own + FLOW_RUN_NICE, pid

    killed = time.monotonic()
    kill_worker(stack, flow_run_id)
    try:

        def failed() -> dict[str, Any] | None:
            job = dict(api.get(f"/api/registration-jobs/{job_id}").json())
            return job if job["status"] == "failed" else None

        job = wait_for(failed, timeout=30, interval=0.5, what="the job to fail")
        print(f"job failed {time.monotonic() - killed:.1f} s after the worker was killed")
        step = steps_by_id(job)["menu_import"]
        assert step["status"] == "failed"
        assert "worker was lost" in step["error_message"]
        # Prefect is told (by the reconciler, right after), so the run can be retried there.
        wait_for(
            lambda: flow_run_state(flow_run_id)[0] is StateType.CRASHED,
            timeout=10,
            what="Prefect to show the run Crashed",
        )
    finally:
        stack.stop_child("worker")
        stack.start_worker()

    api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
    assert watch_job(api, job_id).job["status"] == "completed"
    wait_for(
        lambda: all(c["end"] for c in calls_of(standin, "menu_import")),
        timeout=70,
        what="the held menu import to end",
    )
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)
