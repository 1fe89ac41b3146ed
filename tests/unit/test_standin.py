"""The stand-in for the outside systems: routes, preconditions, faults, counts, calls."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

with warnings.catch_warnings():
    # Starlette warns (a UserWarning) that it prefers `httpx2`; plain httpx works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from regjobs.catalogue import STEP_IDS
from standin.app import create_app
from standin.client import effects, fault
from standin.gate import InjectedConnectionReset, quiet_injected_resets

EMAIL = "owner@pizza.test"
PASSWORD = "correct-horse-1"
LOGIN = {"email": EMAIL, "password": PASSWORD}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def create_account(client: TestClient, **overrides: Any) -> httpx.Response:
    body = {**LOGIN, "phone": "+64 21 000 000", **overrides}
    response: httpx.Response = client.post("/platform/api/v1/accounts", json=body)
    return response


def register_restaurant(client: TestClient, **overrides: Any) -> httpx.Response:
    body = {
        **LOGIN,
        "registration_mode": "new_account_with_restaurant",
        "name": "Joe's Pizza & Co",
        "address": "1 Queen St",
        "city": "Auckland",
        "phone": "+64 9 000 000",
        "cuisine": "pizza",
        "subdomain": None,
        "opening_hours": {"mon": [{"open": "09:00", "close": "17:00"}]},
        **overrides,
    }
    response: httpx.Response = client.post("/api/registration/register-restaurant", json=body)
    return response


def with_restaurant(client: TestClient) -> str:
    """An account and a restaurant; the restaurant's subdomain."""
    assert create_account(client).status_code == 201
    response = register_restaurant(client)
    assert response.status_code == 200, response.text
    subdomain: str = response.json()["subdomain"]
    return subdomain


def portal(client: TestClient, action: str, subdomain: str, **body: Any) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/api/registration/{action}", json={**LOGIN, "subdomain": subdomain, **body}
    )
    return response


# -- routes -------------------------------------------------------------------------------


def test_effects_list_every_step_from_zero(client: TestClient) -> None:
    assert effects(client) == dict.fromkeys(STEP_IDS, 0)


def test_platform_account_then_duplicate_answers_account_exists(client: TestClient) -> None:
    created = create_account(client)
    assert created.status_code == 201
    account = created.json()
    assert account["email"] == EMAIL and account["account_id"].startswith("acct_")
    assert "password" not in account

    again = create_account(client, email=EMAIL.upper())
    assert again.status_code == 409
    detail = again.json()["detail"]
    assert detail["code"] == "account_exists"
    assert detail["account"]["account_id"] == account["account_id"]
    assert "password" not in json.dumps(detail) and PASSWORD not in again.text
    assert effects(client)["account_registration"] == 1


def test_account_endpoint_shares_accounts_with_platform(client: TestClient) -> None:
    response = client.post(
        "/api/registration/register-account",
        json={**LOGIN, "phone": "1"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["email"] == EMAIL
    assert create_account(client).json()["detail"]["code"] == "account_exists"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": EMAIL, "password": "short"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"password": PASSWORD}, "email"),
    ],
)
def test_account_validation_names_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/platform/api/v1/accounts", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "validation_failed" and detail["field"] == field
    assert PASSWORD not in response.text and "short" not in json.dumps(detail["field"])
    assert effects(client)["account_registration"] == 0


