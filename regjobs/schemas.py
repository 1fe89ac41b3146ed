"""The public shape of a job (SPEC.md), named by suffix: what GET, `/progress`, the list and
the event stream answer. The ledger writes it (the materialised view); the API reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from regjobs.catalogue import JobStatus, NextAction, StepStatus

Phase = Literal["phase1", "phase2", "phase3", "phase4"]


class EvidencePublic(BaseModel):
    attempt: int
    evidence_id: int
    #: A screenshot (PNG, password fields masked); the link works without an API key.
    url: str | None = None


class StepPublic(BaseModel):
    step_id: str
    step_number: int
    step_label: str
    phase: Phase
    status: StepStatus
    #: Every attempt in every run of the job.
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
    #: Since when the step has been running or waiting past its own limit (something is
    #: wrong: a hung process, no browser slot ever free); null while all is well.
    stalled_since: datetime | None = None


class ActionRequired(BaseModel):
    """What a job waiting for a person asks for (SPEC "Waiting for a person")."""

    step_id: str
    #: Why the step cannot go on (what the outside system refused), without any value.
    reason: str
    #: The config fields a person can correct (`account.password`, `restaurant.phone`).
    fields: list[str]
    since: datetime | None
    #: Past this the job fails with `next_action: fix_config` (REGJOBS_INPUT_TIMEOUT).
    expires_at: datetime | None


class JobSummary(BaseModel):
    """A job without its steps: a list entry, and the data of a `job` event."""

    id: str
    restaurant_id: str
    restaurant_name: str
    status: JobStatus
    current_phase: Phase
    current_step: int = Field(ge=0, le=12)
    progress_percent: int = Field(ge=0, le=100)
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    #: The step that stopped a failed job, if one did.
    failed_step: str | None = None
    #: What a person can do about a failed or cancelled job.
    next_action: NextAction | None = None
    #: What a step waiting for a person asks for; null otherwise.
    action_required: ActionRequired | None = None
    #: Why a job that should run has not started yet (Prefect unavailable, queued, its
    #: release has no live worker...).
    pending_reason: str | None = None
    #: The release the job runs on (`regjobs.release`), set when its first run begins;
    #: every later run of the job runs on it too, until an operator moves the job.
    code_version: str | None = None
    #: Since when the job (waiting to start) or one of its steps has been stuck past its
    #: limit; null while all is well.
    stalled_since: datetime | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    #: The Prefect state behind `status` (e.g. "Crashed", "Late"), as last seen.
    flow_run_state: str | None = None
    #: Grows with every change of the job or a step (the ETag; the last event's id).
    version: int = 0


class JobPublic(JobSummary):
    steps: list[StepPublic]


class ProgressPublic(BaseModel):
    status: JobStatus
    current_phase: Phase
    current_step: int = Field(ge=0, le=12)
    step_statuses: dict[str, StepStatus]
    progress_percent: int = Field(ge=0, le=100)
