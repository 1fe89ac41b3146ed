"""Helpers for tests that drive the real system over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

FINAL_JOB = {"completed", "failed", "cancelled"}


class JobWatch:
    """What a poller saw of one job: every status each step was seen in, and the end."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.job: dict[str, Any] = {}

    def saw(self, step_id: str, status: str) -> bool:
        return status in self.seen.get(step_id, set())


def wait_for(
    check: Callable[[], Any], *, timeout: float = 60, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until `check` returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def watch_job(api: httpx.Client, job_id: str, *, timeout: float = 90) -> JobWatch:
    """Poll /progress until the job ends, recording every step status seen on the way."""
    watch = JobWatch()

    def ended() -> bool:
        response = api.get(f"/api/registration-jobs/{job_id}/progress")
        response.raise_for_status()
        progress = response.json()
        for step_id, status in progress["step_statuses"].items():
            watch.seen.setdefault(step_id, set()).add(status)
        return bool(progress["status"] in FINAL_JOB)

    wait_for(ended, timeout=timeout, interval=0.1, what=f"job {job_id} to end")
    watch.job = api.get(f"/api/registration-jobs/{job_id}").json()
    return watch


def steps_by_id(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in job["steps"]}


def full_config(**overrides: Any) -> dict[str, Any]:
    """The example config with every optional step on, sections overridden as given."""
    from deployments.demo import DEMO_CONFIG

    config = {k: dict(v) if isinstance(v, dict) else v for k, v in DEMO_CONFIG.items()}
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return config
