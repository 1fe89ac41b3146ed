"""Unit tests for the outside-system clients, faked at the transport (tasks.clients)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from regjobs.catalogue import NextAction
from regjobs.errors import (
    AlreadyDone,
    ErrorClass,
    LoginRefused,
    NeedsPerson,
    OutsideSystemError,
    RetryableStepError,
    classify,
)
from regjobs.settings import Settings
from tasks.browser import BrowserPool
from tasks.clients.choice import build_clients
from tasks.clients.endpoints import ENDPOINT_PATHS, AppEndpoints
from tasks.clients.http import OutsideSystem
from tasks.clients.systems import ImageCdn, OnboardingService, PlatformApi

T = TypeVar("T")

API_KEY = "platform-key-123"
PASSWORD = "Sup3r-Secret!pw"
ACCOUNT_PAYLOAD = {"email": "owner@pizza.test", "password": PASSWORD, "phone": "+6421000000"}
EXISTING = {"account_id": "acc-42", "email": "owner@pizza.test"}

Handler = Callable[[httpx.Request], httpx.Response]


def run(make: Callable[[httpx.AsyncClient], Awaitable[T]], handler: Handler) -> T:
    """Run one coroutine against an AsyncClient whose transport is `handler`."""

    async def main() -> T:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await make(http)

    return asyncio.run(main())


def system(http: httpx.AsyncClient, name: str = "platform API") -> OutsideSystem:
    return OutsideSystem(
        http, name=name, base_url="https://platform.test/platform/", api_key=SecretStr(API_KEY)
    )


def answer(status: int, body: Any = None, **headers: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return handler


def raises(
    exc_type: type[BaseException], make: Callable[[httpx.AsyncClient], Awaitable[Any]],
    handler: Handler,
) -> Any:  # fmt: skip
    with pytest.raises(exc_type) as info:
        run(make, handler)
    return info.value


def create_account(http: httpx.AsyncClient) -> Awaitable[dict[str, Any]]:
    return PlatformApi(system(http)).create_account(ACCOUNT_PAYLOAD, "job-1:account:0")


# --- OutsideSystem.request ----------------------------------------------------------------


def test_success_returns_the_json_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"account_id": "acc-1", "status": "created"})

    result = run(create_account, handler)
    assert result == {"account_id": "acc-1", "status": "created"}
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://platform.test/platform/api/v1/accounts"
    assert json.loads(request.content) == ACCOUNT_PAYLOAD


def test_sends_bearer_key_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    run(create_account, handler)
    assert seen[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen[0].headers["Idempotency-Key"] == "job-1:account:0"


def test_no_idempotency_key_header_when_none_given() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "processing"})

    result = run(lambda http: system(http).request("GET", "/api/batches/b1"), handler)
    assert result == {"status": "processing"}
    assert "Idempotency-Key" not in seen[0].headers
    assert seen[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen[0].content == b""


def test_success_with_a_non_object_body_is_wrapped() -> None:
    result = run(lambda http: system(http).request("GET", "/x"), answer(200, [1, 2]))
    assert result == {"data": [1, 2]}


def test_success_with_an_empty_body_is_an_empty_dict() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(204)

    assert run(lambda http: system(http).request("DELETE", "/x"), handler) == {}


def test_409_account_exists_raises_already_done_with_the_account() -> None:
    body = {"detail": {"code": "account_exists", "account": EXISTING}}
    exc = raises(AlreadyDone, create_account, answer(409, body))
    assert exc.existing == EXISTING
    assert exc.warning == "the account already exists; using it"
    assert str(exc) == exc.warning


def test_409_with_another_code_is_a_non_retryable_outside_system_error() -> None:
    body = {"detail": {"code": "email_blocked", "message": "this email cannot register"}}
    exc = raises(OutsideSystemError, create_account, answer(409, body))
    assert exc.status_code == 409
    assert exc.error_class is ErrorClass.NON_RETRYABLE
    assert not classify(exc).retryable
    assert "this email cannot register" in exc.message


def test_409_account_exists_is_an_error_where_not_expected() -> None:
    # Code generation does not treat "account_exists" as already done.
    body = {"detail": {"code": "account_exists", "account": EXISTING}}
    exc = raises(
        OutsideSystemError,
        lambda http: PlatformApi(system(http)).generate_code({"subdomain": "pizza"}, "k"),
        answer(409, body),
    )
    assert exc.status_code == 409
    assert "account_exists" in exc.message


def test_503_with_retry_after_is_retryable_with_the_wait() -> None:
    exc = raises(OutsideSystemError, create_account, answer(503, {"detail": "busy"},
                                                            **{"Retry-After": "2"}))  # fmt: skip
    assert exc.status_code == 503
    assert exc.error_class is ErrorClass.RETRYABLE
    assert exc.retry_after == 2.0
    classified = classify(exc)
    assert classified.retryable
    assert classified.retry_after == 2.0


def test_429_is_retryable_and_500_without_retry_after_has_no_wait() -> None:
    limited = raises(OutsideSystemError, create_account,
                     answer(429, {"detail": "slow down"}, **{"Retry-After": "5"}))  # fmt: skip
    assert limited.error_class is ErrorClass.RETRYABLE
    assert limited.retry_after == 5.0
    crashed = raises(OutsideSystemError, create_account, answer(500, {"detail": "oops"}))
    assert crashed.error_class is ErrorClass.RETRYABLE
    assert crashed.retry_after is None


def test_non_json_error_body_is_used_as_the_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    exc = raises(OutsideSystemError, create_account, handler)
    assert exc.error_class is ErrorClass.RETRYABLE
    assert "Bad gateway" in exc.message


def test_error_without_body_uses_the_reason_phrase() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    exc = raises(OutsideSystemError, create_account, handler)
    assert exc.message.endswith("Not Found")


def test_error_message_names_system_method_and_path() -> None:
    body = {"detail": {"code": "invalid_email", "message": "email is not valid"}}
    exc = raises(OutsideSystemError, create_account, answer(400, body))
    assert exc.message == (
        "platform API answered HTTP 400 to POST /api/v1/accounts: email is not valid"
    )
    assert exc.error_class is ErrorClass.NON_RETRYABLE


@pytest.mark.parametrize("status", [400, 401, 409, 422, 500, 503])
def test_error_message_never_contains_the_password(status: int) -> None:
    exc = raises(OutsideSystemError, create_account,
                 answer(status, {"detail": {"code": "nope", "message": "rejected"}}))  # fmt: skip
    assert PASSWORD not in exc.message
    assert PASSWORD not in str(exc)
    assert "platform API" in exc.message and "/api/v1/accounts" in exc.message


def test_error_message_hides_a_password_the_outside_system_echoes() -> None:
    # A FastAPI/pydantic service answers bad input with its default 422, which echoes the
    # request body under "input". The client promises the body never reaches an error.
    body = {
        "detail": [
            {
                "type": "string_too_short",
                "loc": ["body", "phone"],
                "msg": "String should have at least 8 characters",
                "input": ACCOUNT_PAYLOAD,
            }
        ]
    }
    exc = raises(OutsideSystemError, create_account, answer(422, body))
    assert exc.status_code == 422
    assert "/api/v1/accounts" in exc.message
    assert PASSWORD not in exc.message


# --- the systems --------------------------------------------------------------------------


def test_onboarding_user_exists_is_already_done() -> None:
    body = {"detail": {"code": "user_exists", "user": {"id": "u-1"}}}
    exc = raises(
        AlreadyDone,
        lambda http: OnboardingService(system(http, "onboarding service")).create_user(
            {"email": "a@b.test"}, "k"
        ),
        answer(409, body),
    )
    assert exc.existing == {"id": "u-1"}
    assert "onboarding user already exists" in exc.warning


def test_onboarding_sync_puts_the_record_by_subdomain() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"synced": True})

    result = run(
        lambda http: OnboardingService(system(http)).sync_record("pizza", {"a": 1}, "k-9"),
        handler,
    )
    assert result == {"synced": True}
    assert seen[0].method == "PUT"
    assert seen[0].url.path == "/platform/api/records/pizza"
    assert seen[0].headers["Idempotency-Key"] == "k-9"


def test_app_endpoint_restaurant_exists_is_already_done() -> None:
    seen: list[httpx.Request] = []
    restaurant = {"restaurant_id": "r-1", "subdomain": "pizza"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            409, json={"detail": {"code": "restaurant_exists", "restaurant": restaurant}}
        )

    exc = raises(
        AlreadyDone,
        lambda http: AppEndpoints(system(http)).call("restaurant_registration", {}, "k"),
        handler,
    )
    assert exc.existing == restaurant
    assert seen[0].url.path == "/platform/api/registration/register-restaurant"


def test_app_endpoint_image_upload_path_takes_the_menu_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"uploaded": 3})

    run(lambda http: AppEndpoints(system(http)).call("image_upload", {}, "k", menu_id="m-7"),
        handler)  # fmt: skip
    assert seen[0].url.path == "/platform/menus/m-7/upload-images"
    assert seen[0].method == "POST"


def test_app_endpoints_cover_every_step() -> None:
    from regjobs.catalogue import STEP_IDS

    assert set(ENDPOINT_PATHS) == set(STEP_IDS)


def _cdn_handler(statuses: list[str], seen: list[httpx.Request]) -> Handler:
    answers: Iterator[str] = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(answers)
        uploaded = {"processing": len(seen) - 1}.get(status, 3)
        return httpx.Response(
            200, json={"batch_id": "b-1", "status": status, "uploaded": uploaded, "total": 3}
        )

    return handler


def test_image_upload_polls_until_completed_and_reports_progress() -> None:
    seen: list[httpx.Request] = []
    reports: list[str] = []

    async def progress(text: str) -> None:
        reports.append(text)

    result = run(
        lambda http: ImageCdn(system(http, "image CDN"), poll_seconds=0.001).upload(
            "menu-1", "job-1:image_upload:0", progress
        ),
        _cdn_handler(["processing", "processing", "completed"], seen),
    )
    assert result["status"] == "completed"
    assert result["batch_id"] == "b-1"
    assert [r.method for r in seen] == ["POST", "GET", "GET"]
    assert json.loads(seen[0].content) == {"menu_id": "menu-1", "images": []}
    assert seen[0].headers["Idempotency-Key"] == "job-1:image_upload:0"
    assert all(r.url.path == "/platform/api/batches/b-1" for r in seen[1:])
    assert reports == ["0 of 3 images", "1 of 3 images"]


def test_image_upload_batch_failed_is_retryable() -> None:
    seen: list[httpx.Request] = []

    async def progress(text: str) -> None:
        pass

    exc = raises(
        RetryableStepError,
        lambda http: ImageCdn(system(http, "image CDN"), poll_seconds=0.001).upload(
            "menu-1", "k", progress
        ),
        _cdn_handler(["processing", "failed"], seen),
    )
    assert classify(exc).retryable
    assert "b-1" in exc.message and "failed" in exc.message
    assert len(seen) == 2


def test_image_upload_completed_at_once_does_not_poll() -> None:
    seen: list[httpx.Request] = []
    reports: list[str] = []

    async def progress(text: str) -> None:
        reports.append(text)

    result = run(
        lambda http: ImageCdn(system(http), poll_seconds=0.001).upload("m", "k", progress),
        _cdn_handler(["completed"], seen),
    )
    assert result["status"] == "completed"
    assert len(seen) == 1
    assert reports == []


@pytest.mark.parametrize("mode", ["direct", "endpoints"])
def test_clients_build_names_each_system_and_uses_its_key(mode: str, tmp_path: Any) -> None:
    """Chosen once by the step mode: each system's own API, or the app's endpoints."""
    from regjobs.settings import StepMode

    settings = Settings(
        _env_file=None,
        state_dir=tmp_path,
        step_mode=StepMode(mode),
        platform_api_url="https://platform.test/",
        platform_api_key=SecretStr("pk"),
        onboarding_url="https://onboarding.test",
        onboarding_api_key=SecretStr("ok"),
        cdn_url="https://cdn.test",
        cdn_api_key=SecretStr("ck"),
        app_endpoints_url="https://app.test",
        app_endpoints_api_key=SecretStr("ak"),
        cdn_poll_seconds=0.25,
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500, json={"detail": "down"})

    async def progress(_: str) -> None:
        pass

    async def every_system(http: httpx.AsyncClient) -> list[str]:
        clients = build_clients(settings, http, BrowserPool(settings, "run-1"))
        assert clients.portal.uses_browser is (mode == "direct")
        calls: list[Awaitable[Any]] = [
            clients.platform.generate_code({}, "k"),
            clients.onboarding.create_user({}, "k"),
            clients.images.upload("m", "k", progress),
        ]
        messages = []
        for call in calls:
            with pytest.raises(OutsideSystemError) as info:
                await call
            messages.append(info.value.message)
        return messages

    messages = run(every_system, handler)
    names = [m.split(" answered")[0] for m in messages]
    hosts = [(r.url.host, r.headers["Authorization"]) for r in seen]
    if mode == "direct":
        assert names == ["platform API", "onboarding service", "image CDN"]
        assert hosts == [
            ("platform.test", "Bearer pk"),
            ("onboarding.test", "Bearer ok"),
            ("cdn.test", "Bearer ck"),
        ]
        assert str(seen[0].url) == "https://platform.test/api/v1/code-injections"
    else:
        assert names == ["app endpoint"] * 3
        assert hosts == [("app.test", "Bearer ak")] * 3
        assert [r.url.path for r in seen] == [
            "/api/registration/generate-code-injections",
            "/api/registration/create-onboarding-user",
            "/menus/m/upload-images",
        ]


# --- path segments ------------------------------------------------------------------------


def _recording(seen: list[httpx.Request], body: Any = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body if body is not None else {"ok": True})

    return handler


def test_the_traversal_menu_id_stays_in_its_path_segment() -> None:
    # Were it validated away upstream or not: quoted, it cannot reach another path.
    seen: list[httpx.Request] = []
    menu_id = "../../api/admin/x#"
    run(lambda http: AppEndpoints(system(http)).call("image_upload", {}, "k", menu_id=menu_id),
        _recording(seen))  # fmt: skip
    assert seen[0].url.raw_path == b"/platform/menus/..%2F..%2Fapi%2Fadmin%2Fx%23/upload-images"
    assert seen[0].url.fragment == ""


@pytest.mark.parametrize("subdomain", ["..", ".", "", "a\nb"])
def test_a_segment_a_url_would_resolve_away_is_refused_before_any_request(
    subdomain: str,
) -> None:
    from regjobs.errors import NonRetryableStepError

    seen: list[httpx.Request] = []
    raises(
        NonRetryableStepError,
        lambda http: OnboardingService(system(http)).sync_record(subdomain, {}, "k"),
        _recording(seen),
    )
    assert seen == []


def test_a_batch_id_from_the_cdn_is_quoted() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json={"batch_id": "../admin?x", "status": "processing"})
        return httpx.Response(200, json={"batch_id": "b", "status": "completed"})

    async def progress(_: str) -> None:
        pass

    run(lambda http: ImageCdn(system(http), 0.01).upload("m", "k", progress), handler)
    assert seen[1].url.raw_path == b"/platform/api/batches/..%2Fadmin%3Fx"


def test_portal_paths_quote_the_subdomain() -> None:
    from tasks.portal.base import restaurant_path

    assert restaurant_path("pizza") == "/r/pizza"
    assert restaurant_path("a/../b") == "/r/a%2F..%2Fb"


# --- "already exists" is used only once the job's own credentials open the record --------


OWNER = "zoë+harbour@café.example.com"
#: Shares a word with the restaurant's name, as people's passwords do.
OWN_PASSWORD = "Zq9-harbour-2024"
ONBOARDING_EMAIL = "chef+1@harbour-diner.example.com"
MISMATCH = "an account with this email exists and the credentials do not match"


def _step(
    handler: Handler, mode: str, tmp_path: Any, step_id: str = "account_registration"
) -> tuple[Any, list[httpx.Request]]:
    """Run one step's handler against `handler`: (result or error, requests)."""
    from regjobs.config import ExecutionConfig
    from regjobs.settings import StepMode
    from tasks.handlers import HANDLERS, StepContext
    from tests.helpers import full_config

    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def progress(_: str) -> None:
        pass

    config = full_config(
        account={"email": OWNER, "password": PASSWORD},
        restaurant={"name": "Harbour Diner"},
        onboarding={
            "create_user": True,
            "user_name": "Chef Zoë",
            "user_email": ONBOARDING_EMAIL,
            "user_password": OWN_PASSWORD,
        },
    )

    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(recording)) as http:
            settings = Settings(state_dir=tmp_path, step_mode=StepMode(mode))
            ctx = StepContext(
                job_id="job-1",
                step_id=step_id,
                config=ExecutionConfig.model_validate(config),
                inputs={},
                idempotency_key=f"job-1:{step_id}:1",
                clients=build_clients(settings, http, BrowserPool(settings, "run-1")),
                progress=progress,
            )
            try:
                return await HANDLERS[step_id](ctx)
            except Exception as exc:
                return exc

    return asyncio.run(main()), seen


