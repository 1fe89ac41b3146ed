"""A job end to end: the API over HTTP, a real Prefect server and worker, the stand-in."""

from __future__ import annotations

import sys

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from deployments.stack import Stack
from regjobs.catalogue import STEP_IDS
from tests.helpers import (
    calls_of,
    create,
    fault,
    flow_run_state,
    full_config,
    steps_by_id,
    wait_for,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.database]

PHASE1 = ("account_registration", "code_generation", "onboarding_user", "image_upload")


def test_job_completes_every_step_with_phase1_concurrent(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    for step in PHASE1:
        fault(standin, step=step, mode="slow", seconds=1, times=1)

    job_id = create(api, restaurant_id)
    watch = watch_job(api, job_id)

    job = watch.job
    assert job["status"] == "completed", job
    assert job["progress_percent"] == 100
    assert job["current_step"] == 12
    assert [s["status"] for s in job["steps"]] == ["completed"] * 12
    assert all(s["attempts"] == 1 for s in job["steps"])
    assert job["flow_run_id"] and job["started_at"] and job["completed_at"]
    steps = steps_by_id(job)
    assert steps["restaurant_registration"]["result_data"]["subdomain"] == "demo-pizza"
    # The four phase-1 steps ran at the same time: each started before any of them ended.
    first_calls = [calls_of(standin, step)[0] for step in PHASE1]
    assert max(c["start"] for c in first_calls) < min(c["end"] for c in first_calls)
    effects = standin.get("/_control/effects").json()
    assert effects == {step: 1 for step in STEP_IDS}


def test_503_twice_completes_on_third_attempt(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="code_generation", mode="status", status=503, times=2)

    watch = watch_job(api, create(api, restaurant_id))

    step = steps_by_id(watch.job)["code_generation"]
    assert watch.job["status"] == "completed"
    assert step["status"] == "completed"
    assert step["attempts"] == 3
    assert watch.saw("code_generation", "retrying")
    assert [c["status"] for c in calls_of(standin, "code_generation")] == [503, 503, 200]


def test_429_waits_for_retry_after(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="account_registration", mode="status", status=429, times=1, retry_after=1)

    watch = watch_job(api, create(api, restaurant_id))

    assert watch.job["status"] == "completed"
    assert steps_by_id(watch.job)["account_registration"]["attempts"] == 2
    first, second = calls_of(standin, "account_registration")
    assert first["status"] == 429
    # The backoff alone is ~0.5 s here; Retry-After asked for 1 s.
    assert second["start"] - first["end"] >= 1.0


def test_400_fails_the_step_and_skips_its_dependents_only(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="payment_configuration", mode="status", status=400)

    watch = watch_job(api, create(api, restaurant_id))

    job = watch.job
    steps = steps_by_id(job)
    assert job["status"] == "failed"
    assert "Payment configuration" in job["error_message"]
    assert steps["payment_configuration"]["status"] == "failed"
    assert steps["payment_configuration"]["attempts"] == 1
    assert "HTTP 400" in steps["payment_configuration"]["error_message"]
    assert steps["onboarding_sync"]["status"] == "skipped"
    assert "Payment configuration" in steps["onboarding_sync"]["skip_reason"]
    for independent in (
        "menu_import",
        "option_sets",
        "item_tags",
        "website_configuration",
        "services_configuration",
    ):
        assert steps[independent]["status"] == "completed", independent
    assert len(calls_of(standin, "payment_configuration")) == 1
    # 10 completed, 1 skipped (disabled or for the failure), the failed one not counted.
    assert job["progress_percent"] == 11 * 100 // 12
    assert (job["failed_step"], job["next_action"]) == ("payment_configuration", "fix_config")


def test_existing_account_completes_with_a_warning(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    config = full_config()
    standin.post(
        "/platform/api/v1/accounts",
        json={
            "email": config["account"]["email"],
            "password": config["account"]["password"],
            "phone": "",
        },
    ).raise_for_status()

    watch = watch_job(api, create(api, restaurant_id))

    step = steps_by_id(watch.job)["account_registration"]
    assert watch.job["status"] == "completed"
    assert step["status"] == "completed"
    assert "already exists" in step["warning"]
    assert step["result_data"]["email"] == config["account"]["email"]
    assert standin.get("/_control/effects").json()["account_registration"] == 1


def test_flow_run_retry_reuses_completed_steps(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    fault(standin, step="menu_import", mode="status", status=400)
    failed = watch_job(api, create(api, restaurant_id)).job
    assert failed["status"] == "failed"
    assert steps_by_id(failed)["option_sets"]["status"] == "skipped"
    before = standin.get("/_control/effects").json()
    assert before["menu_import"] == 0

    standin.delete("/_control/faults").raise_for_status()
    stack.run([sys.executable, "-m", "prefect", "flow-run", "retry", failed["flow_run_id"]])
    wait_for(
        lambda: flow_run_state(failed["flow_run_id"]) == (StateType.COMPLETED, 2),
        timeout=60,
        what="the retried flow run to complete",
    )

    job = watch_job(api, failed["id"]).job
    assert job["status"] == "completed"
    assert job["flow_run_id"] == failed["flow_run_id"]
    effects = standin.get("/_control/effects").json()
    assert effects == {step: 1 for step in STEP_IDS}

    # Re-running the now completed job's flow run executes nothing again.
    stack.run([sys.executable, "-m", "prefect", "flow-run", "retry", failed["flow_run_id"]])
    wait_for(
        lambda: flow_run_state(failed["flow_run_id"]) == (StateType.COMPLETED, 3),
        timeout=60,
        what="the second re-run to complete",
    )
    assert standin.get("/_control/effects").json() == effects
    assert watch_job(api, failed["id"]).job["status"] == "completed"


def test_endpoints_mode_runs_every_step_through_the_apps_endpoints(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    # The suite's worker runs in endpoints mode (see conftest); direct mode is
    # tests/e2e/test_browser.py.
    watch = watch_job(api, create(api, restaurant_id))

    assert watch.job["status"] == "completed", watch.job
    calls = standin.get("/_control/calls").json()
    assert {c["step"] for c in calls} == set(STEP_IDS)
    assert all(c["path"].startswith(("/api/registration/", "/menus/")) for c in calls), calls
    assert standin.get("/_control/effects").json() == {step: 1 for step in STEP_IDS}
