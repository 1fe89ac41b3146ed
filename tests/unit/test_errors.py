"""Unit tests for the error classes and `classify` (regjobs.errors)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable

import httpx
import pytest

from regjobs.errors import (
    AlreadyDone,
    Classified,
    ConfigError,
    ErrorClass,
    NonRetryableStepError,
    OutsideSystemError,
    RetryableStepError,
    StepError,
    classify,
    parse_retry_after,
)

REQUEST = httpx.Request("POST", "https://platform.test/api/v1/accounts?token=abc")


# --- classify: network --------------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [httpx.ConnectTimeout, httpx.ReadTimeout,
                                      httpx.WriteTimeout, httpx.PoolTimeout])  # fmt: skip
def test_httpx_timeouts_are_retryable(exc_type: type[httpx.TimeoutException]) -> None:
    result = classify(exc_type("timed out", request=REQUEST))
    assert result.error_class is ErrorClass.RETRYABLE
    assert result.retryable
    assert result.retry_after is None
    assert result.message.startswith("timed out: ")
    assert "POST https://platform.test/api/v1/accounts" in result.message


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError,
                 httpx.WriteError]
)  # fmt: skip
def test_httpx_transport_errors_are_retryable(exc_type: type[httpx.TransportError]) -> None:
    result = classify(exc_type("connection reset by peer", request=REQUEST))
    assert result.retryable
    assert exc_type.__name__ in result.message
    assert "POST https://platform.test/api/v1/accounts" in result.message


def test_httpx_error_message_drops_the_query_string() -> None:
    result = classify(httpx.ReadTimeout("slow", request=REQUEST))
    assert "token=abc" not in result.message
    assert "?" not in result.message


def test_httpx_error_without_request_still_classifies() -> None:
    result = classify(httpx.ConnectError("[Errno 111] Connection refused"))
    assert result.retryable
    assert "Connection refused" in result.message


def _asyncio_timeout() -> BaseException:
    async def wait_forever() -> None:
        await asyncio.Event().wait()

    try:
        asyncio.run(asyncio.wait_for(wait_forever(), timeout=0))
    except TimeoutError as exc:
        return exc
    raise AssertionError("wait_for did not time out")


@pytest.mark.parametrize("make", [TimeoutError, _asyncio_timeout])
def test_builtin_timeout_is_retryable(make: Callable[[], BaseException]) -> None:
    result = classify(make())
    assert result.retryable
    assert "timeout" in result.message


def test_script_that_crashed_is_retryable() -> None:
    result = classify(RuntimeError("page.click: element detached"))
    assert result.error_class is ErrorClass.RETRYABLE
    assert result.message == "RuntimeError: page.click: element detached"
    assert result.retry_after is None


def test_key_error_in_a_script_is_retryable_and_named() -> None:
    result = classify(KeyError("subdomain"))
    assert result.retryable
    assert result.message.startswith("KeyError")


# --- classify: outside systems ------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_outside_system_5xx_and_429_are_retryable(status: int) -> None:
    exc = OutsideSystemError(f"platform API answered HTTP {status}", status_code=status)
    assert exc.error_class is ErrorClass.RETRYABLE
    result = classify(exc)
    assert result.retryable
    assert result.message == f"platform API answered HTTP {status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
def test_outside_system_other_4xx_are_not_retryable(status: int) -> None:
    exc = OutsideSystemError("bad request", status_code=status)
    assert exc.status_code == status
    result = classify(exc)
    assert result.error_class is ErrorClass.NON_RETRYABLE
    assert not result.retryable


def test_outside_system_error_class_is_per_instance() -> None:
    # One instance being retryable must not leak into the class or other instances.
    assert OutsideSystemError("x", status_code=503).error_class is ErrorClass.RETRYABLE
    assert OutsideSystemError("x", status_code=400).error_class is ErrorClass.NON_RETRYABLE
    assert OutsideSystemError("x", status_code=502).error_class is ErrorClass.RETRYABLE


def test_retry_after_propagates() -> None:
    result = classify(OutsideSystemError("slow down", status_code=429, retry_after=7.5))
    assert result.retryable
    assert result.retry_after == 7.5
    step = classify(RetryableStepError("busy", retry_after=3.0))
    assert step.retry_after == 3.0


def test_config_error_is_not_retryable() -> None:
    exc = ConfigError("menu.menu_id or menu.csv_path is required")
    assert isinstance(exc, NonRetryableStepError)
    result = classify(exc)
    assert result.error_class is ErrorClass.NON_RETRYABLE
    assert result.message == "menu.menu_id or menu.csv_path is required"


def test_step_error_classes() -> None:
    assert classify(RetryableStepError("again")).retryable
    assert not classify(NonRetryableStepError("invalid email")).retryable
    # A plain StepError is raised on purpose: not retryable unless said so.
    assert not classify(StepError("stop")).retryable
    assert StepError("stop").message == "stop"


def test_classified_retryable_property() -> None:
    assert Classified(ErrorClass.RETRYABLE, "m").retryable
    assert not Classified(ErrorClass.NON_RETRYABLE, "m").retryable


def test_already_done_carries_warning_and_existing() -> None:
    existing = {"account_id": "acc-1", "email": "owner@pizza.test"}
    exc = AlreadyDone("the account already exists; using it", existing)
    assert exc.warning == "the account already exists; using it"
    assert exc.existing == existing
    assert str(exc) == "the account already exists; using it"


# --- parse_retry_after --------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("2", 2.0), ("120", 120.0), (" 3 ", 3.0),
                                                 ("0", 0.0), ("1.5", 1.5)])  # fmt: skip
def test_parse_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == (
        pytest.approx(90.0)
    )


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    now = 1_445_412_480.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0


@pytest.mark.parametrize("value", [None, ""])
def test_parse_retry_after_absent(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["soon", "12abc", "   ", "Fri, 99 Foo 2020", "2 seconds"])
def test_parse_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "nan"])
def test_parse_retry_after_non_finite_number_is_garbage(value: str) -> None:
    # RFC 9110: delta-seconds is 1*DIGIT. Python's float() also accepts these spellings;
    # an infinite wait would overflow `timedelta` where the ledger stores `not_before`.
    assert parse_retry_after(value) is None


def test_parse_retry_after_negative_is_clamped_to_zero() -> None:
    assert parse_retry_after("-5") == 0.0


def test_evidence_signature_refuses_any_string_without_raising(tmp_path) -> None:
    from regjobs.evidence import signature, valid
    from regjobs.settings import Settings

    settings = Settings(state_dir=tmp_path)
    expires = str(int(time.time()) + 60)
    good = signature(settings, "job", 1, "org", int(expires))
    assert valid(settings, "job", 1, "org", expires, good)
    assert not valid(settings, "job", 2, "org", expires, good)
    assert not valid(settings, "job", 1, "other-org", expires, good)
    assert not valid(settings, "job", 1, "org", expires, "\x80")
    assert not valid(settings, "job", 1, "org", expires, "")
    assert not valid(settings, "job", 1, "org", "\u0663" * 3, good)


# --- needs a person -----------------------------------------------------------------------


def test_needs_a_person_is_its_own_class_never_retried_and_names_the_fields() -> None:
    from regjobs.catalogue import NextAction
    from regjobs.errors import LoginRefused, NeedsPerson, StepAttemptFailed

    exc = LoginRefused(
        "the platform refused the credentials",
        fields=("account.email", "account.password"),
        email="zoë+1@café.example",
    )
    assert isinstance(exc, NeedsPerson)
    assert not isinstance(exc, NonRetryableStepError | RetryableStepError)
    error = classify(exc)
    assert error.error_class is ErrorClass.NEEDS_PERSON
    assert not error.retryable
    assert error.next_action is NextAction.FIX_CONFIG
    assert error.fields == ("account.email", "account.password")
    assert error.message == (
        "the platform refused the credentials; a person must correct "
        "account.email or account.password"
    )
    # The email is for the refused-login limit only: in no message.
    assert "café" not in error.message
    # What Prefect is given keeps the class and the fields (its retry condition and the
    # ledger read them), and nothing else.
    handed_on = StepAttemptFailed.of(error)
    again = classify(handed_on)
    assert (again.error_class, again.fields, again.next_action) == (
        ErrorClass.NEEDS_PERSON,
        ("account.email", "account.password"),
        NextAction.FIX_CONFIG,
    )


def test_needs_a_person_without_fields_is_a_bug() -> None:
    from regjobs.errors import NeedsPerson

    with pytest.raises(ValueError, match="names the fields"):
        NeedsPerson("something is wrong", fields=())


def test_other_errors_name_no_fields() -> None:
    assert classify(ConfigError("menu.menu_id is required")).fields == ()
    assert classify(RuntimeError("boom")).fields == ()