def test_malformed_body_is_422_naming_the_body(client: TestClient) -> None:
    response = client.post(
        "/platform/api/v1/accounts",
        content=b'{"password": "x',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "body"
    assert client.post("/platform/api/v1/accounts").json()["detail"]["field"] == "body"


def test_code_injections_are_deterministic_and_counted(client: TestClient) -> None:
    body = {
        "restaurant_name": "Joe's </script>",
        "theme": "dark",
        "primary_color": "#AA0000",
        "secondary_color": None,
    }
    first = client.post("/platform/api/v1/code-injections", json=body)
    second = client.post("/api/registration/generate-code-injections", json=body)
    assert first.status_code == 200 and second.status_code == 200
    code = first.json()
    assert code["head_injection"].startswith("<style") and "#aa0000" in code["head_injection"]
    assert code["body_injection"].startswith("<script")
    assert "</script>" not in code["body_injection"][: -len("</script>")]
    assert second.json() == {"success": True, **code}
    assert effects(client)["code_generation"] == 2
    bad = client.post("/platform/api/v1/code-injections", json={**body, "primary_color": "red"})
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "primary_color"


def test_onboarding_user_and_duplicate(client: TestClient) -> None:
    user = {"name": "Jo", "email": "jo@pizza.test", "password": "pw"}
    created = client.post("/onboarding/api/users", json=user)
    assert created.status_code == 201
    assert created.json()["email"] == "jo@pizza.test" and "password" not in created.json()
    again = client.post("/api/registration/create-onboarding-user", json=user)
    assert again.status_code == 409
    assert again.json()["detail"]["code"] == "user_exists"
    assert again.json()["detail"]["user"]["user_id"] == created.json()["user_id"]
    other = client.post(
        "/api/registration/create-onboarding-user", json={**user, "email": "al@pizza.test"}
    )
    assert other.status_code == 200 and other.json()["success"] is True
    assert effects(client)["onboarding_user"] == 2


def test_onboarding_record_needs_a_known_subdomain(client: TestClient) -> None:
    record = {
        "restaurant_name": "Joe's",
        "dashboard_url": "http://x/dashboard",
        "stripe_connect_url": None,
        "user_email": None,
    }
    missing = client.put("/onboarding/api/records/nowhere", json=record)
    assert missing.status_code == 412
    assert missing.json()["detail"]["code"] == "precondition_failed"

    subdomain = with_restaurant(client)
    synced = client.put(f"/onboarding/api/records/{subdomain}", json=record)
    assert synced.status_code == 200
    assert synced.json()["subdomain"] == subdomain and synced.json()["synced_at"]
    again = client.post(
        "/api/registration/update-onboarding-record",
        json={
            **record,
            "subdomain": subdomain,
            "stripe_connect_url": "https://connect.stripe.test/x",
        },
    )
    assert again.status_code == 200 and again.json()["success"] is True
    assert again.json()["record_id"] == synced.json()["record_id"]
    stored = client.get("/_control/state").json()["onboarding"]["records"][subdomain]
    assert stored["stripe_connect_url"] == "https://connect.stripe.test/x"
    assert stored["syncs"] == 2
    assert effects(client)["onboarding_sync"] == 2


def test_cdn_batch_completes_after_processing_time(client: TestClient) -> None:
    config = client.post("/_control/config", json={"cdn_processing_seconds": 0.05})
    assert config.json()["cdn_processing_seconds"] == 0.05
    created = client.post("/cdn/api/batches", json={"menu_id": "m1", "images": []})
    assert created.status_code == 202
    batch = created.json()
    assert batch["status"] == "processing" and batch["total"] == 8 and batch["uploaded"] == 0

    deadline = time.monotonic() + 5
    while (polled := client.get(f"/cdn/api/batches/{batch['batch_id']}").json())[
        "status"
    ] != "completed":
        assert time.monotonic() < deadline, polled
    assert polled["uploaded"] == polled["total"] == 8
    assert effects(client)["image_upload"] == 1  # polling is no effect
    assert client.get("/cdn/api/batches/nope").status_code == 404
    named = client.post("/cdn/api/batches", json={"menu_id": "m2", "images": ["a.jpg"]})
    assert named.json()["total"] == 1
    assert client.get("/_control/state").json()["cdn"]["images"]["m2"] == ["a.jpg"]


def test_upload_images_endpoint_is_synchronous(client: TestClient) -> None:
    response = client.post("/menus/m1/upload-images", json={})
    assert response.status_code == 200
    assert response.json() == {"success": True, "menu_id": "m1", "uploaded": 8}
    assert effects(client)["image_upload"] == 1


def test_portal_chain_stores_what_each_call_received(client: TestClient) -> None:
    subdomain = with_restaurant(client)
    assert subdomain == "joe-s-pizza-co"
    website = {"theme": "dark", "item_layout": "card"}
    steps: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (
            "configure-website",
            {"head_injection": "<style/>", "body_injection": "<script/>", "website": website},
            {"subdomain": subdomain},
        ),
        ("configure-services", {}, {"services": ["pickup", "delivery"]}),
        (
            "configure-payment",
            {"include_stripe_link": True},
            {"stripe_connect_url": f"https://connect.stripe.test/{subdomain}"},
        ),
        (
            "import-menu-direct",
            {"menu_id": "menu-1", "csv_path": None},
            {"menu_id": "menu-1", "items": 12},
        ),
        ("add-option-sets", {"menu_id": "menu-1"}, {"option_sets": 5}),
        ("add-item-tags", {"menu_id": "menu-1"}, {"tags": 3}),
    ]
    for action, body, expected in steps:
        response = portal(client, action, subdomain, **body)
        assert response.status_code == 200, (action, response.text)
        assert response.json()["success"] is True
        assert response.json().items() >= expected.items(), action

    state = client.get("/_control/state").json()
    restaurant = state["restaurants"][subdomain]
    assert restaurant["dashboard_url"] == f"http://testserver/portal/r/{subdomain}/dashboard"
    assert restaurant["website"] == {
        "head_injection": "<style/>",
        "body_injection": "<script/>",
        "settings": website,
    }
    assert restaurant["services"] == ["pickup", "delivery"]
    assert restaurant["menus"]["menu-1"]["option_sets_added"] is True
    assert len(restaurant["menus"]["menu-1"]["tags"]) == 3
    assert len(state["menus"]["menu-1"]["items"]) == 12
    assert restaurant["received"]["website_configuration"][0]["website"] == website
    assert PASSWORD not in json.dumps(state)
    assert set(restaurant["received"]) == {
        "restaurant_registration",
        "website_configuration",
        "services_configuration",
        "payment_configuration",
        "menu_import",
        "option_sets",
        "item_tags",
    }
    counted = effects(client)
    assert all(counted[s] == 1 for s in restaurant["received"])

    without_link = portal(client, "configure-payment", subdomain, include_stripe_link=False)
    assert without_link.json()["stripe_connect_url"] is None
    again = portal(client, "add-option-sets", subdomain, menu_id=None)
    assert again.json()["option_sets"] == 5  # each option set exists once
    assert effects(client)["option_sets"] == 2


