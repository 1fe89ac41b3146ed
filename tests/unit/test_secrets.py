"""Scrubbing (regjobs.secrets) and what a failed attempt hands on (tasks.steps._attempt):
the scrubbed, classified message only, never the original exception."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prefect.states import Failed

from regjobs.catalogue import NextAction
from regjobs.config import ExecutionConfig
from regjobs.errors import (
    MESSAGE_LIMIT,
    ErrorClass,
    OutsideSystemError,
    StepAttemptFailed,
    classify,
    scrubbed,
)
from regjobs.secrets import MASK, MIN_FRAGMENT, Scrubber, scrub
from regjobs.settings import Settings, StepMode
from tests.helpers import full_config

PASSWORD = "Correct-Horse-Battery-Staple-42"


# --- the scrubber -------------------------------------------------------------------------


def test_the_whole_secret_is_masked() -> None:
    assert scrub(f"login as bob with {PASSWORD}!", [PASSWORD]) == f"login as bob with {MASK}!"


@pytest.mark.parametrize("start", [0, 3, 11, len(PASSWORD) - MIN_FRAGMENT])
def test_any_part_of_eight_characters_is_masked(start: int) -> None:
    part = PASSWORD[start : start + MIN_FRAGMENT]
    text = f"the portal said: {part} is wrong"
    assert scrub(text, [PASSWORD]) == f"the portal said: {MASK} is wrong"


def test_a_part_shorter_than_eight_characters_is_left() -> None:
    part = PASSWORD[:MIN_FRAGMENT - 1]  # fmt: skip
    assert scrub(f"x {part} y", [PASSWORD]) == f"x {part} y"


def test_a_longer_part_is_masked_whole_not_only_its_windows() -> None:
    part = PASSWORD[2:21]
    assert scrub(f"<{part}>", [PASSWORD]) == f"<{MASK}>"


def test_several_occurrences_and_several_secrets() -> None:
    other = "Owner-Secret-9876"
    text = f"{PASSWORD} and {other} and again {PASSWORD[5:]}"
    assert scrub(text, [PASSWORD, other]) == f"{MASK} and {MASK} and again {MASK}"


def test_a_short_secret_is_masked_only_whole() -> None:
    assert scrub("code abc12 here, abc1 there", ["abc12"]) == f"code {MASK} here, abc1 there"


@pytest.mark.parametrize(
    "echoed",
    [
        '{"password": "Quote\\"d&<Pass>/word"}',  # JSON-escaped
        "Quote&quot;d&amp;&lt;Pass&gt;/word",  # HTML-escaped
        "Quote%22d%26%3CPass%3E%2Fword",  # URL-encoded
    ],
)
def test_escaped_forms_of_a_secret_are_masked(echoed: str) -> None:
    secret = 'Quote"d&<Pass>/word'
    result = scrub(echoed, [secret])
    assert MASK in result
    for start in range(len(secret) - MIN_FRAGMENT + 1):
        assert secret[start : start + MIN_FRAGMENT] not in result


def test_no_secrets_changes_nothing() -> None:
    assert scrub("anything", []) == "anything"
    assert scrub("anything", [None, ""]) == "anything"
    value = {"a": [1, "b"]}
    assert scrub(value, []) is value


def test_nested_result_data_is_scrubbed_recursively() -> None:
    result = {
        "account": {"email": "a@example.com", "note": f"password {PASSWORD}"},
        "echo": [1, None, True, f"...{PASSWORD[4:20]}...", {"deep": [PASSWORD]}],
        "tuple": ("x", PASSWORD),
        PASSWORD: "a key too",
        "count": 3,
    }
    clean = scrub(result, [PASSWORD])
    assert clean == {
        "account": {"email": "a@example.com", "note": f"password {MASK}"},
        "echo": [1, None, True, f"...{MASK}...", {"deep": [MASK]}],
        "tuple": ("x", MASK),
        MASK: "a key too",
        "count": 3,
    }
    assert PASSWORD[:MIN_FRAGMENT] not in repr(clean)


def test_a_scrubber_is_falsy_without_secrets() -> None:
    assert not Scrubber([])
    assert Scrubber([PASSWORD])


# --- classify: scrub before truncating -----------------------------------------------------


def test_classify_scrubs_before_it_cuts_the_message() -> None:
    # The password straddles the cut: cut first, its first part would survive unmatched.
    prefix = "x" * (MESSAGE_LIMIT - 12)
    error = classify(RuntimeError(prefix + PASSWORD), [PASSWORD])
    assert len(error.message) <= MESSAGE_LIMIT
    assert PASSWORD[:MIN_FRAGMENT] not in error.message
    assert PASSWORD[:12] not in error.message
    assert error.message.startswith("RuntimeError: xxx")


def test_classify_cuts_long_messages_after_scrubbing() -> None:
    error = classify(RuntimeError("y" * 5000), [PASSWORD])
    assert len(error.message) == MESSAGE_LIMIT
    assert error.message.endswith("…")


def test_classify_scrubs_a_step_error_message() -> None:
    exc = OutsideSystemError(f"platform API answered HTTP 400: bad {PASSWORD}", status_code=400)
    error = classify(exc, Scrubber([PASSWORD]))
    assert error.message == f"platform API answered HTTP 400: bad {MASK}"
    assert error.error_class is ErrorClass.NON_RETRYABLE


def test_scrubbed_masks_parts_too() -> None:
    error = classify(RuntimeError("boom"))
    assert scrubbed(error, [PASSWORD]) is error
    leaky = classify(RuntimeError(f"boom {PASSWORD[3:15]}"))
    assert scrubbed(leaky, [PASSWORD]).message == f"RuntimeError: boom {MASK}"


# --- what Prefect is given --------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "error_class"),
    [
        (OutsideSystemError("HTTP 503", status_code=503, retry_after=2), ErrorClass.RETRYABLE),
        (OutsideSystemError("HTTP 400", status_code=400), ErrorClass.NON_RETRYABLE),
        (RuntimeError("crashed"), ErrorClass.RETRYABLE),
    ],
)
def test_the_new_exception_carries_the_class_and_prefect_retries_by_it(
    exc: Exception, error_class: ErrorClass
) -> None:
    from tasks.steps import should_retry

    error = classify(exc)
    failure = StepAttemptFailed.of(error)
    assert classify(failure) == error
    assert failure.error_class is error_class
    state: Any = Failed(data=failure)
    assert should_retry(None, None, state) is (error_class is ErrorClass.RETRYABLE)  # type: ignore[arg-type]


def test_the_new_exception_pickles() -> None:
    import pickle

    failure = StepAttemptFailed.of(classify(OutsideSystemError("HTTP 429", status_code=429)))
    copy = pickle.loads(pickle.dumps(failure))
    assert classify(copy) == classify(failure)
    assert copy.next_action is NextAction.RETRY


class _FakeLedger:
    """Stands in for the ledger writes `_attempt` makes; records them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, fn: Any, /, **kwargs: Any) -> Any:
        self.calls.append((fn.__name__, kwargs))
        if fn.__name__ == "start_attempt":
            from regjobs.ledger import Attempt

            return Attempt(number=1, generation=1, not_before=None, inputs={})
        return None


