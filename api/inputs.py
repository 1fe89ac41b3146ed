"""A person's corrected input for a job waiting for one (`POST .../input`, SPEC "Waiting for
a person"): merged into the stored config and validated as a create is, checked with the
outside system where it can check it (a login), then stored encrypted as a new config
version in one compare-and-set (`ledger.provide_input`), which queues the waiting steps
again and puts the suspended flow run's resume in the outbox. Nothing here calls Prefect.

The values are secrets like the config's others: never in an answer, a log line or an
error (errors name the field, never the value).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from api import service
from regjobs import ledger, refusals
from regjobs.config import ExecutionConfig, field_value, merged
from regjobs.config_fields import public_errors
from regjobs.crypto import encrypt_json
from regjobs.db import read_session, transaction
from regjobs.errors import ACCOUNT_LOGIN, ONBOARDING_LOGIN, LoginRefused, OutsideSystemError
from regjobs.models import RegistrationJob
from regjobs.settings import Settings, get_settings
from tasks.clients.choice import login_clients
from tasks.clients.http import TLS

logger = logging.getLogger("regjobs.api.input")

#: How long the API waits for an outside system's answer to a login check.
CHECK_TIMEOUT_SECONDS = 10.0
#: Where the fields of the body are (`loc` of a 422).
_BODY = ("body", "execution_config")


class InputInvalid(Exception):
    """The input cannot be taken (HTTP 422); `errors` in FastAPI's shape, naming fields."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def _invalid(field: str, message: str, kind: str = "value_error") -> InputInvalid:
    return InputInvalid([{"type": kind, "loc": [*_BODY, *field.split(".")], "msg": message}])


@dataclass(frozen=True)
class Checked:
    """A validated input: the config to store, from the stored version `based_on`."""

    job_id: str
    based_on: int
    config: ExecutionConfig
    #: The fields the waiting steps asked for.
    asked: tuple[str, ...]


def _stored(job_id: str) -> tuple[int, dict[str, list[str]], dict[str, Any]]:
    """The job's config version, its waiting steps with their fields, and its stored
    config (decrypted); ledger.Conflict when no step waits."""
    with read_session() as session:
        version, waiting = ledger.waiting_steps(session=session, job_id=job_id)
        job = session.get_one(RegistrationJob, job_id)
        return version, waiting, ledger.job_config(job).secret_dict()


def check(*, job_id: str, partial: Mapping[str, Any]) -> Checked:
    """Merge and validate (InputInvalid naming the field, as a create would); Conflict
    when no step waits. At least one field a waiting step asked for must change: the value
    the outside system refused would be refused again."""
    version, waiting, stored = _stored(job_id)
    candidate = merged(stored, partial)
    try:
        config = ExecutionConfig.model_validate(candidate)
    except ValidationError as exc:
        raise InputInvalid(
            [{**e, "loc": [*_BODY, *e["loc"]]} for e in public_errors(exc)]
        ) from None
    asked = tuple(dict.fromkeys(f for fields in waiting.values() for f in fields))
    now = config.secret_dict()
    if asked and all(field_value(now, f) == field_value(stored, f) for f in asked):
        raise _invalid(
            asked[-1],
            f"unchanged: give a new value for {' or '.join(asked)} (the value the job has "
            "was refused)",
        )
    return Checked(job_id, version, config, asked)


async def verify(checked: Checked, settings: Settings | None = None) -> None:
    """Where the outside system can check the corrected values first, check them: a login
    it still refuses is InputInvalid (the job keeps waiting) and counts as a refused login
    (`regjobs.refusals`: the per-email limit applies here too, TooManyRefusedLogins). A
    system that cannot be reached now decides nothing: the step will ask it."""
    settings = settings or get_settings()
    logins = [
        (fields, email, password)
        for fields, email, password in (
            (ACCOUNT_LOGIN, checked.config.account.email, checked.config.account.password),
            (
                ONBOARDING_LOGIN,
                checked.config.onboarding.user_email,
                checked.config.onboarding.user_password,
            ),
        )
        if set(fields) & set(checked.asked) and email and password
    ]
    if not logins:
        return
    await service.run(_check_refusals, emails={f[0]: str(e) for f, e, _ in logins})
    timeout = httpx.Timeout(min(settings.http_timeout_seconds, CHECK_TIMEOUT_SECONDS))
    async with httpx.AsyncClient(timeout=timeout, verify=TLS) as http:
        platform, onboarding = login_clients(settings, http)
        for fields, email, password in logins:
            system = platform if fields == ACCOUNT_LOGIN else onboarding
            trace = f"{checked.job_id}:input"
            try:
                await system.log_in(str(email), password.get_secret_value(), trace)
            except LoginRefused:
                await service.run(_record_refusal, email=str(email))
                raise _refused(fields, checked.asked) from None
            except (httpx.HTTPError, OutsideSystemError) as exc:
                logger.warning(
                    "job %s: could not check the corrected login first (%s); taking it",
                    checked.job_id,
                    type(exc).__name__,
                )


def _check_refusals(*, emails: dict[str, str]) -> None:
    with read_session() as session:
        refusals.check(session=session, emails=emails)


def _record_refusal(*, email: str) -> None:
    transaction(refusals.record, email=email)


def _refused(fields: Sequence[str], asked: Sequence[str]) -> InputInvalid:
    named = [f for f in fields if f in asked] or list(fields)
    return _invalid(
        named[-1],
        f"still refused: the login with {' and '.join(fields)} does not open the account; "
        "the job keeps waiting",
    )


def store(*, checked: Checked) -> RegistrationJob:
    """The compare-and-set: the new config version, the waiting steps queued again, the
    resume in the outbox (ledger.Conflict when another input or a cancel came first)."""
    return transaction(
        ledger.provide_input,
        job_id=checked.job_id,
        based_on=checked.based_on,
        config_encrypted=encrypt_json(checked.config.secret_dict()),
        config_public=checked.config.public_dict(),
    )
