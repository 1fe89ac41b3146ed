"""Error classes of SPEC.md and the one function that sorts an exception into them."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import httpx

from regjobs.catalogue import NextAction
from regjobs.secrets import Scrubber

#: The longest error message kept (cut after scrubbing, so no cut-off secret survives).
MESSAGE_LIMIT: Final = 300


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"
    NON_RETRYABLE = "non_retryable"
    #: SPEC's "needs a person": only a corrected config can help (never retried).
    NEEDS_PERSON = "needs_person"


class StepError(Exception):
    """An error a step raises on purpose, already classified, with a message for a person."""

    error_class: ErrorClass = ErrorClass.NON_RETRYABLE
    #: What a person can do once the step has failed for good because of it.
    next_action: NextAction = NextAction.FIX_CONFIG
    #: The config fields a person can correct to get past it (`account.password`, ...).
    fields: tuple[str, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        next_action: NextAction | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if next_action is not None:
            self.next_action = next_action


class RetryableStepError(StepError):
    error_class = ErrorClass.RETRYABLE
    next_action = NextAction.RETRY


class NonRetryableStepError(StepError):
    error_class = ErrorClass.NON_RETRYABLE


class NeedsPerson(StepError):
    """SPEC's "needs a person": an outside system refused what the job's config says (the
    account's password, say) and only a person correcting `fields` can get past it. Never
    retried; the job's next action is `fix_config`. Its message names the fields."""

    error_class = ErrorClass.NEEDS_PERSON
    next_action = NextAction.FIX_CONFIG

    def __init__(self, reason: str, *, fields: Sequence[str]) -> None:
        if not fields:
            raise ValueError("a step that needs a person names the fields they can correct")
        self.reason = reason
        self.fields = tuple(fields)
        super().__init__(f"{reason}; a person must correct {' or '.join(self.fields)}")


#: The config fields of each login a job makes: what a person corrects when it is refused.
ACCOUNT_LOGIN: Final = ("account.email", "account.password")
ONBOARDING_LOGIN: Final = ("onboarding.user_email", "onboarding.user_password")
#: What a person corrects when the restaurant of that name is not the job's account's.
RESTAURANT_IDENTITY: Final = ("restaurant.name", "restaurant.subdomain")
#: The config field behind each form field a person typed, by the step whose form it is:
#: a value the outside system rejects there (a phone number, an address, a subdomain
#: taken) needs a person (SPEC "Errors"), naming that config field.
TYPED_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    "restaurant_registration": {
        f: f"restaurant.{f}" for f in ("name", "address", "city", "phone", "cuisine", "subdomain")
    },
}


def value_rejected(step_id: str, message: str, form_fields: Sequence[str]) -> NeedsPerson | None:
    """The needs-a-person error of an outside system rejecting values a person typed in
    `step_id`'s form; None unless every rejected field is one a person typed."""
    typed = TYPED_FIELDS.get(step_id, {})
    fields = [typed.get(f) for f in form_fields]
    if not fields or any(f is None for f in fields):
        return None
    return NeedsPerson(message, fields=[f for f in fields if f is not None])


class LoginRefused(NeedsPerson):
    """An outside system refused the job's credentials (a login, or a request that logs
    in). `email` is the login's, for the refused-login limit; it is in no message."""

    def __init__(self, reason: str, *, fields: Sequence[str], email: str) -> None:
        super().__init__(reason, fields=fields)
        self.email = email


class ConfigError(NonRetryableStepError):
    """The execution config lacks something the step needs."""


class PreconditionFailed(NonRetryableStepError):
    """An outside system lacks what an earlier step made (a restaurant, a menu): running
    this step again alone will not help; running it from an earlier step may."""

    next_action = NextAction.RETRY_FROM_STEP


#: HTTP answers saying something an earlier step made is missing or conflicting.
PRECONDITION_STATUSES = frozenset({404, 409, 410, 412})