def _run_attempt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, handler: Any
) -> tuple[_FakeLedger, BaseException | None, Any]:
    import httpx

    from regjobs import catalogue
    from tasks import handlers, steps
    from tasks.browser import BrowserPool
    from tasks.clients.systems import Clients

    config = ExecutionConfig.model_validate(full_config(account={"password": PASSWORD}))
    settings = Settings(state_dir=tmp_path, step_mode=StepMode.ENDPOINTS)
    fake = _FakeLedger()
    monkeypatch.setattr(steps, "ledger_write", fake)
    monkeypatch.setattr(steps, "get_run_logger", lambda: logging.getLogger("test.steps"))
    monkeypatch.setitem(handlers.HANDLERS, "account_registration", handler)
    resources = steps.Resources(
        job_id="job-1",
        epoch=1,
        config=config,
        clients=Clients.build(httpx.AsyncClient(), settings),
        browser=BrowserPool(settings, "run-1"),
        scrubber=Scrubber(config.secrets()),
        organisation_id="org-1",
    )

    async def go() -> Any:
        token = steps._resources.set(resources)
        try:
            return await steps._attempt(settings, catalogue.step("account_registration"), None)
        finally:
            steps._resources.reset(token)

    try:
        return fake, None, asyncio.run(go())
    except Exception as exc:
        return fake, exc, None


def test_a_failed_attempt_raises_only_the_scrubbed_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class BrowserError(Exception):
        """Like Playwright's errors: their call log names the value given to fill()."""

    async def leaky(ctx: Any) -> Any:
        raise BrowserError(
            f"Locator.fill: Timeout exceeded {PASSWORD[:10]}\nCall log:\n  - fill({PASSWORD!r})"
        )

    with caplog.at_level(logging.INFO):
        fake, raised, _ = _run_attempt(monkeypatch, tmp_path, leaky)

    assert isinstance(raised, StepAttemptFailed)
    assert raised.error_class is ErrorClass.RETRYABLE
    assert raised.__cause__ is None and raised.__context__ is None
    assert raised.__suppress_context__
    assert PASSWORD[:MIN_FRAGMENT] not in repr(raised)
    assert "Call log" not in str(raised)
    [(_, failed)] = [c for c in fake.calls if c[0] == "fail_attempt"]
    assert MASK in failed["error"].message
    assert PASSWORD[:MIN_FRAGMENT] not in caplog.text


def test_a_result_and_warning_are_scrubbed_before_the_ledger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from regjobs.errors import AlreadyDone

    async def echoing(ctx: Any) -> Any:
        raise AlreadyDone(
            f"exists for {PASSWORD}", {"account": {"echo": [f"pw={PASSWORD}"]}, "id": 7}
        )

    fake, raised, result = _run_attempt(monkeypatch, tmp_path, echoing)
    assert raised is None
    [(_, completed)] = [c for c in fake.calls if c[0] == "complete_attempt"]
    assert completed["result"] == {"account": {"echo": [f"pw={MASK}"]}, "id": 7}
    assert completed["warning"] == f"exists for {MASK}"
    assert result == completed["result"]