def test_menu_import_from_csv_is_deterministic(client: TestClient) -> None:
    subdomain = with_restaurant(client)
    first = portal(client, "import-menu-direct", subdomain, csv_path="/data/menu.csv")
    second = portal(client, "import-menu-direct", subdomain, csv_path="/data/menu.csv")
    assert first.json()["menu_id"] == second.json()["menu_id"]
    assert first.json()["menu_id"].startswith("csv-")
    neither = portal(client, "import-menu-direct", subdomain)
    assert neither.status_code == 422 and neither.json()["detail"]["field"] == "menu_id"


def test_restaurant_registration_preconditions_and_duplicates(client: TestClient) -> None:
    no_account = register_restaurant(client)
    assert no_account.status_code == 412
    assert no_account.json()["detail"]["code"] == "precondition_failed"

    assert create_account(client).status_code == 201
    wrong = register_restaurant(client, password="wrong-password")
    assert wrong.status_code == 401
    assert wrong.json()["detail"]["code"] == "invalid_credentials"

    first = register_restaurant(client, subdomain="Joes")
    assert first.status_code == 200 and first.json()["subdomain"] == "joes"
    again = register_restaurant(client, name="joe's pizza & co")
    assert again.status_code == 409
    detail = again.json()["detail"]
    assert detail["code"] == "restaurant_exists"
    assert detail["restaurant"]["restaurant_id"] == first.json()["restaurant_id"]
    assert detail["restaurant"]["dashboard_url"] == first.json()["dashboard_url"]

    first_only = register_restaurant(
        client, name="Second Place", registration_mode="existing_account_first_restaurant"
    )
    assert first_only.status_code == 409
    assert first_only.json()["detail"]["restaurant"]["subdomain"] == "joes"

    taken = register_restaurant(
        client,
        name="Other",
        subdomain="joes",
        registration_mode="existing_account_additional_restaurant",
    )
    assert taken.status_code == 422 and taken.json()["detail"]["field"] == "subdomain"
    second = register_restaurant(
        client, name="Second Place", registration_mode="existing_account_additional_restaurant"
    )
    assert second.status_code == 200 and second.json()["subdomain"] == "second-place"
    assert effects(client)["restaurant_registration"] == 2


