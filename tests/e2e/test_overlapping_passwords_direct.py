"""A password that shares text with the restaurant (issue 19), in direct mode: the API
steps call the platform, onboarding service and CDN, the browser steps drive the portal in
real Chromium, logging in with that password at every browser step."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from deployments.stack import Stack
from regjobs.secrets import MASK
from tests.e2e.test_overlapping_passwords import job_config, public_values
from tests.helpers import fault, occurrences, secrets_haystacks, steps_by_id, watch_job

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("direct_mode")]


def test_an_overlapping_password_completes_through_the_portal(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Any, restaurant_id: str
) -> None:
    # The account's password shares "harbour-" with the subdomain, the owner's is the name.
    password, owner_password = "Zq9-harbour-2024", "Harbour Diner"
    # One failed browser attempt, so a screenshot and its artifact are audited too.
    fault(
        standin,
        step="services_configuration",
        mode="hide_element",
        element="#save-services",
        times=1,
    )
    created = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id,
            "execution_config": job_config("Harbour Diner", password, owner_password),
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    job = watch_job(api, job_id, timeout=180).job

    steps = steps_by_id(job)
    assert job["status"] == "completed", {
        s: (v["status"], v["error_message"]) for s, v in steps.items()
    }
    assert [s["status"] for s in job["steps"]] == ["completed"] * 12
    # Every step after the registration used the subdomain as the portal made it.
    for step_id in ("restaurant_registration", "website_configuration", "payment_configuration"):
        assert steps[step_id]["result_data"]["subdomain"] == "harbour-diner", steps[step_id]
    state = standin.get("/_control/state").json()
    restaurant = state["restaurants"]["harbour-diner"]
    assert restaurant["name"] == "Harbour Diner"
    assert set(restaurant["received"]) >= {"website_configuration", "services_configuration"}
    services = steps["services_configuration"]
    assert (services["attempts"], len(services["evidence"])) == (2, 1)

    haystacks = secrets_haystacks(api, stack, db, job_id, created)
    public = public_values("Harbour Diner", restaurant_id)
    for secret in (password, owner_password):
        assert occurrences(secret, haystacks, public) == {}, secret
    assert MASK not in str([(s["warning"], s["progress"]) for s in job["steps"]])
    assert any(name.startswith("screenshot") for name in haystacks)
    assert any(b"Services configuration attempt 1 failed" in d for d in haystacks.values())