def _account_step(handler: Handler, mode: str, tmp_path: Any) -> tuple[Any, list[httpx.Request]]:
    return _step(handler, mode, tmp_path)


REFUSED = {"code": "invalid_credentials", "message": "the email or password is not correct"}


def _exists_then_login(
    create_path: str, exists: dict[str, Any], login_path: str, login_status: int, record: Any
) -> Handler:
    """A system that says "exists" to the create and answers the login with `record`."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(create_path):
            return httpx.Response(409, json={"detail": exists})
        assert request.url.path.endswith(login_path), request.url.path
        if login_status == 200:
            return httpx.Response(200, json=record)
        return httpx.Response(login_status, json={"detail": REFUSED})

    return handler


def _platform(login_status: int, record: Any = None) -> Handler:
    exists = {"code": "account_exists", "message": "exists", "account": EXISTING}
    return _exists_then_login(
        "/accounts", exists, "/sessions", login_status, record or {**EXISTING, "via": "login"}
    )


def test_direct_an_existing_account_is_used_after_its_credentials_log_in(tmp_path: Any) -> None:
    outcome, seen = _account_step(_platform(200), "direct", tmp_path)
    assert isinstance(outcome, AlreadyDone)
    assert outcome.existing == {**EXISTING, "via": "login"}
    assert "already exists" in outcome.warning
    login = seen[1]
    assert login.url.path == "/platform/api/v1/sessions"
    assert json.loads(login.content) == {"email": OWNER, "password": PASSWORD}
    # A login is no create: no idempotency key (it would replay the create's answer).
    assert "Idempotency-Key" not in login.headers
    assert login.headers["X-Registration-Step"] == "job-1:account_registration"


@pytest.mark.parametrize("status", [401, 403])
def test_direct_an_existing_account_of_other_credentials_needs_a_person(
    tmp_path: Any, status: int
) -> None:
    outcome, _ = _account_step(_platform(status), "direct", tmp_path)
    assert isinstance(outcome, LoginRefused)
    assert outcome.fields == ("account.email", "account.password")
    assert outcome.email == OWNER
    error = classify(outcome)
    assert error.error_class is ErrorClass.NEEDS_PERSON and not error.retryable
    assert error.next_action is NextAction.FIX_CONFIG
    assert error.fields == ("account.email", "account.password")
    assert error.message == f"{MISMATCH}; a person must correct account.email or account.password"
    assert OWNER not in error.message and PASSWORD not in error.message


def test_direct_a_401_that_is_not_about_the_credentials_is_no_refused_login(
    tmp_path: Any,
) -> None:
    """A 401 for our own API key is the operator's to fix, not the owner's password."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/accounts"):
            detail = {"code": "account_exists", "message": "exists", "account": EXISTING}
            return httpx.Response(409, json={"detail": detail})
        return httpx.Response(401, json={"detail": "bad API key"})

    outcome, _ = _account_step(handler, "direct", tmp_path)
    assert isinstance(outcome, OutsideSystemError) and not isinstance(outcome, LoginRefused)
    assert classify(outcome).error_class is ErrorClass.NON_RETRYABLE