def test_restaurant_scoped_calls_check_login_and_order(client: TestClient) -> None:
    subdomain = with_restaurant(client)
    unknown = portal(client, "configure-services", "nowhere")
    assert unknown.status_code == 412
    bad = client.post(
        "/api/registration/configure-services",
        json={"email": EMAIL, "password": "nope-nope", "subdomain": subdomain},
    )
    assert bad.status_code == 401
    assert bad.json()["detail"]["code"] == "invalid_credentials"

    tags_first = portal(client, "add-item-tags", subdomain, menu_id="menu-1")
    sets_first = portal(client, "add-option-sets", subdomain, menu_id="menu-1")
    assert tags_first.status_code == 412 and sets_first.status_code == 412
    assert portal(client, "import-menu-direct", subdomain, menu_id="menu-1").status_code == 200
    before_sets = portal(client, "add-item-tags", subdomain, menu_id="menu-1")
    assert before_sets.status_code == 412
    assert "option sets" in before_sets.json()["detail"]["message"]
    other_menu = portal(client, "add-option-sets", subdomain, menu_id="menu-2")
    assert other_menu.status_code == 412
    counted = effects(client)
    assert counted["services_configuration"] == counted["option_sets"] == 0
    assert counted["item_tags"] == 0


# -- faults -------------------------------------------------------------------------------


def test_fault_is_stored_and_unknown_step_refused(client: TestClient) -> None:
    stored = fault(client, step="code_generation", mode="status")
    assert stored | {"id": 0} == {
        "id": 0,
        "step": "code_generation",
        "mode": "status",
        "status": 503,
        "times": None,
        "seconds": None,
        "retry_after": None,
    }
    unknown = client.post("/_control/faults", json={"step": "nope", "mode": "status"})
    assert unknown.status_code == 422
    assert client.post("/_control/faults", json={"step": "code_generation"}).status_code == 422


def test_status_fault_counts_down_with_retry_after(client: TestClient) -> None:
    fault(client, step="account_registration", mode="status", status=429, times=2, retry_after=1)
    answers = [create_account(client) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 201]
    assert answers[0].headers["Retry-After"] == "1"
    assert answers[0].json() == {"detail": "injected fault: HTTP 429"}
    assert effects(client)["account_registration"] == 1
    calls = client.get("/_control/calls").json()
    assert [(c["step"], c["status"], c["fault"]) for c in calls] == [
        ("account_registration", 429, "status"),
        ("account_registration", 429, "status"),
        ("account_registration", 201, None),
    ]
    assert all(c["start"] <= c["end"] for c in calls)
    assert calls[0]["method"] == "POST" and calls[0]["path"] == "/platform/api/v1/accounts"


def test_fault_without_times_lasts_until_cleared(client: TestClient) -> None:
    fault(client, step="code_generation", mode="status", status=500)
    fault(client, step="code_generation", mode="status", status=400)
    body = {"restaurant_name": "Joe's"}
    for _ in range(3):
        assert client.post("/platform/api/v1/code-injections", json=body).status_code == 500
    assert client.delete("/_control/faults").json() == {"cleared": 2}
    assert client.post("/platform/api/v1/code-injections", json=body).status_code == 200
    assert effects(client)["code_generation"] == 1


def test_faults_apply_to_batch_polling(client: TestClient) -> None:
    batch = client.post("/cdn/api/batches", json={"menu_id": "m1"}).json()
    fault(client, step="image_upload", mode="status", status=502, times=1)
    assert client.get(f"/cdn/api/batches/{batch['batch_id']}").status_code == 502
    assert client.get(f"/cdn/api/batches/{batch['batch_id']}").status_code == 200


def test_slow_fault_answers_correctly_after_the_delay(client: TestClient) -> None:
    fault(client, step="account_registration", mode="slow", seconds=0.2, times=1)
    started = time.monotonic()
    assert create_account(client).status_code == 201
    assert time.monotonic() - started >= 0.2
    assert effects(client)["account_registration"] == 1
    call = client.get("/_control/calls").json()[0]
    assert call["fault"] == "slow" and call["end"] - call["start"] >= 0.2


