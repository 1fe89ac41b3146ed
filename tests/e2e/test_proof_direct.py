""" "Already exists" proven in direct mode: the restaurant by its dashboard opening in the job's
own portal session (real Chromium), the onboarding user by a login to the onboarding
service. The endpoints-mode cases are in test_proof.py."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_proof import (
    ONBOARDING_FIELDS,
    USER_MISMATCH,
    completed,
    needs_a_person,
    settled,
)
from tests.helpers import NO_MENU, calls_of, create, effects, steps_by_id

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("guess", ["wrong", "right"])
@pytest.mark.usefixtures("direct_mode")
def test_direct_existing_restaurant_and_onboarding_user(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str, guess: str
) -> None:
    t = uuid.uuid4().hex[:8]
    email = f"zoë+{t}@café.example"
    password = "Zq9-Harbour-2024"
    name = f"Harbour Diner {t}"
    standin.post(
        "/platform/api/v1/accounts", json={"email": email, "password": password, "phone": ""}
    ).raise_for_status()
    registered = standin.post(
        "/api/registration/register-restaurant",
        json={
            "email": email,
            "password": password,
            "name": name,
            "registration_mode": "new_account_with_restaurant",
            "opening_hours": {},
        },
    ).json()
    user_email = f"chef+{t}@harbour-diner.example"
    owner_password = "Harbour-Diner-owner-2024"
    user = standin.post(
        "/onboarding/api/users",
        json={"name": "Zoë", "email": user_email, "password": owner_password},
    ).json()

    job = settled(
        api,
        create(
            api,
            restaurant_id,
            account={"register_new_user": False, "email": email, "password": password},
            restaurant={"name": name, "registration_mode": "existing_account_first_restaurant"},
            onboarding={
                "create_user": True,
                "sync_record": True,
                "user_name": "Not Zoë",
                "user_email": user_email,
                "user_password": owner_password if guess == "right" else "Harbour-Diner-2025",
            },
            menu=NO_MENU,
        ),
        guess == "wrong",
        timeout=240,
    )

    steps = steps_by_id(job)
    restaurant = steps["restaurant_registration"]
    # The portal's "already registered" page, proven by the dashboard in the same session.
    assert restaurant["status"] == "completed", restaurant
    assert "already registered" in restaurant["warning"]
    assert restaurant["result_data"] == {
        "restaurant_id": registered["restaurant_id"],
        "subdomain": registered["subdomain"],
        "dashboard_url": registered["dashboard_url"],
    }
    dashboard = f"/portal/r/{registered['subdomain']}/dashboard"
    opened = [c for c in calls_of(standin, "restaurant_registration") if c["path"] == dashboard]
    assert opened and opened[0]["status"] == 200, "the proof opens the dashboard"
    assert steps["payment_configuration"]["status"] == "completed"
    assert effects(standin)["restaurant_registration"] == 1
    records = standin.get("/_control/state").json()["onboarding"]["records"]
    logins = [c for c in calls_of(standin, "onboarding_user") if c["path"].endswith("/sessions")]
    if guess == "wrong":
        needs_a_person(job, "onboarding_user", USER_MISMATCH, ONBOARDING_FIELDS)
        assert steps["onboarding_sync"]["status"] == "pending"  # waits for the user
        assert records == {}
        assert [c["status"] for c in logins] == [401]
    else:
        completed(job)
        assert steps["onboarding_user"]["result_data"]["user_id"] == user["user_id"]
        assert "already exists" in steps["onboarding_user"]["warning"]
        assert records[registered["subdomain"]]["user_email"] == user_email
        assert [c["status"] for c in logins] == [200]
