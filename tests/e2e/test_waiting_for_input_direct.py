"""Waiting for a person in direct mode: the admin portal in Chromium refuses the job's login
or a value typed into its restaurant form; while the job waits no flow-run process, no
Chromium and no browser slot is held; the right value goes on in the same flow run, every
outside effect once."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from regjobs.catalogue import STEP_IDS
from tests.helpers import (
    browser_slots_in_use,
    create,
    flow_run_state,
    give_input,
    held_by,
    steps_by_id,
    wait_for,
    wait_for_person,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("direct_mode")]

NAME = "Kāinga Pizza & Pasta <Ōtautahi>"
RIGHT = "Kāinga Pizza 2024 ✓ rā"
MISTYPED = "Kāinga Pizza 2023 ✓ rā"


def holds_nothing(job: dict[str, object]) -> None:
    """No flow-run process, Chromium or browser slot of the job while it waits (counted:
    the processes whose environment names its flow run, the ledger's slot holders, and
    Prefect's count of the browser limit's slots)."""
    flow_run_id, job_id = str(job["flow_run_id"]), str(job["id"])
    wait_for(
        lambda: (
            held_by(flow_run_id, job_id) == {"processes": [], "chromium": [], "slots": []}
            and browser_slots_in_use() == 0
        ),
        timeout=30,
        what=f"the suspended run of job {job_id} to hold nothing",
    )


def finished(api: httpx.Client, job_id: str, flow_run_id: str) -> dict[str, object]:
    job = watch_job(api, job_id, timeout=180).job
    assert job["status"] == "completed", job
    assert job["flow_run_id"] == flow_run_id
    wait_for(
        lambda: flow_run_state(flow_run_id)[0] is StateType.COMPLETED,
        timeout=30,
        what="the flow run to be Completed",
    )
    return dict(job)


def test_the_portal_refusing_the_login_waits_for_the_password(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    """A second restaurant under the owner's account, the password mistyped: the portal's
    login page refuses it (the account's own step is off: the account exists)."""
    email = f"aroha.{uuid.uuid4().hex[:8]}@example.com"
    standin.post("/_control/accounts", json={"email": email, "password": RIGHT}).raise_for_status()
    job_id = create(
        api,
        restaurant_id,
        account={"email": email, "password": MISTYPED, "register_new_user": False},
        restaurant={
            "name": NAME,
            "subdomain": None,
            "registration_mode": "existing_account_additional_restaurant",
        },
    )
    job = wait_for_person(api, job_id, timeout=120)
    waiting = job["action_required"]
    assert waiting["step_id"] == "restaurant_registration"
    assert waiting["fields"] == ["account.email", "account.password"]
    assert "login" in waiting["reason"]
    step = steps_by_id(job)["restaurant_registration"]
    assert (step["status"], step["attempts"]) == ("action_required", 1)
    holds_nothing(job)

    refused = give_input(api, job_id, account={"password": "Kāinga Pizza ✓"})
    assert refused.status_code == 422, refused.text
    assert api.get(f"/api/registration-jobs/{job_id}").json()["action_required"] == waiting

    assert give_input(api, job_id, account={"password": RIGHT}).status_code == 200
    done = finished(api, job_id, str(job["flow_run_id"]))
    steps = steps_by_id(done)
    assert steps["restaurant_registration"]["attempts"] == 2
    # The account's own step is off (the account exists); every other step ran once.
    assert (steps["account_registration"]["status"], steps["account_registration"]["attempts"]) == (
        "skipped",
        0,
    )
    others = set(STEP_IDS) - {"restaurant_registration", "account_registration"}
    assert {s: steps[s]["attempts"] for s in others} == dict.fromkeys(others, 1)
    effects = standin.get("/_control/effects").json()
    assert effects == {s: 0 if s == "account_registration" else 1 for s in STEP_IDS}
    accounts = standin.get("/_control/state").json()["accounts"]
    assert sum(1 for a in accounts.values() if a["email"] == email) == 1


def test_the_portal_form_refusing_the_phone_waits_for_another(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    unreachable = "+64 3 000 0000"
    standin.post(
        "/_control/config", json={"rejected_values": {"phone": [unreachable]}}
    ).raise_for_status()
    job_id = create(
        api, restaurant_id, restaurant={"name": NAME, "phone": unreachable, "subdomain": None}
    )
    job = wait_for_person(api, job_id, timeout=120)
    waiting = job["action_required"]
    assert (waiting["step_id"], waiting["fields"]) == (
        "restaurant_registration",
        ["restaurant.phone"],
    )
    assert steps_by_id(job)["restaurant_registration"]["attempts"] == 1
    holds_nothing(job)

    assert give_input(api, job_id, restaurant={"phone": unreachable}).status_code == 422
    assert give_input(api, job_id, restaurant={"phone": "+64 3 379 1234"}).status_code == 200
    done = finished(api, job_id, str(job["flow_run_id"]))
    assert steps_by_id(done)["restaurant_registration"]["attempts"] == 2
    assert standin.get("/_control/effects").json() == dict.fromkeys(STEP_IDS, 1)