def test_direct_a_login_opening_another_account_needs_a_person(tmp_path: Any) -> None:
    outcome, _ = _account_step(_platform(200, {"account_id": "acc-other"}), "direct", tmp_path)
    assert isinstance(outcome, NeedsPerson) and not isinstance(outcome, LoginRefused)
    assert outcome.fields == ("account.email",)


def test_direct_a_login_that_fails_otherwise_is_retried(tmp_path: Any) -> None:
    outcome, _ = _account_step(_platform(503), "direct", tmp_path)
    assert isinstance(outcome, OutsideSystemError)
    assert classify(outcome).retryable


def test_endpoints_credentials_refused_need_a_person(tmp_path: Any) -> None:
    detail = {"code": "invalid_credentials", "message": MISMATCH}
    outcome, seen = _account_step(answer(401, {"detail": detail}), "endpoints", tmp_path)
    assert isinstance(outcome, LoginRefused) and outcome.email == OWNER
    assert MISMATCH in str(outcome) and "HTTP 401" in str(outcome)
    assert "account.email or account.password" in str(outcome)
    assert classify(outcome).error_class is ErrorClass.NEEDS_PERSON
    assert len(seen) == 1


def _endpoint_account(login_status: int, record: Any = None) -> Handler:
    exists = {"code": "account_exists", "message": "exists", "account": EXISTING}
    return _exists_then_login(
        "/register-account",
        exists,
        "/verify-account",
        login_status,
        record or {"success": True, **EXISTING},
    )