def test_a_released_slow_call_goes_on_at_once_and_a_later_one_waits_again() -> None:
    """`/_control/release` ends the hold of the calls waiting then (a test holds a step as
    long as it needs, not as long as a guess); a slow call after it waits its delay."""
    app = create_app()

    async def main() -> tuple[int, float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://standin") as http:
            await http.post(
                "/_control/faults",
                json={"step": "account_registration", "mode": "slow", "seconds": 60, "times": 1},
            )
            held = asyncio.create_task(
                http.post("/platform/api/v1/accounts", json={**LOGIN, "phone": "1"})
            )
            while not (await http.get("/_control/calls")).json():
                await asyncio.sleep(0.01)
            released = time.monotonic()
            (await http.post("/_control/release")).raise_for_status()
            status = (await held).status_code
            waited = time.monotonic() - released
            await http.post(
                "/_control/faults",
                json={"step": "account_registration", "mode": "slow", "seconds": 0.3, "times": 1},
            )
            started = time.monotonic()
            other = {**LOGIN, "email": "other@pizza.test", "phone": "2"}
            await http.post("/platform/api/v1/accounts", json=other)
            return status, waited, time.monotonic() - started

    status, waited, later = asyncio.run(main())
    assert status == 201 and waited < 30  # not the 60 s of its fault
    assert later >= 0.3


def test_timeout_fault_answers_504_without_effect(client: TestClient) -> None:
    fault(client, step="onboarding_user", mode="timeout", seconds=0.05, times=1)
    user = {"name": "Jo", "email": "jo@pizza.test", "password": "pw"}
    assert client.post("/onboarding/api/users", json=user).status_code == 504
    assert effects(client)["onboarding_user"] == 0
    assert client.post("/onboarding/api/users", json=user).status_code == 201


def test_reset_fault_breaks_the_response_off(client: TestClient) -> None:
    fault(client, step="account_registration", mode="reset", times=1)
    with pytest.raises(InjectedConnectionReset):
        create_account(client)
    assert effects(client)["account_registration"] == 0
    call = client.get("/_control/calls").json()[0]
    assert call["status"] is None and call["fault"] == "reset" and call["end"] >= call["start"]
    assert create_account(client).status_code == 201


def test_calls_show_overlap() -> None:
    app = create_app()

    async def main() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://standin") as http:
            for step in ("code_generation", "image_upload"):
                await http.post(
                    "/_control/faults", json={"step": step, "mode": "slow", "seconds": 0.1}
                )
            await asyncio.gather(
                http.post("/platform/api/v1/code-injections", json={"restaurant_name": "J"}),
                http.post("/menus/m1/upload-images", json={}),
            )
            calls: list[dict[str, Any]] = (await http.get("/_control/calls")).json()
            return calls

    first, second = asyncio.run(main())
    assert {first["step"], second["step"]} == {"code_generation", "image_upload"}
    assert first["start"] < second["end"] and second["start"] < first["end"]


def test_a_call_begun_before_a_reset_counts_no_effect_after_it() -> None:
    """A caller still in flight when the state is reset (a killed test's slow call) is not
    the new state's: its effect is left out of the counts; a call begun after counts."""
    app = create_app()

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://standin") as http:
            await http.post(
                "/_control/faults",
                json={"step": "account_registration", "mode": "slow", "seconds": 0.3},
            )
            slow = asyncio.create_task(
                http.post("/platform/api/v1/accounts", json={**LOGIN, "phone": "1"})
            )
            while not (await http.get("/_control/calls")).json():
                await asyncio.sleep(0.01)
            await http.post("/_control/reset")
            assert (await slow).status_code == 201  # it did what it was asked
            before = (await http.get("/_control/effects")).json()
            other = {**LOGIN, "email": "other@pizza.test", "phone": "2"}
            assert (await http.post("/platform/api/v1/accounts", json=other)).status_code == 201
            return before, (await http.get("/_control/effects")).json()

    before, after = asyncio.run(main())
    assert before["account_registration"] == 0
    assert after["account_registration"] == 1


# -- idempotency and reset ----------------------------------------------------------------


def test_idempotency_key_replays_without_a_second_effect(client: TestClient) -> None:
    key = {"Idempotency-Key": "job-1:account_registration"}
    first = client.post("/platform/api/v1/accounts", json={**LOGIN, "phone": "1"}, headers=key)
    replay = client.post("/platform/api/v1/accounts", json={**LOGIN, "phone": "1"}, headers=key)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert effects(client)["account_registration"] == 1
    assert len(client.get("/_control/calls").json()) == 2

    # The key is per step: the same key elsewhere is a new call.
    body = {"name": "Jo", "email": "jo@pizza.test", "password": "pw"}
    assert client.post("/onboarding/api/users", json=body, headers=key).status_code == 201

    # An already-exists answer is replayed too; faults still come first.
    other = {"Idempotency-Key": "job-2"}
    assert client.post("/platform/api/v1/accounts", json=LOGIN, headers=other).status_code == 409
    fault(client, step="account_registration", mode="status", status=503, times=1)
    assert client.post("/platform/api/v1/accounts", json=LOGIN, headers=other).status_code == 503
    replayed = client.post("/platform/api/v1/accounts", json=LOGIN, headers=other)
    assert replayed.status_code == 409 and replayed.headers["Idempotent-Replayed"] == "true"


def test_failed_answers_are_not_replayed(client: TestClient) -> None:
    key = {"Idempotency-Key": "k"}
    subdomain = "joe-s-pizza-co"
    assert portal(client, "configure-services", subdomain).status_code == 401
    with_restaurant(client)
    first = client.post(
        "/api/registration/configure-services", json={**LOGIN, "subdomain": subdomain}, headers=key
    )
    assert first.status_code == 200
    client.post(
        "/api/registration/configure-services", json={**LOGIN, "subdomain": subdomain}, headers=key
    )
    assert effects(client)["services_configuration"] == 1


def test_reset_forgets_everything(client: TestClient) -> None:
    with_restaurant(client)
    fault(client, step="code_generation", mode="status")
    client.post("/_control/config", json={"cdn_processing_seconds": 9})
    assert client.post("/_control/reset").status_code == 200
    assert effects(client) == dict.fromkeys(STEP_IDS, 0)
    assert client.get("/_control/calls").json() == []
    state = client.get("/_control/state").json()
    assert state["accounts"] == {} and state["restaurants"] == {} and state["faults"] == []
    assert state["config"]["cdn_processing_seconds"] == 0.5
    assert create_account(client).status_code == 201


def test_control_and_unknown_routes_are_not_recorded(client: TestClient) -> None:
    client.get("/_control/effects")
    client.get("/healthz")
    assert client.post("/api/registration/nope", json={}).status_code == 404
    assert client.get("/_control/calls").json() == []


# -- a real server ------------------------------------------------------------------------


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    quiet_injected_resets()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_real_server_resets_and_times_out() -> None:
    with serving(create_app()) as base, httpx.Client(base_url=base) as http:
        body = {**LOGIN, "phone": "1"}
        http.post(
            "/_control/faults", json={"step": "account_registration", "mode": "reset", "times": 1}
        )
        with pytest.raises(httpx.TransportError):
            http.post("/platform/api/v1/accounts", json=body)

        http.post(
            "/_control/faults",
            json={"step": "account_registration", "mode": "timeout", "seconds": 30, "times": 1},
        )
        with pytest.raises(httpx.TimeoutException):
            http.post("/platform/api/v1/accounts", json=body, timeout=0.3)

        assert http.post("/platform/api/v1/accounts", json=body).status_code == 201
        assert http.get("/_control/effects").json()["account_registration"] == 1
        # The hung call ends when its caller leaves, with no answer.
        deadline = time.monotonic() + 5
        while (calls := http.get("/_control/calls").json())[1]["end"] is None:
            assert time.monotonic() < deadline
        assert [(c["fault"], c["status"]) for c in calls] == [
            ("reset", None),
            ("timeout", None),
            (None, 201),
        ]


def test_platform_login_opens_the_account_with_its_password_only(client: TestClient) -> None:
    account = create_account(client).json()
    ok = client.post("/platform/api/v1/sessions", json=LOGIN)
    assert ok.status_code == 200
    assert ok.json()["account_id"] == account["account_id"]
    wrong = client.post("/platform/api/v1/sessions", json={**LOGIN, "password": "other-pw-1"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"]["code"] == "invalid_credentials"
    nobody = client.post("/platform/api/v1/sessions", json={**LOGIN, "email": "x@example.com"})
    assert nobody.status_code == 401


def test_account_endpoint_says_exists_only_for_the_accounts_own_credentials(
    client: TestClient,
) -> None:
    create_account(client)
    same = client.post("/api/registration/register-account", json={**LOGIN, "phone": "1"})
    assert same.status_code == 409
    assert same.json()["detail"]["code"] == "account_exists"
    other = client.post(
        "/api/registration/register-account",
        json={**LOGIN, "password": "someone-elses", "phone": "1"},
    )
    assert other.status_code == 401
    assert other.json()["detail"] == {
        "code": "invalid_credentials",
        "message": "an account with this email exists and the credentials do not match",
    }
    assert "account" not in other.json()["detail"]
    assert effects(client)["account_registration"] == 1


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/onboarding/api/sessions", {"user_id", "name", "email", "created_at"}),
        ("/api/registration/verify-onboarding-user", {"success", "user_id", "name", "email"}),
    ],
)
def test_onboarding_login_opens_the_user_with_its_password_only(
    client: TestClient, path: str, fields: set[str]
) -> None:
    user = {"name": "Chef Zoë", "email": "Zoë+Chef@Café.example", "password": "Zq9-harbour"}
    made = client.post("/onboarding/api/users", json=user)
    assert made.status_code == 201
    ok = client.post(path, json={"email": user["email"], "password": user["password"]})
    assert ok.status_code == 200
    assert set(ok.json()) == fields and ok.json()["user_id"] == made.json()["user_id"]
    wrong = client.post(path, json={"email": user["email"], "password": "Zq9-harbour-2"})
    assert (wrong.status_code, wrong.json()["detail"]["code"]) == (401, "invalid_credentials")
    assert "password" not in json.dumps(wrong.json()).replace("email or password", "")
    nobody = client.post(path, json={"email": "x@example.com", "password": "Zq9-harbour"})
    assert nobody.status_code == 401
    assert effects(client)["onboarding_user"] == 1


def test_the_apps_account_check_is_a_platform_login(client: TestClient) -> None:
    account = create_account(client).json()
    ok = client.post("/api/registration/verify-account", json=LOGIN)
    assert ok.json() == {"success": True, "account_id": account["account_id"], "email": EMAIL}
    wrong = client.post("/api/registration/verify-account", json={**LOGIN, "password": "x1"})
    assert wrong.status_code == 401
    assert effects(client)["account_registration"] == 1


def test_looser_endpoints_say_exists_for_the_email_alone(client: TestClient) -> None:
    """With `endpoints_check_credentials` off, the account and restaurant endpoints answer
    "already exists" to any password, as an endpoint that does not check might."""
    create_account(client)
    restaurant = {
        **LOGIN,
        "name": "Harbour Diner",
        "registration_mode": "new_account_with_restaurant",
        "opening_hours": {},
    }
    assert client.post("/api/registration/register-restaurant", json=restaurant).status_code == 200
    client.post("/_control/config", json={"endpoints_check_credentials": False})
    guess = {**LOGIN, "password": "harbour-diner-1"}
    account = client.post("/api/registration/register-account", json={**guess, "phone": ""})
    assert (account.status_code, account.json()["detail"]["code"]) == (409, "account_exists")
    again = client.post(
        "/api/registration/register-restaurant", json={**restaurant, "password": "harbour-1"}
    )
    assert (again.status_code, again.json()["detail"]["code"]) == (409, "restaurant_exists")
    other = client.post(
        "/api/registration/register-restaurant",
        json={**restaurant, "password": "harbour-1", "name": "Another Diner"},
    )
    assert other.status_code == 401
    assert effects(client)["restaurant_registration"] == 1


def test_echo_fault_repeats_the_request_body_in_the_error(client: TestClient) -> None:
    fault(client, step="account_registration", mode="echo", status=400, times=1)
    echoed = create_account(client)
    assert echoed.status_code == 400
    detail = echoed.json()["detail"]
    assert detail["code"] == "rejected"
    assert detail["message"].startswith("injected fault: rejected {")
    assert PASSWORD in detail["message"]
    assert effects(client)["account_registration"] == 0
    assert create_account(client).status_code == 201
    calls = client.get("/_control/calls").json()
    assert [c["fault"] for c in calls] == ["echo", None]


def test_echo_ok_fault_answers_the_request_body_as_a_result(client: TestClient) -> None:
    fault(client, step="account_registration", mode="echo_ok", times=1)
    echoed = create_account(client)
    assert echoed.status_code == 200
    assert echoed.json()["received"]["password"] == PASSWORD
    assert effects(client)["account_registration"] == 0
    assert create_account(client).status_code == 201
    calls = client.get("/_control/calls").json()
    assert [c["fault"] for c in calls] == ["echo_ok", None]
