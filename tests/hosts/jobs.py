"""Jobs on the test hosts, through their API."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from tests.helpers import full_config, steps_by_id, wait_for
from tests.hosts.harness import WORKERS, HostSystem

FINAL = {"completed", "failed", "cancelled"}


def new_job(api: httpx.Client) -> str:
    """A job of its own account and restaurant; a name in several scripts and a password
    that shares words with it, as people type them."""
    tag = uuid.uuid4().hex[:8]
    name = f"Škoda & Søn Grill №{tag} — 東京"
    config = full_config(
        account={"email": f"owner-{tag}@example.com", "password": f"Søn Grill {tag} 東京!"},
        restaurant={"name": name},
        onboarding={"user_email": f"staff-{tag}@example.com"},
    )
    response = api.post(
        "/api/registration-jobs", json={"restaurant_id": f"hosts-{tag}", "execution_config": config}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/api/registration-jobs/{job_id}")
    response.raise_for_status()
    return dict(response.json())


def wait_ended(api: httpx.Client, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    def ended() -> dict[str, dict[str, Any]] | None:
        jobs = {j: job(api, j) for j in job_ids}
        return jobs if all(j["status"] in FINAL for j in jobs.values()) else None

    deadline = time.monotonic() + timeout
    while (found := ended()) is None:
        if time.monotonic() > deadline:
            seen = {
                j: (v["status"], v.get("pending_reason"), v.get("error_message"))
                for j, v in ((j, job(api, j)) for j in job_ids)
            }
            raise AssertionError(f"timed out after {timeout} s waiting for jobs to end: {seen}")
        time.sleep(0.5)
    return found


def host_of(hosts: HostSystem, api: httpx.Client, job_id: str) -> str:
    """The worker host whose process runs the job's flow run."""
    run_id = wait_for(lambda: job(api, job_id).get("flow_run_id"), timeout=30, what="a run")
    found: str = wait_for(
        lambda: hosts.flow_run_hosts().get(run_id), timeout=30, what="a host to run the run"
    )
    return found


def jobs_on_both_workers(
    hosts: HostSystem, api: httpx.Client, standin: httpx.Client, step: str, hold: float
) -> dict[str, str]:
    """Jobs running `step` (held `hold` s by the stand-in) on each worker host: created one
    at a time until both hosts run at least one (8 at most); job id -> its host."""
    standin.post(
        "/_control/faults", json={"step": step, "mode": "slow", "seconds": hold, "times": 8}
    ).raise_for_status()
    placed: dict[str, str] = {}
    for _ in range(8):
        job_id = new_job(api)
        placed[job_id] = host_of(hosts, api, job_id)
        if set(placed.values()) == set(WORKERS):
            break
    assert set(placed.values()) == set(WORKERS), f"every job went to one host: {placed}"

    def running() -> bool:
        return all(steps_by_id(job(api, j))[step]["status"] == "running" for j in placed)

    wait_for(running, timeout=60, what=f"{step} to run in every job")
    return placed
