"""A step that needs a person (SPEC "Waiting for a person"), end to end through the app's
endpoints: the job waits holding nothing (its flow run Suspended in Prefect), a value still
refused is 422, the right one resumes the same flow run and every outside effect happens
once; cancel and two inputs at once; Prefect down when the input arrives."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from deployments.setup import WAITING_AUTOMATION
from deployments.stack import Stack
from regjobs.catalogue import STEP_IDS
from tests.helpers import (
    StepModes,
    create,
    flow_run_logs,
    flow_run_state,
    give_input,
    held_by,
    job_events,
    latest_artifact,
    steps_by_id,
    wait_for,
    wait_for_person,
    watch_job,
)

pytestmark = [pytest.mark.e2e]

#: The owner's password, and the mistyped ones: they share words with the restaurant's name.
NAME = "Kāinga Pizza & Pasta <Ōtautahi>"
RIGHT = "Kāinga Pizza 2024 ✓ rā"
MISTYPED = "Kāinga Pizza 2023 ✓ rā"
MISTYPED_AGAIN = "kāinga Pizza 2024 ✓ rā"
PHASE1_OTHERS = ("code_generation", "onboarding_user", "image_upload")


def owner(standin: httpx.Client) -> str:
    """An owner whose account exists from their first restaurant (its password: RIGHT)."""
    email = f"aroha.{uuid.uuid4().hex[:8]}@example.com"
    seeded = standin.post("/_control/accounts", json={"email": email, "password": RIGHT})
    assert seeded.status_code == 201, seeded.text
    return email


def second_restaurant(api: httpx.Client, restaurant_id: str, email: str, **sections: Any) -> str:
    """The owner's second restaurant, with the password as they typed it."""
    account = {"email": email, "password": MISTYPED, **sections.pop("account", {})}
    restaurant = {"name": NAME, "subdomain": None, **sections.pop("restaurant", {})}
    return create(api, restaurant_id, account=account, restaurant=restaurant, **sections)


def completed(flow_run_id: str) -> None:
    """The flow run ends Completed in Prefect (just after the job does in the ledger)."""
    wait_for(
        lambda: flow_run_state(flow_run_id)[0] is StateType.COMPLETED,
        timeout=30,
        what=f"flow run {flow_run_id} to be Completed",
    )


def assert_holds_nothing(job: dict[str, Any]) -> None:
    """No flow-run process, Chromium or browser slot of the job is left while it waits."""
    flow_run_id = job["flow_run_id"]
    wait_for(
        lambda: held_by(flow_run_id, job["id"]) == {"processes": [], "chromium": [], "slots": []},
        timeout=30,
        what=f"the suspended run of job {job['id']} to hold nothing",
    )


def test_the_mistyped_password_waits_then_goes_on_in_the_same_run(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    email = owner(standin)
    job_id = second_restaurant(api, restaurant_id, email)

    job = wait_for_person(api, job_id)
    waiting = job["action_required"]
    assert waiting["step_id"] == "account_registration"
    assert waiting["fields"] == ["account.email", "account.password"]
    assert waiting["since"] and waiting["expires_at"] > waiting["since"]
    assert (job["status"], job["next_action"]) == ("in_progress", "provide_input")
    steps = steps_by_id(job)
    # The first attempt, and no retry.
    assert (steps["account_registration"]["status"], steps["account_registration"]["attempts"]) == (
        "action_required",
        1,
    )
    flow_run_id = job["flow_run_id"]
    assert flow_run_state(flow_run_id) == (StateType.PAUSED, 1)
    assert_holds_nothing(job)
    # The operator's summary in Prefect says so: written before the run suspended.
    # (timeout 0: read once, not polled)
    latest_artifact(f"job-{job_id}", "**Waiting for a person**", timeout=0)
    # The branches that do not need the account went on.
    assert all(steps[s]["status"] == "completed" for s in PHASE1_OTHERS), steps
    assert steps["restaurant_registration"]["status"] == "pending"
    # Prefect has the events an automation notifies someone on, and the set-up's automation.
    wanted = {
        ("regjobs.job.waiting-for-input", None),
        ("regjobs.step.action_required", "account_registration"),
    }
    wait_for(lambda: wanted <= job_events(job_id), timeout=30, what="the waiting events")
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name(WAITING_AUTOMATION)) == 1

    # A value the platform still refuses: 422 naming the field, and the job keeps waiting.
    again = give_input(api, job_id, account={"password": MISTYPED_AGAIN})
    assert again.status_code == 422, again.text
    assert ["body", "execution_config", "account", "password"] in [
        e["loc"] for e in again.json()["detail"]
    ]
    unchanged = give_input(api, job_id, account={"password": MISTYPED})
    assert unchanged.status_code == 422, unchanged.text
    assert RIGHT not in again.text + unchanged.text and MISTYPED not in again.text
    assert api.get(f"/api/registration-jobs/{job_id}").json()["action_required"] == waiting
    assert flow_run_state(flow_run_id) == (StateType.PAUSED, 1)

    answer = give_input(api, job_id, account={"password": RIGHT})
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and answer.json()["status"] == "in_progress"

    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed", job
    assert job["action_required"] is None and job["next_action"] is None
    # The same flow run went on: Prefect resumed it, no second run was made.
    assert job["flow_run_id"] == flow_run_id
    completed(flow_run_id)
    steps = steps_by_id(job)
    assert steps["account_registration"]["attempts"] == 2
    assert "already" in (steps["account_registration"]["warning"] or "")
    assert all(steps[s]["attempts"] == 1 for s in STEP_IDS if s != "account_registration")
    # Every outside effect once; the account existed before and is not registered again.
    effects = standin.get("/_control/effects").json()
    assert effects == {s: 0 if s == "account_registration" else 1 for s in STEP_IDS}
    accounts = standin.get("/_control/state").json()["accounts"]
    assert [a for a in accounts.values() if a["email"] == email] != []
    assert sum(1 for a in accounts.values() if a["email"] == email) == 1
    messages = [log.message for log in flow_run_logs(flow_run_id)]
    assert any("waiting for a person" in m for m in messages), messages
    assert any("resumed with config version 2" in m for m in messages), messages


