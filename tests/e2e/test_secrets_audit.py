"""The secrets audit against hostile outside systems, end to end in direct mode: a portal
whose password field cannot be filled (Playwright's error then quotes the password in its
call log) and outside systems that echo the request, password included, in their error.
After each, the job's distinctive password appears 0 times anywhere: the Prefect database
(task-run states and their history, logs, artifacts, run inputs, every file), the job
database (every column), every process log, every API answer about the job, every
screenshot (which must show the password field masked)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from deployments.stack import Stack
from regjobs.secrets import MASK
from tests.helpers import (
    MASK_COLOUR,
    NO_MENU,
    create,
    fault,
    give_input,
    occurrences,
    png_colour_count,
    secrets_haystacks,
    steps_by_id,
    task_runs,
    wait_for_person,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("direct_mode")]


def task_run_messages(job: dict[str, Any], *steps: str) -> dict[str, str]:
    """The final state message of the job's task runs, by task name, once each of `steps`
    has a task run in a final state."""
    runs = task_runs(job["flow_run_id"], steps)
    return {r.name: (r.state.message or "") if r.state else "" for r in runs.values()}


def test_a_password_field_that_cannot_be_filled_leaks_nothing(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Any, restaurant_id: str
) -> None:
    password = f"Hostile-Portal-{uuid.uuid4().hex}-pw"
    standin.post("/_control/config", json={"portal_password_disabled": True}).raise_for_status()
    created = api.post(
        "/api/registration-jobs",
        json={"restaurant_id": restaurant_id, "execution_config": _config(password)},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    job = watch_job(api, job_id, timeout=180).job

    step = steps_by_id(job)["restaurant_registration"]
    assert job["status"] == "failed"
    # Every attempt waited for the disabled field in fill() until Playwright gave up: its
    # error's call log quoted the password; what was kept is its first line.
    assert (step["status"], step["attempts"]) == ("failed", 4), step
    assert step["error_message"].startswith("TimeoutError: Locator.fill: Timeout"), step
    assert "Call log" not in step["error_message"]
    messages = task_run_messages(job, "restaurant_registration")
    assert "StepAttemptFailed" in messages["Restaurant registration"], messages
    assert len(step["evidence"]) == 4

    haystacks = secrets_haystacks(api, stack, db, job_id, created)
    assert occurrences(password, haystacks) == {}
    # The audit looked where it should: the failure reached Prefect, the logs, the ledger.
    assert any(b"Restaurant registration attempt 4 failed" in d for d in haystacks.values())
    shots = {name: data for name, data in haystacks.items() if name.startswith("screenshot")}
    assert len(shots) == 4
    for name, data in shots.items():
        # The login page with its password field painted over.
        assert png_colour_count(data, MASK_COLOUR) > 100, name


def test_an_outside_system_that_echoes_the_password_leaks_nothing(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Any, restaurant_id: str
) -> None:
    password = f"Hostile-Echo-{uuid.uuid4().hex}-pw"
    owner_password = f"Hostile-Owner-{uuid.uuid4().hex}-pw"
    # The platform API echoes it once (retried: Prefect logs the retry), the onboarding
    # service every time (not retryable: the task run's Failed state carries the message).
    fault(standin, step="account_registration", mode="echo", status=500, times=1)
    fault(standin, step="onboarding_user", mode="echo", status=400)
    job_id = create(
        api,
        restaurant_id,
        account={"password": password},
        onboarding={"user_password": owner_password},
        menu=NO_MENU,
    )
    job = watch_job(api, job_id, timeout=180).job

    steps = steps_by_id(job)
    assert job["status"] == "failed"
    assert (steps["account_registration"]["status"], steps["account_registration"]["attempts"]) == (
        "completed",
        2,
    )
    user = steps["onboarding_user"]
    assert (user["status"], user["attempts"]) == ("failed", 1)
    # The echo arrived, and was masked before it went anywhere.
    assert "injected fault: rejected" in user["error_message"]
    assert MASK in user["error_message"]
    messages = task_run_messages(job, "onboarding_user")
    assert "StepAttemptFailed" in messages["Onboarding user"], messages
    assert MASK in messages["Onboarding user"]
    echoed = [c for c in standin.get("/_control/calls").json() if c["fault"] == "echo"]
    assert {c["step"] for c in echoed} == {"account_registration", "onboarding_user"}

    haystacks = secrets_haystacks(api, stack, db, job_id)
    for secret in (password, owner_password):
        assert occurrences(secret, haystacks) == {}, secret
    assert any(b"Retry 1/3" in d for d in haystacks.values()), "Prefect logged the retry"


def test_a_job_waiting_for_a_corrected_password_leaks_neither_password(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Any, restaurant_id: str
) -> None:
    """The mistyped password, the one still refused and the right one: none of them is in
    Prefect (its run inputs, `flow_run_input`, included), the job database, a log or an
    answer, though the run was suspended and resumed with a person's input."""
    tag = uuid.uuid4().hex
    right = f"Kāinga Pizza {tag} ✓"
    mistyped, refused = f"Kāinga Pizza {tag} x", f"Kāinga pizza {tag} ✓"
    email = f"audit-{tag[:8]}@example.com"
    standin.post("/_control/accounts", json={"email": email, "password": right}).raise_for_status()
    job_id = create(
        api,
        restaurant_id,
        account={"email": email, "password": mistyped},
        restaurant={"name": f"Kāinga Pizza {tag[:6]}", "subdomain": None},
        menu=NO_MENU,
    )
    wait_for_person(api, job_id)
    still = give_input(api, job_id, account={"password": refused})
    assert still.status_code == 422
    answer = give_input(api, job_id, account={"password": right})
    assert answer.status_code == 200, answer.text
    job = watch_job(api, job_id, timeout=180).job
    assert job["status"] == "completed", job

    haystacks = secrets_haystacks(api, stack, db, job_id, still, answer)
    for secret in (right, mistyped, refused):
        assert occurrences(secret, haystacks) == {}, secret
    # The audit looked where it should: the run input Prefect was resumed with is there.
    inputs = haystacks[f"flow run inputs {job['flow_run_id']}"]
    assert b"config_version" in inputs and b"regjobs jobs input" in inputs, inputs


def _config(password: str) -> dict[str, Any]:
    from tests.helpers import full_config

    return full_config(account={"password": password}, menu=NO_MENU)
