"""Prefect flow-run and task-run state plus the step ledger, translated into SPEC.md's shape.

The only module that knows how Prefect's states map to job and step statuses. Pure: it
takes what was read (the job row, its step rows, and, for the reconciler, a snapshot of the
flow run and its task runs) and returns the public job; nothing here does I/O. Without a
snapshot it is the materialised view the ledger writes with every change.

What Prefect really does, and so what this must not believe (DESIGN.md, measured on 3.9):
- cancel: the flow-run process gets SIGTERM, a running task run ends Crashed (not
  Cancelled), the flow run passes through Cancelling;
- a dead flow-run process: the flow run is Crashed but its task runs stay Running forever;
- between attempts a task run is Scheduled/AwaitingRetry, then Running named "Retrying".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from prefect.client.schemas.objects import State, StateType

from regjobs import catalogue
from regjobs.catalogue import (
    ACTIVE_JOB_STATUSES,
    DISABLED_REASON,
    JobStatus,
    NextAction,
    StepStatus,
)
from regjobs.models import RegistrationJob, RegistrationJobStep
from regjobs.schemas import (
    ActionRequired,
    EvidencePublic,
    JobPublic,
    JobSummary,
    Phase,
    ProgressPublic,
    StepPublic,
)

#: A flow-run process starts in a few seconds; a run Pending much longer has no worker.
PENDING_GRACE_SECONDS = 30.0


def pending_grace(lease_seconds: float) -> float:
    """How long a run may stay Pending (claimed, its process starting) before it counts as
    lost with its worker."""
    return max(PENDING_GRACE_SECONDS, 3 * lease_seconds)


WORKER_LOST = "the worker was lost: the flow-run process ended while this step was running"

#: The state name the reconciler gives a flow run Prefect no longer has (deleted, or a
#: Prefect database reset): its job can never end by itself.
DISAPPEARED = "Disappeared"
DISAPPEARED_MESSAGE = "the flow run disappeared from Prefect (deleted, or Prefect was reset)"
#: How the error of a job whose stored config no longer validates begins (`fix_config`).
CONFIG_INVALID = "the job's stored execution config is not valid"


@dataclass(frozen=True)
class RunState:
    """A Prefect state, as much of it as the translation needs."""

    type: StateType
    name: str
    message: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class TaskRunSnapshot:
    id: str
    state: RunState
    run_count: int = 0


@dataclass(frozen=True)
class FlowRunSnapshot:
    id: str
    state: RunState
    #: Task runs of this flow run by task-run id.
    task_runs: Mapping[str, TaskRunSnapshot]


_QUEUED = {StateType.SCHEDULED, StateType.PENDING}
_ACTIVE = {StateType.RUNNING, StateType.PAUSED}
_CANCEL = {StateType.CANCELLING, StateType.CANCELLED}
_FINAL_STEP = catalogue.FINAL_STEP_STATUSES
_RUNNING = {StepStatus.RUNNING, StepStatus.RETRYING}
_LIVE_STEP = {StepStatus.PENDING, *_RUNNING}
S = StepStatus
J = JobStatus


# ------------------------------------------------------------- the reconciler's questions


def run_state(state: State | None) -> RunState:
    """A flow run's state as Prefect gave it (none yet: Pending)."""
    if state is None:
        return RunState(StateType.PENDING, "Pending")
    return RunState(
        state.type, state.name or state.type.value.title(), state.message, state.timestamp
    )


def missing_run(flow_run_id: str, now: datetime) -> FlowRunSnapshot:
    """A flow run Prefect no longer has (deleted, or Prefect was reset), as the reconciler
    takes it: Crashed, named `DISAPPEARED`."""
    state = RunState(StateType.CRASHED, DISAPPEARED, DISAPPEARED_MESSAGE, now)
    return FlowRunSnapshot(flow_run_id, state, {})


def is_live(state: RunState) -> bool:
    """The flow run is yet to run or running: its job has no outcome to record."""
    return state.type in _QUEUED or state.type in _ACTIVE