def test_endpoints_already_exists_is_proven_by_a_login(tmp_path: Any) -> None:
    outcome, seen = _account_step(_endpoint_account(200), "endpoints", tmp_path)
    assert isinstance(outcome, AlreadyDone)
    assert outcome.existing == {"success": True, **EXISTING}
    assert [r.url.path for r in seen] == [
        "/api/registration/register-account",
        "/api/registration/verify-account",
    ]
    assert json.loads(seen[1].content) == {"email": OWNER, "password": PASSWORD}
    assert "Idempotency-Key" not in seen[1].headers


def test_endpoints_already_exists_with_refused_credentials_needs_a_person(
    tmp_path: Any,
) -> None:
    """An endpoint that says "exists" on the 409 alone is not taken at its word."""
    outcome, _ = _account_step(_endpoint_account(401), "endpoints", tmp_path)
    assert isinstance(outcome, LoginRefused)
    assert outcome.fields == ("account.email", "account.password")


def _restaurant_step(handler: Handler, tmp_path: Any) -> tuple[Any, list[httpx.Request]]:
    return _step(handler, "endpoints", tmp_path, "restaurant_registration")


RESTAURANT = {
    "restaurant_id": "rest-1",
    "name": "Harbour Diner",
    "subdomain": "harbour-diner",
    "dashboard_url": "https://portal.test/r/harbour-diner/dashboard",
    "account_id": "acc-42",
}


