"""Request and response schemas of the REST API (SPEC.md), named by suffix. The job's own
shape (JobPublic, StepPublic, ...) lives in `regjobs.schemas`: the ledger writes it."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from regjobs.catalogue import JobStatus
from regjobs.config import ExecutionConfig
from regjobs.schemas import (
    EvidencePublic,
    JobPublic,
    JobSummary,
    ProgressPublic,
    StepPublic,
)

__all__ = [
    "IDEMPOTENCY_KEY_MAX",
    "ActionResult",
    "ActiveJobPublic",
    "EvidencePublic",
    "HealthPublic",
    "IdempotencyKey",
    "JobCreate",
    "JobCreated",
    "JobList",
    "JobPublic",
    "JobSummary",
    "ProgressPublic",
    "RestaurantId",
    "RetryRequest",
    "StepPublic",
    "ViewTokenPublic",
    "ViewTokenRequest",
]


#: The longest `Idempotency-Key` taken (longer: 422).
IDEMPOTENCY_KEY_MAX: Final = 200


def _key_not_blank(value: str) -> str:
    # An empty key is a client's bug (an unset variable): said, not taken as "no key", and
    # never stored, where every other empty key of the organisation would meet it.
    if not value.strip():
        raise PydanticCustomError(
            "blank",
            f"must not be empty or only spaces: send a key of 1 to {IDEMPOTENCY_KEY_MAX} "
            "characters, or leave the header out",
        )
    return value


#: The `Idempotency-Key` header of a create: 1 to 200 characters, not all spaces.
IdempotencyKey = Annotated[
    str, StringConstraints(max_length=IDEMPOTENCY_KEY_MAX), AfterValidator(_key_not_blank)
]


def idempotency_key_valid(value: str) -> bool:
    """Whether the route takes this `Idempotency-Key` (else it answers its 422)."""
    return bool(value.strip()) and len(value) <= IDEMPOTENCY_KEY_MAX


#: The longest restaurant id taken.
RESTAURANT_ID_MAX: Final = 100
#: Unicode categories a restaurant id may not hold: control and format characters (a NUL,
#: a line break, a right-to-left override, a zero-width space), surrogates, line and
#: paragraph separators.
_NOT_IN_IDS: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _check_restaurant_id(value: str) -> str:
    # It is a path segment (`/api/restaurants/{id}/...`), a Prefect tag and shown to
    # operators: no '/' or '\\' (the URL would not reach it), nothing invisible, not blank,
    # and not '.' or '..', which URL parsers resolve away even percent-encoded.
    if (
        value != value.strip()
        or value in (".", "..")
        or any(c in "/\\" or unicodedata.category(c) in _NOT_IN_IDS for c in value)
    ):
        raise PydanticCustomError(
            "restaurant_id_format",
            f"must be 1 to {RESTAURANT_ID_MAX} characters (letters of any script, digits, "
            "spaces, punctuation) without '/', a backslash or control characters, no space at "
            "either end, and not '.' or '..' (it is a path segment of the restaurant's URL)",
        )
    return value


#: A restaurant's id, as the frontend has it (see `_check_restaurant_id`).
RestaurantId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=RESTAURANT_ID_MAX),
    AfterValidator(_check_restaurant_id),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": RESTAURANT_ID_MAX,
            "pattern": r"^(?!\.\.?$)[^\s/\\\x00-\x1f\x7f-\x9f]"
            r"(?:[^/\\\x00-\x1f\x7f-\x9f]*[^\s/\\\x00-\x1f\x7f-\x9f])?$",
        }
    ),
]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    restaurant_id: RestaurantId
    auto_start: bool = True
    execution_config: ExecutionConfig


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus
    steps: list[StepPublic]
    flow_run_id: str | None = None
    #: Why the job has not started yet (it starts once Prefect has its flow run).
    pending_reason: str | None = None
    version: int = 0
    #: The job status page with a view token (`POST .../view-token` makes more).
    view_url: str | None = None


class ViewTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    #: How long the token opens the job (REGJOBS_VIEW_TOKEN_TTL_SECONDS, 24 h, if not said).
    expires_in_seconds: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)


class ViewTokenPublic(BaseModel):
    #: Opens this job's reads, event stream, evidence and `/input` (as `?token=` or a bearer).
    token: str
    expires_at: datetime
    #: The job status page with this token.
    url: str


class JobList(BaseModel):
    jobs: list[JobSummary]
    #: Pass as `cursor` for the next page; null on the last one.
    next_cursor: str | None


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    prefect: bool
    deployment: bool
    #: This process's part in reconciling: the one leader, or standing by.
    reconciler: Literal["leader", "standby", "off"]
    #: Cycles this process has run as the leader.
    reconciler_cycles: int = 0


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    #: Also re-run this step and every step that depends on it, even when completed.
    from_step: str | None = Field(default=None, examples=["website_configuration"])


class InputRequest(BaseModel):
    """Body of `POST .../input`: the fields a waiting step asked for (and any other
    correction), as a partial execution config; merged into the stored one."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    execution_config: dict[str, Any] = Field(
        examples=[{"account": {"password": "the corrected password"}}]
    )


class ActionResult(BaseModel):
    success: bool
    status: JobStatus
    flow_run_id: str | None = None


class ActiveJobPublic(BaseModel):
    job: JobPublic | None