def is_queued(state: RunState) -> bool:
    """The flow run waits in Prefect for a worker (or for its process to start)."""
    return state.type in _QUEUED


def is_crash(state: RunState) -> bool:
    """The flow run crashed while Prefect still has it (its process died, its worker was
    lost): it may have ended before it began its job."""
    return state.type is StateType.CRASHED and state.name != DISAPPEARED


def is_cancelling(state_type: StateType | None) -> bool:
    """The flow run is being (or was) cancelled in Prefect."""
    return state_type in _CANCEL


@dataclass(frozen=True)
class _Step:
    status: StepStatus
    error_message: str | None
    skip_reason: str | None


def _from_task_run(status: StepStatus, task_run: TaskRunSnapshot | None) -> _Step | None:
    """What a live task run adds to a non-final ledger row while its flow run is active."""
    if task_run is None:
        return None
    state = task_run.state
    if state.type in (StateType.SCHEDULED, StateType.PENDING) and task_run.run_count > 0:
        return _Step(S.RETRYING, None, None)  # AwaitingRetry: between attempts
    if state.type is StateType.RUNNING and state.name == "Retrying":
        return _Step(S.RETRYING, None, None)
    if state.type is StateType.RUNNING:
        return _Step(S.RETRYING if status is S.RETRYING else S.RUNNING, None, None)
    if state.type is StateType.CRASHED:
        return _Step(S.FAILED, f"the step crashed: {state.message or 'no message'}", None)
    if state.type in _CANCEL:
        return _Step(S.CANCELLED, None, "cancelled while running")
    if state.type is StateType.FAILED:
        return _Step(S.FAILED, state.message or "the step failed", None)
    return None  # Completed, Cached, Paused: the ledger row is written right after


def step_view(
    row: RegistrationJobStep, flow: FlowRunSnapshot | None
) -> tuple[StepStatus, str | None, str | None]:
    """The status, error message and skip reason a step shows."""
    ledger_status = StepStatus(row.status)
    if ledger_status in _FINAL_STEP:
        return ledger_status, row.error_message, row.skip_reason
    if flow is None:
        # Never started, or Prefect did not answer just now: the ledger is all there is.
        return ledger_status, row.error_message, None
    if flow.state.type in _QUEUED:
        # Nothing runs while the flow run is queued, whatever an older run left behind.
        return S.PENDING, None, None
    state = flow.state.type
    was_running = ledger_status in _RUNNING
    if state in _ACTIVE:
        task_run = flow.task_runs.get(row.task_run_id or "")
        refined = _from_task_run(ledger_status, task_run) if was_running else None
        if refined is not None:
            return refined.status, refined.error_message or row.error_message, refined.skip_reason
        return ledger_status, row.error_message, None
    if state in _CANCEL:
        reason = "the job was cancelled" + ("" if was_running else " before this step started")
        return S.CANCELLED, None, reason
    if state is StateType.CRASHED and flow.state.name == DISAPPEARED:
        if was_running:
            return S.FAILED, DISAPPEARED_MESSAGE + " while this step was running", None
        return S.SKIPPED, None, "not run: the flow run disappeared"
    if state is StateType.CRASHED:
        if was_running:
            return S.FAILED, WORKER_LOST, None
        return S.SKIPPED, None, "not run: the job's worker was lost"
    # Failed or Completed with a step never finished: the flow ended around it.
    if was_running:
        return S.FAILED, "the flow run ended while this step was running", None
    return S.SKIPPED, None, "not run: the job ended first"


def job_status(
    job: RegistrationJob, steps: Sequence[StepPublic], flow: FlowRunSnapshot | None
) -> tuple[JobStatus, str | None]:
    if flow is None:
        return JobStatus(job.status), job.error_message
    state = flow.state
    if state.type in _QUEUED:
        return (J.IN_PROGRESS if job.started_at else J.PENDING), None
    if state.type in _ACTIVE:
        return J.IN_PROGRESS, None
    if state.type in _CANCEL:
        return J.CANCELLED, job.error_message or "the job was cancelled"
    if state.type is StateType.CRASHED and state.name == DISAPPEARED:
        return J.FAILED, DISAPPEARED_MESSAGE
    if state.type is StateType.CRASHED:
        return J.FAILED, f"the worker was lost: {state.message or 'the flow run crashed'}"
    if state.type is StateType.COMPLETED and all(
        s.status is S.COMPLETED or _skipped_as_disabled(s) for s in steps
    ):
        return J.COMPLETED, None
    return J.FAILED, job.error_message or state.message or "the job failed"