def _endpoint_restaurant(login_status: int, record: Any = None) -> Handler:
    exists = {"code": "restaurant_exists", "message": "exists", "restaurant": RESTAURANT}
    return _exists_then_login(
        "/register-restaurant",
        exists,
        "/verify-account",
        login_status,
        record or {"success": True, **EXISTING},
    )


def test_endpoints_restaurant_exists_under_the_jobs_account_is_used(tmp_path: Any) -> None:
    outcome, seen = _restaurant_step(_endpoint_restaurant(200), tmp_path)
    assert isinstance(outcome, AlreadyDone) and outcome.existing == RESTAURANT
    assert seen[1].url.path == "/api/registration/verify-account"


def test_endpoints_restaurant_exists_with_refused_credentials_needs_a_person(
    tmp_path: Any,
) -> None:
    outcome, _ = _restaurant_step(_endpoint_restaurant(401), tmp_path)
    assert isinstance(outcome, LoginRefused) and outcome.email == OWNER


@pytest.mark.parametrize("owner", ["acc-other", None])
def test_endpoints_restaurant_of_another_account_needs_a_person(
    tmp_path: Any, owner: str | None
) -> None:
    """Under another account, or an answer that does not say whose: not proven."""
    exists = {"code": "restaurant_exists", "restaurant": {**RESTAURANT, "account_id": owner}}
    handler = _exists_then_login(
        "/register-restaurant", exists, "/verify-account", 200, {"success": True, **EXISTING}
    )
    outcome, _ = _restaurant_step(handler, tmp_path)
    assert isinstance(outcome, NeedsPerson) and not isinstance(outcome, LoginRefused)
    assert outcome.fields == ("restaurant.name", "restaurant.subdomain")
    assert "restaurant.name or restaurant.subdomain" in str(outcome)


