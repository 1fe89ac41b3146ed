"""The operator's command line, `regjobs`, run as an operator runs it (a process, its output
captured) against the real system."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

import httpx
import pytest

from deployments.stack import Stack
from regjobs.catalogue import STEPS
from tests.helpers import create, fault, full_config, wait_for

pytestmark = [pytest.mark.e2e]


def regjobs(
    stack: Stack, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regjobs.cli", *args],
        env={
            **stack.env(),
            "REGJOBS_API_URL": stack.config.api_url,
            "REGJOBS_API_KEY": stack.dev_api_key(),
            "COLUMNS": "200",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_jobs_watch_follows_a_job_to_its_end(
    stack: Stack, api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="menu_import", mode="slow", seconds=2, times=1)
    job_id = create(api, restaurant_id)
    watched = regjobs(stack, "jobs", "watch", job_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert watched.stdout.rstrip().endswith("job completed")
    for step in STEPS:
        assert step.label in watched.stdout
    shown = regjobs(stack, "jobs", "show", job_id)
    assert shown.returncode == 0 and "completed 100%" in shown.stdout
    listed = regjobs(stack, "jobs", "ls", "--restaurant", restaurant_id)
    assert job_id in listed.stdout
    again = regjobs(stack, "jobs", "retry", job_id)
    assert again.returncode == 1 and "409" in again.stdout  # nothing to retry
    missing = regjobs(stack, "jobs", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "404" in missing.stdout


def test_doctor_says_healthy_then_names_the_missing_worker(stack: Stack) -> None:
    healthy = regjobs(stack, "doctor")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "all good" in healthy.stdout
    stack.stop_child("worker")
    try:
        # A worker counts as alive while it polls; the last poll ages out in ~13 s here.
        broken = wait_for(
            lambda: (done := regjobs(stack, "doctor")).returncode == 1 and done,
            timeout=60,
            interval=1,
            what="doctor to find no live worker",
        )
    finally:
        stack.start_worker()
    assert "not healthy: a live worker" in broken.stdout
    assert "prefect worker start" in broken.stdout
    assert "all good" in regjobs(stack, "doctor").stdout


def test_keys_and_db_commands(stack: Stack) -> None:
    created = regjobs(stack, "keys", "create", "--organisation", "cli-org", "--label", "ops")
    assert created.returncode == 0
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("rj_")
    listed = regjobs(stack, "keys", "list")
    assert key[:11] in listed.stdout
    assert regjobs(stack, "keys", "revoke", key[:11]).returncode == 0
    assert regjobs(stack, "db", "upgrade").returncode == 0
    body = {"restaurant_id": "cli", "execution_config": full_config()}
    answer = httpx.post(
        f"{stack.config.api_url}/api/registration-jobs",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 401
    assert os.environ.get("REGJOBS_API_KEY") is None