def test_the_portal_refusing_a_typed_value_waits_for_another(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    unreachable = "+64 3 000 0000"
    standin.post(
        "/_control/config", json={"rejected_values": {"phone": [unreachable]}}
    ).raise_for_status()
    job_id = create(
        api,
        restaurant_id,
        restaurant={"name": NAME, "phone": unreachable, "subdomain": None},
    )

    job = wait_for_person(api, job_id)
    waiting = job["action_required"]
    assert (waiting["step_id"], waiting["fields"]) == (
        "restaurant_registration",
        ["restaurant.phone"],
    )
    assert "phone" in waiting["reason"]
    assert steps_by_id(job)["restaurant_registration"]["attempts"] == 1
    assert flow_run_state(job["flow_run_id"]) == (StateType.PAUSED, 1)
    assert_holds_nothing(job)

    same = give_input(api, job_id, restaurant={"phone": unreachable})
    assert same.status_code == 422, same.text
    assert ["body", "execution_config", "restaurant", "phone"] in [
        e["loc"] for e in same.json()["detail"]
    ]
    bad = give_input(api, job_id, restaurant={"opening_hours": {"mon": [{"open": "25:00"}]}})
    assert bad.status_code == 422, bad.text

    assert give_input(api, job_id, restaurant={"phone": "+64 3 379 1234"}).status_code == 200
    flow_run_id = job["flow_run_id"]
    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed", job
    assert job["flow_run_id"] == flow_run_id
    completed(flow_run_id)
    assert standin.get("/_control/effects").json() == dict.fromkeys(STEP_IDS, 1)
    state = standin.get("/_control/state").json()
    subdomain = steps_by_id(job)["restaurant_registration"]["result_data"]["subdomain"]
    assert state["restaurants"][subdomain]["phone"] == "+64 3 379 1234"


def test_cancel_while_waiting_and_input_after_it_is_409(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    job_id = second_restaurant(api, restaurant_id, owner(standin))
    job = wait_for_person(api, job_id)
    cancel = api.post(f"/api/registration-jobs/{job_id}/cancel")
    assert cancel.status_code == 200, cancel.text
    wait_for(
        lambda: flow_run_state(job["flow_run_id"])[0] is StateType.CANCELLED,
        timeout=30,
        what="the suspended flow run to be cancelled in Prefect",
    )
    ended = api.get(f"/api/registration-jobs/{job_id}").json()
    assert ended["status"] == "cancelled" and ended["action_required"] is None
    assert give_input(api, job_id, account={"password": RIGHT}).status_code == 409
    assert standin.get("/_control/effects").json()["restaurant_registration"] == 0


@pytest.fixture
def short_input_timeout(stack: Stack, step_modes: StepModes) -> Iterator[float]:
    """The worker and its flow runs with a wait for a person that ends after a few seconds
    (REGJOBS_INPUT_TIMEOUT), in the endpoints mode; the stack's own worker again after."""
    seconds = 6.0
    step_modes.use("endpoints")
    stack.stop_child("worker")
    stack.start_worker(env={"REGJOBS_INPUT_TIMEOUT": str(seconds)})
    try:
        yield seconds
    finally:
        stack.stop_child("worker")
        stack.start_worker()


def test_a_wait_past_its_timeout_fails_the_job_with_fix_config(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str, short_input_timeout: float
) -> None:
    job_id = second_restaurant(api, restaurant_id, owner(standin))
    job = wait_for_person(api, job_id)
    waiting = job["action_required"]
    since, until = (datetime.fromisoformat(waiting[k]) for k in ("since", "expires_at"))
    assert (until - since).total_seconds() == pytest.approx(short_input_timeout, abs=1)

    ended = watch_job(api, job_id, timeout=60).job
    assert ended["status"] == "failed", ended
    assert (ended["failed_step"], ended["next_action"]) == ("account_registration", "fix_config")
    assert ended["action_required"] is None
    step = steps_by_id(ended)["account_registration"]
    assert (step["status"], step["attempts"]) == ("failed", 1)
    assert datetime.fromisoformat(ended["completed_at"]) >= until
    # Prefect's run ends too, not Suspended for ever; the input comes too late.
    wait_for(
        lambda: flow_run_state(job["flow_run_id"])[0] in (StateType.FAILED, StateType.CRASHED),
        timeout=30,
        what="the suspended flow run to end in Prefect",
    )
    assert give_input(api, job_id, account={"password": RIGHT}).status_code == 409
    assert standin.get("/_control/effects").json()["restaurant_registration"] == 0


def test_two_inputs_at_once_one_wins(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    job_id = second_restaurant(api, restaurant_id, owner(standin))
    wait_for_person(api, job_id)
    answers: list[httpx.Response] = []
    start = threading.Barrier(2)

    def send() -> None:
        start.wait()
        answers.append(give_input(api, job_id, account={"password": RIGHT}))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(a.status_code for a in answers)
    assert codes in ([200, 200], [200, 409]), [a.text for a in answers]
    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed", job
    assert steps_by_id(job)["account_registration"]["attempts"] == 2
    assert standin.get("/_control/effects").json()["restaurant_registration"] == 1


def test_input_while_prefect_is_down_resumes_once_it_is_back(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    job_id = second_restaurant(api, restaurant_id, owner(standin))
    job = wait_for_person(api, job_id)
    stack.stop_child("prefect")
    try:
        answer = give_input(api, job_id, account={"password": RIGHT})
        assert answer.status_code == 200, answer.text
        waiting = api.get(f"/api/registration-jobs/{job_id}").json()
        assert (waiting["status"], waiting["action_required"]) == ("in_progress", None)
    finally:
        stack.start_prefect()
    job = watch_job(api, job_id, timeout=180).job
    assert job["status"] == "completed", job
    completed(job["flow_run_id"])
    assert standin.get("/_control/effects").json()["restaurant_registration"] == 1


def test_an_operator_answers_with_regjobs_jobs_input(
    api: httpx.Client, standin: httpx.Client, stack: Stack, dev_key: str, restaurant_id: str
) -> None:
    """`regjobs jobs ls` shows who waits for what since when; `regjobs jobs input` prompts
    for the fields asked (the password not echoed), says what is still refused and asks
    again, and the job goes on."""
    from typer.testing import CliRunner

    from regjobs.cli import app

    email = owner(standin)
    job_id = second_restaurant(api, restaurant_id, email)
    wait_for_person(api, job_id)
    where = ["--api-url", stack.config.api_url, "--api-key", dev_key]
    runner = CliRunner()
    listed = runner.invoke(app, ["jobs", "ls", "--restaurant", restaurant_id, *where])
    print(listed.output)
    assert listed.exit_code == 0, listed.output
    assert "waiting" in listed.output and "account.password" in listed.output

    typed = f"{email}\n{MISTYPED_AGAIN}\n{email}\n{RIGHT}\n"
    answered = runner.invoke(app, ["jobs", "input", job_id, *where], input=typed)
    print(answered.output)
    assert answered.exit_code == 0, answered.output
    assert "still refused" in answered.output and "going on" in answered.output
    assert RIGHT not in answered.output and MISTYPED_AGAIN not in answered.output
    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed", job