class OutsideSystemError(StepError):
    """An outside system answered with an HTTP error (`code`: its error code, if it gave one)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        retry_after: float | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status_code = status_code
        self.code = code
        #: The request field the system named as wrong, if it named one.
        self.field = field
        retryable = status_code == 429 or status_code >= 500
        self.error_class = ErrorClass.RETRYABLE if retryable else ErrorClass.NON_RETRYABLE
        if retryable:
            self.next_action = NextAction.RETRY
        elif status_code in PRECONDITION_STATUSES:
            self.next_action = NextAction.RETRY_FROM_STEP


class AlreadyDone(Exception):
    """The outside system says the effect already exists: the step completes with a warning."""

    def __init__(self, warning: str, existing: dict[str, Any]) -> None:
        super().__init__(warning)
        self.warning = warning
        self.existing = existing


@dataclass(frozen=True)
class Classified:
    error_class: ErrorClass
    message: str
    #: Seconds the outside system asked us to wait before the next attempt.
    retry_after: float | None = None
    #: What a person can do if this ends the step for good.
    next_action: NextAction = NextAction.RETRY
    #: The config fields a person can correct (a step that needs a person).
    fields: tuple[str, ...] = ()

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.RETRYABLE


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class StepAttemptFailed(StepError):
    """What Prefect is given for a failed attempt, in place of the original exception: the
    classified, scrubbed message and the error class (so Prefect's retry condition still
    decides by it), nothing else: no original exception, no traceback of it."""

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass = ErrorClass.NON_RETRYABLE,
        retry_after: float | None = None,
        next_action: NextAction | None = None,
        fields: Sequence[str] = (),
    ) -> None:
        super().__init__(message, retry_after=retry_after, next_action=next_action)
        self.error_class = error_class
        self.fields = tuple(fields)

    @classmethod
    def of(cls, error: Classified) -> StepAttemptFailed:
        return cls(
            error.message,
            error_class=error.error_class,
            retry_after=error.retry_after,
            next_action=error.next_action,
            fields=error.fields,
        )


def scrubbed(error: Classified, secrets: Iterable[str] | Scrubber) -> Classified:
    """The same error with the given secrets (and any part of 8 or more characters of
    them) masked in its message."""
    scrubber = secrets if isinstance(secrets, Scrubber) else Scrubber(secrets)
    message = scrubber.text(error.message)
    return error if message == error.message else replace(error, message=message)


def classify(exc: BaseException, secrets: Iterable[str] | Scrubber = ()) -> Classified:
    """Sort any exception a step can raise into the error classes of SPEC.md.

    The message is scrubbed of `secrets` first and only then cut to `MESSAGE_LIMIT`
    characters: a secret cut in half by the limit would no longer match it whole.
    """
    error = scrubbed(_classify(exc), secrets)
    if len(error.message) > MESSAGE_LIMIT:
        error = replace(error, message=error.message[: MESSAGE_LIMIT - 1] + "…")
    return error


def _classify(exc: BaseException) -> Classified:
    if isinstance(exc, StepError):
        return Classified(
            exc.error_class, exc.message, exc.retry_after, exc.next_action, exc.fields
        )
    if isinstance(exc, httpx.TimeoutException):
        return Classified(ErrorClass.RETRYABLE, f"timed out: {_request_of(exc)}")
    if isinstance(exc, httpx.TransportError):
        kind = type(exc).__name__
        return Classified(ErrorClass.RETRYABLE, f"connection failed ({kind}): {_request_of(exc)}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Classified(ErrorClass.RETRYABLE, "the step took longer than its timeout")
    # Anything else is a script that crashed: worth another attempt (SPEC, retryable).
    return Classified(ErrorClass.RETRYABLE, in_one_line(exc))


def in_one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message: a browser's errors carry
    pages of logs."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"


def _request_of(exc: httpx.RequestError) -> str:
    try:
        request = exc.request
    except RuntimeError:
        return str(exc) or type(exc).__name__
    return f"{request.method} {request.url.copy_with(query=None)}"
