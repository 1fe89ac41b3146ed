"""Error classes of SPEC.md and the one function that sorts an exception into them."""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import httpx


class ErrorClass(StrEnum):
    RETRYABLE = "retryable"
    NON_RETRYABLE = "non_retryable"


class StepError(Exception):
    """An error a step raises on purpose, already classified, with a message for a person."""

    error_class: ErrorClass = ErrorClass.NON_RETRYABLE

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RetryableStepError(StepError):
    error_class = ErrorClass.RETRYABLE


class NonRetryableStepError(StepError):
    error_class = ErrorClass.NON_RETRYABLE


class ConfigError(NonRetryableStepError):
    """The execution config lacks something the step needs."""


class OutsideSystemError(StepError):
    """An outside system answered with an HTTP error."""

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status_code = status_code
        retryable = status_code == 429 or status_code >= 500
        self.error_class = ErrorClass.RETRYABLE if retryable else ErrorClass.NON_RETRYABLE


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


def scrubbed(error: Classified, secrets: list[str]) -> Classified:
    """The same error with any of the given secrets masked in its message."""
    message = error.message
    for secret in secrets:
        if secret:
            message = message.replace(secret, "**********")
    return error if message == error.message else replace(error, message=message)


def classify(exc: BaseException) -> Classified:
    """Sort any exception a step can raise into the error classes of SPEC.md."""
    if isinstance(exc, StepError):
        return Classified(exc.error_class, exc.message, exc.retry_after)
    if isinstance(exc, httpx.TimeoutException):
        return Classified(ErrorClass.RETRYABLE, f"timed out: {_request_of(exc)}")
    if isinstance(exc, httpx.TransportError):
        kind = type(exc).__name__
        return Classified(ErrorClass.RETRYABLE, f"connection failed ({kind}): {_request_of(exc)}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Classified(ErrorClass.RETRYABLE, "the step took longer than its timeout")
    # Anything else is a script that crashed: worth another attempt (SPEC, retryable).
    # Its first line only: a browser's launch error carries pages of logs.
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return Classified(ErrorClass.RETRYABLE, f"{type(exc).__name__}: {first_line}")


def _request_of(exc: httpx.RequestError) -> str:
    try:
        request = exc.request
    except RuntimeError:
        return str(exc) or type(exc).__name__
    return f"{request.method} {request.url.copy_with(query=None)}"
