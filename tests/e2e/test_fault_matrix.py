"""One case per row of SPEC.md's error table, end to end against the stand-in: the step's
final status, its attempt count and the job's outcome. Each test sets the worker's step mode
it needs (endpoints, or direct for the portal's rows), so they run in any order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from standin.client import fault
from tests.helpers import (
    NO_MENU,
    StepModes,
    create,
    full_config,
    steps_by_id,
    wait_for_person,
    watch_job,
)

pytestmark = pytest.mark.e2e

Setup = Callable[[httpx.Client], None]


def faults(*specs: dict[str, Any]) -> Setup:
    def apply(standin: httpx.Client) -> None:
        for spec in specs:
            fault(standin, **spec)

    return apply


def existing_account(password: str, email: str | None = None) -> Setup:
    def apply(standin: httpx.Client) -> None:
        standin.post(
            "/platform/api/v1/accounts",
            json={
                "email": email or full_config()["account"]["email"],
                "password": password,
                "phone": "",
            },
        ).raise_for_status()

    return apply


def existing_restaurant(email: str, name: str) -> Setup:
    """An account with the job's password and a restaurant already registered under it."""

    def apply(standin: httpx.Client) -> None:
        password = full_config()["account"]["password"]
        standin.post(
            "/platform/api/v1/accounts",
            json={
                "email": email,
                "password": password,
                "phone": "",
            },
        ).raise_for_status()
        standin.post(
            "/api/registration/register-restaurant",
            json={
                "email": email,
                "password": password,
                "name": name,
                "registration_mode": "new_account_with_restaurant",
                "address": "",
                "city": "",
                "phone": "",
                "cuisine": None,
                "subdomain": None,
                "opening_hours": {},
            },
        ).raise_for_status()

    return apply


#: Registering under an account that exists (the account step is off): the restaurant's
#: registration is the first to log in.
EXISTING_ACCOUNT: dict[str, Any] = {
    "account": {"register_new_user": False},
    "restaurant": {"registration_mode": "existing_account_first_restaurant"},
}
CREDENTIALS_MISMATCH = "an account with this email exists and the credentials do not match"


