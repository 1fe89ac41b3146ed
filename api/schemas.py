"""Request and response schemas of the REST API (SPEC.md), named by suffix. The job's own
shape (JobPublic, StepPublic, ...) lives in `regjobs.schemas`: the ledger writes it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from regjobs.catalogue import JobStatus
from regjobs.config import ExecutionConfig, no_nul
from regjobs.schemas import (
    EvidencePublic,
    JobPublic,
    JobSummary,
    ProgressPublic,
    StepPublic,
)

__all__ = [
    "ActionResult",
    "ActiveJobPublic",
    "EvidencePublic",
    "HealthPublic",
    "JobCreate",
    "JobCreated",
    "JobList",
    "JobPublic",
    "JobSummary",
    "ProgressPublic",
    "RetryRequest",
    "StepPublic",
]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    restaurant_id: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)]
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
    model_config = ConfigDict(extra="forbid")

    #: Also re-run this step and every step that depends on it, even when completed.
    from_step: str | None = Field(default=None, examples=["website_configuration"])


class ActionResult(BaseModel):
    success: bool
    status: JobStatus
    flow_run_id: str | None = None


class ActiveJobPublic(BaseModel):
    job: JobPublic | None
