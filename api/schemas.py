"""Request and response schemas of the REST API (SPEC.md), named by suffix."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from regjobs.config import ExecutionConfig

JobStatus = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
StepStatusName = Literal[
    "pending", "running", "retrying", "completed", "failed", "skipped", "cancelled"
]
Phase = Literal["phase1", "phase2", "phase3", "phase4"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    restaurant_id: str = Field(min_length=1, max_length=200)
    auto_start: bool = True
    execution_config: ExecutionConfig


class EvidencePublic(BaseModel):
    attempt: int
    #: A screenshot (PNG, password fields masked); the link works without an API key.
    url: str


class StepPublic(BaseModel):
    step_id: str
    step_number: int
    step_label: str
    phase: Phase
    status: StepStatusName
    attempts: int
    duration_ms: int | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    warning: str | None
    result_data: dict[str, Any] | None
    #: Why a skipped or cancelled step did not run.
    skip_reason: str | None = None
    #: Progress inside a long step ("option set 14 of 73"), or why it waits.
    progress: str | None = None
    #: Screenshots of failed browser attempts.
    evidence: list[EvidencePublic] = Field(default_factory=list)


class JobPublic(BaseModel):
    id: str
    restaurant_id: str
    status: JobStatus
    current_phase: Phase
    current_step: int = Field(ge=0, le=12)
    progress_percent: int = Field(ge=0, le=100)
    steps: list[StepPublic]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    #: The Prefect state behind `status` (e.g. "Crashed", "AwaitingRetry").
    flow_run_state: str | None = None


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus
    steps: list[StepPublic]
    flow_run_id: str | None = None


class ProgressPublic(BaseModel):
    status: JobStatus
    current_phase: Phase
    current_step: int = Field(ge=0, le=12)
    step_statuses: dict[str, StepStatusName]
    progress_percent: int = Field(ge=0, le=100)


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    prefect: bool
    deployment: bool


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