def refused(email: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config whose account email is `email`: each row that has a login refused uses an
    email of its own, so the refused-login limit (per email, for the whole test session)
    never reaches another test's email."""
    config = config or {}
    return {**config, "account": {**config.get("account", {}), "email": email}}


@dataclass(frozen=True)
class Case:
    step: str
    setup: Setup
    status: str
    attempts: int
    job: str
    message: str | None = None
    warning: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


CASES = {
    "network timeout": Case(
        "code_generation",
        faults({"step": "code_generation", "mode": "timeout", "times": 1}),
        "completed",
        2,
        "completed",
    ),
    "connection reset": Case(
        "onboarding_user",
        faults({"step": "onboarding_user", "mode": "reset", "times": 2}),
        "completed",
        3,
        "completed",
    ),
    "HTTP 5xx, retries exhausted": Case(
        "image_upload",
        faults({"step": "image_upload", "mode": "status", "status": 502}),
        "failed",
        4,
        "failed",
        message="HTTP 502",
    ),
    "HTTP 429 with Retry-After": Case(
        "account_registration",
        faults(
            {
                "step": "account_registration",
                "mode": "status",
                "status": 429,
                "times": 1,
                "retry_after": 1,
            }
        ),
        "completed",
        2,
        "completed",
    ),
    "HTTP 4xx": Case(
        "onboarding_sync",
        faults({"step": "onboarding_sync", "mode": "status", "status": 404}),
        "failed",
        1,
        "failed",
        message="HTTP 404",
    ),
}

#: Rows that only the browser steps meet, run with the portal in Chromium.
PORTAL_CASES = {
    "portal page 5xx": Case(
        "services_configuration",
        faults({"step": "services_configuration", "mode": "status", "status": 500, "times": 1}),
        "completed",
        2,
        "completed",
        config={"menu": NO_MENU},  # the restaurant's settings: the menu is not the point
    ),
    "portal navigation timeout": Case(
        "payment_configuration",
        faults({"step": "payment_configuration", "mode": "slow", "seconds": 5, "times": 1}),
        "completed",
        2,
        "completed",
        config={"menu": NO_MENU},
    ),
    "bad credentials at the portal's login": Case(
        "restaurant_registration",
        existing_account("someone-elses-password", "refused-portal@example.com"),
        "action_required",
        1,
        "in_progress",
        message="refused the credentials",
        config=refused("refused-portal@example.com", EXISTING_ACCOUNT),
    ),
    "an existing account the credentials do not open (platform login)": Case(
        "account_registration",
        existing_account("someone-elses-password", "refused-platform@example.com"),
        "action_required",
        1,
        "in_progress",
        message=CREDENTIALS_MISMATCH,
        config=refused("refused-platform@example.com"),
    ),
    "validation failure in the portal's form": Case(
        "restaurant_registration",
        existing_restaurant("first-owner@example.com", "Demo Pizza"),
        "action_required",
        1,
        "in_progress",
        message="subdomain",
    ),
}

CASES = {
    **CASES,
    "bad credentials": Case(
        "restaurant_registration",
        existing_account("someone-elses-password", "refused-endpoint@example.com"),
        "action_required",
        1,
        "in_progress",
        message="HTTP 401",
        config=refused("refused-endpoint@example.com", EXISTING_ACCOUNT),
    ),
    "an existing account the credentials do not open": Case(
        "account_registration",
        existing_account("someone-elses-password", "refused-account@example.com"),
        "action_required",
        1,
        "in_progress",
        message=CREDENTIALS_MISMATCH,
        config=refused("refused-account@example.com"),
    ),
    "validation failure (subdomain taken)": Case(
        "restaurant_registration",
        existing_restaurant("first-owner@example.com", "Demo Pizza"),
        "action_required",
        1,
        "in_progress",
        message="HTTP 422",
    ),
    "duplicate account": Case(
        "account_registration",
        existing_account(full_config()["account"]["password"]),
        "completed",
        1,
        "completed",
        warning="already exists",
    ),
    "restaurant already registered": Case(
        "restaurant_registration",
        existing_restaurant(full_config()["account"]["email"], "Demo Pizza"),
        "completed",
        1,
        "completed",
        warning="already registered",
    ),
}


@pytest.fixture(scope="module", autouse=True)
def stacks_mode_after(step_modes: StepModes) -> Iterator[None]:
    """The module leaves the worker in the stack's mode, whichever of its tests ran last."""
    yield
    step_modes.use("endpoints")


@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix(
    name: str, api: httpx.Client, standin: httpx.Client, restaurant_id: str, step_modes: StepModes
) -> None:
    step_modes.use("endpoints")
    check(CASES[name], api, standin, restaurant_id)


@pytest.mark.parametrize("name", list(PORTAL_CASES))
def test_fault_matrix_at_the_portal(
    name: str, api: httpx.Client, standin: httpx.Client, restaurant_id: str, step_modes: StepModes
) -> None:
    step_modes.use("direct")
    check(PORTAL_CASES[name], api, standin, restaurant_id)


def check(case: Case, api: httpx.Client, standin: httpx.Client, restaurant_id: str) -> None:
    case.setup(standin)

    job_id = create(api, restaurant_id, **case.config)
    if case.status == "action_required":
        # SPEC "needs a person": not retried, the job waits for corrected input.
        job = wait_for_person(api, job_id, timeout=180)
        assert job["next_action"] == "provide_input"
        assert job["action_required"]["step_id"] == case.step
    else:
        job = watch_job(api, job_id, timeout=180).job

    step = steps_by_id(job)[case.step]
    assert (step["status"], step["attempts"], job["status"]) == (
        case.status,
        case.attempts,
        case.job,
    ), step
    if case.message:
        assert case.message in step["error_message"]
    if case.config.get("account", {}).get("email", "").startswith("refused-"):
        # A refused login needs a person: the message names what to correct.
        fields = "a person must correct account.email or account.password"
        assert fields in step["error_message"]
    if case.warning:
        assert case.warning in step["warning"]