USER = {"user_id": "user-7", "name": "Chef Zoë", "email": ONBOARDING_EMAIL}


@pytest.mark.parametrize(
    ("mode", "create_path", "login_path"),
    [
        ("direct", "/onboarding/api/users", "/onboarding/api/sessions"),
        ("endpoints", "/create-onboarding-user", "/verify-onboarding-user"),
    ],
)
@pytest.mark.parametrize("login_status", [200, 401])
def test_an_existing_onboarding_user_is_used_only_with_its_password(
    tmp_path: Any, mode: str, create_path: str, login_path: str, login_status: int
) -> None:
    exists = {"code": "user_exists", "message": "exists", "user": USER}
    handler = _exists_then_login(create_path, exists, login_path, login_status, USER)
    outcome, seen = _step(handler, mode, tmp_path, "onboarding_user")
    assert seen[-1].url.path.endswith(login_path)
    assert json.loads(seen[-1].content) == {"email": ONBOARDING_EMAIL, "password": OWN_PASSWORD}
    if login_status == 200:
        assert isinstance(outcome, AlreadyDone) and outcome.existing == USER
    else:
        assert isinstance(outcome, LoginRefused)
        assert outcome.email == ONBOARDING_EMAIL
        assert outcome.fields == ("onboarding.user_email", "onboarding.user_password")
        assert "onboarding user with this email exists" in str(outcome)