def _skipped_as_disabled(step: StepPublic) -> bool:
    return step.status is S.SKIPPED and step.skip_reason == DISABLED_REASON


def _current(steps: Sequence[StepPublic]) -> tuple[int, Phase]:
    active = [s for s in steps if s.status in _RUNNING]
    if active:
        first = min(active, key=lambda s: s.step_number)
        return first.step_number, first.phase
    finished = [s for s in steps if s.status in _FINAL_STEP]
    if finished:
        last = max(finished, key=lambda s: s.step_number)
        return last.step_number, last.phase
    return 0, "phase1"


def _percent(status: JobStatus, steps: Sequence[StepPublic]) -> int:
    if status is J.COMPLETED:
        return 100
    if not steps:
        return 0
    if status in (J.FAILED, J.CANCELLED):
        # What got done: a failed job never reads 99 because its failed step "ended".
        done = sum(1 for s in steps if s.status in (S.COMPLETED, S.SKIPPED))
    else:
        done = sum(1 for s in steps if s.status in _FINAL_STEP)
    return min(99, done * 100 // len(steps))


def _stopped_by(
    status: JobStatus,
    steps: Sequence[StepPublic],
    rows: Mapping[str, RegistrationJobStep],
    error: str | None = None,
) -> tuple[str | None, NextAction | None]:
    """Which step stopped a failed job, and what a person can do next (SPEC.md)."""
    if status is J.CANCELLED:
        return None, NextAction.RETRY
    if status is not J.FAILED:
        return None, None
    failed = [s for s in steps if s.status is S.FAILED]
    if not failed:
        config = error is not None and error.startswith(CONFIG_INVALID)
        return None, NextAction.FIX_CONFIG if config else NextAction.RETRY
    first = min(failed, key=lambda s: s.step_number)
    row = rows.get(first.step_id)
    return first.step_id, NextAction(
        row.next_action
    ) if row and row.next_action else NextAction.RETRY


def action_required(
    status: JobStatus, steps: Sequence[StepPublic], rows: Mapping[str, RegistrationJobStep]
) -> ActionRequired | None:
    """What an active job waiting for a person asks for: the lowest-numbered waiting step,
    and the fields every waiting step asks for (one form corrects them all)."""
    if not status.is_active:
        return None
    waiting = [rows[s.step_id] for s in steps if s.status is S.ACTION_REQUIRED]
    if not waiting:
        return None
    first = min(waiting, key=lambda r: r.step_number)
    expiries = [r.action_expires_at for r in waiting if r.action_expires_at is not None]
    return ActionRequired(
        step_id=first.step_id,
        reason=first.error_message or "a person must correct the job's config",
        fields=list(dict.fromkeys(f for r in waiting for f in r.action_fields or ())),
        since=first.action_since,
        expires_at=min(expiries, default=None),
    )


def lease_expired(
    job: RegistrationJob, flow: FlowRunSnapshot | None, now: datetime, lease_seconds: float
) -> FlowRunSnapshot | None:
    """The flow run as it really is, where Prefect cannot know it is dead and would keep it
    Running (or Pending) forever:
    - Running, but its process has not renewed the job's lease in `lease_seconds` (its
      worker died with it, or it hangs);
    - Pending (a worker claimed it) far longer than a flow-run process takes to start: the
      worker died before the job began.
    """
    if flow is None or job.status not in ACTIVE_JOB_STATUSES:
        return flow
    state = flow.state
    since = state.timestamp
    if state.type is StateType.RUNNING:
        # The latest sign of life: the lease, or the run's start if it began since.
        if job.heartbeat_at is not None and (since is None or job.heartbeat_at > since):
            since = job.heartbeat_at
        limit, what = lease_seconds, "no heartbeat from the flow-run process"
    elif state.type is StateType.PENDING:
        limit = pending_grace(lease_seconds)
        what = "the worker was lost before the job started: Pending"
    else:
        return flow
    if since is None or (now - since).total_seconds() <= limit:
        return flow
    message = f"{what} for {(now - since).total_seconds():.0f} s"
    return replace(flow, state=RunState(StateType.CRASHED, "Crashed", message, now))


def job_public(
    job: RegistrationJob,
    rows: Sequence[RegistrationJobStep],
    flow: FlowRunSnapshot | None,
    *,
    prefect_ui_url: str | None = None,
    evidence: Mapping[str, Sequence[EvidencePublic]] | None = None,
) -> JobPublic:
    steps: list[StepPublic] = []
    for row in sorted(rows, key=lambda r: r.step_number):
        meta = catalogue.step(row.step_id)
        step_status, error, reason = step_view(row, flow)
        ledger_final = row.status in _FINAL_STEP
        steps.append(
            StepPublic(
                step_id=row.step_id,
                step_number=row.step_number,
                step_label=meta.label,
                phase=meta.phase,
                status=step_status,
                attempts=row.attempts,
                duration_ms=row.duration_ms,
                started_at=row.started_at,
                completed_at=row.finished_at if ledger_final else None,
                error_message=error,
                warning=row.warning,
                result_data=row.result_data if step_status is S.COMPLETED else None,
                skip_reason=reason if step_status in (S.SKIPPED, S.CANCELLED) else None,
                # What a live step says it is doing (or waiting for); nothing stale.
                progress=(
                    row.progress
                    if step_status == row.status and step_status in _LIVE_STEP
                    else None
                ),
                evidence=list((evidence or {}).get(row.step_id, ())),
                stalled_since=row.stalled_since if step_status in _LIVE_STEP else None,
            )
        )
    status, error = job_status(job, steps, flow)
    current_step, current_phase = _current(steps)
    by_id = {r.step_id: r for r in rows}
    failed_step, next_action = _stopped_by(status, steps, by_id, error)
    waiting = action_required(status, steps, by_id)
    if waiting is not None:
        next_action = NextAction.PROVIDE_INPUT
    flow_run_id = flow.id if flow else job.flow_run_id
    return JobPublic(
        id=job.id,
        restaurant_id=job.restaurant_id,
        restaurant_name=job.restaurant_name,
        status=status,
        current_phase=current_phase,
        current_step=current_step,
        progress_percent=_percent(status, steps),
        steps=steps,
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=_ended_at(job, flow) if status.is_final else None,
        error_message=error,
        failed_step=failed_step,
        next_action=next_action,
        action_required=waiting,
        pending_reason=job.pending_reason if status.is_active else None,
        code_version=job.code_version,
        stalled_since=(
            min(
                (t for t in (job.stalled_since, *(s.stalled_since for s in steps)) if t),
                default=None,
            )
            if status.is_active
            else None
        ),
        flow_run_id=flow_run_id,
        flow_run_url=(
            f"{prefect_ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"
            if prefect_ui_url and flow_run_id
            else None
        ),
        flow_run_state=flow.state.name if flow else job.flow_run_state,
        version=job.version,
    )


def _ended_at(job: RegistrationJob, flow: FlowRunSnapshot | None) -> datetime | None:
    """When the job ended: as the flow recorded it, else when Prefect saw the run end (a
    crashed run never gets to record it)."""
    if job.completed_at is not None:
        return job.completed_at
    return flow.state.timestamp if flow is not None else None


def summary(job: JobPublic) -> JobSummary:
    return JobSummary.model_validate(job.model_dump(exclude={"steps"}))


def progress_public(job: JobPublic) -> ProgressPublic:
    return ProgressPublic(
        status=job.status,
        current_phase=job.current_phase,
        current_step=job.current_step,
        step_statuses={s.step_id: s.status for s in job.steps},
        progress_percent=job.progress_percent,
    )
