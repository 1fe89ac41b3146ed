"""Unit tests for the Prefect-state -> job/step translation (regjobs.translate)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from api.schemas import JobPublic, StepPublic
from regjobs.catalogue import DISABLED_REASON, STEP_IDS, STEPS, step
from regjobs.models import RegistrationJob, RegistrationJobStep
from regjobs.translate import (
    WORKER_LOST,
    FlowRunSnapshot,
    RunState,
    TaskRunSnapshot,
    job_public,
    progress_public,
)

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
FLOW_RUN_ID = "0b7c3a4e-1111-4222-8333-944455556666"
FINAL = {"completed", "failed", "skipped", "cancelled"}


def make_job(
    *,
    status: str = "in_progress",
    started: bool = True,
    completed_at: datetime | None = None,
    error_message: str | None = None,
    flow_run_id: str | None = FLOW_RUN_ID,
) -> RegistrationJob:
    return RegistrationJob(
        id="job-1",
        restaurant_id="rest-1",
        restaurant_name="Rest One",
        version=7,
        status=status,
        created_at=T0,
        started_at=T0 + timedelta(seconds=1) if started else None,
        completed_at=completed_at,
        error_message=error_message,
        flow_run_id=flow_run_id,
    )


def task_run_id(step_id: str) -> str:
    return f"tr-{step_id}"


def make_row(step_id: str, status: str = "pending", **values: Any) -> RegistrationJobStep:
    """One ledger row; the fields a row in that status would have, unless given."""
    meta = step(step_id)
    ran = status not in ("pending", "skipped")
    started_at = T0 + timedelta(seconds=meta.number) if ran else None
    final = status in FINAL
    defaults: dict[str, Any] = {
        "step_id": step_id,
        "step_number": meta.number,
        "status": status,
        "attempts": 0 if not ran else (2 if status == "retrying" else 1),
        "started_at": started_at,
        "finished_at": (T0 + timedelta(minutes=meta.number)) if final else None,
        "duration_ms": 1500 if final and ran else None,
        "result_data": {"from": step_id} if status == "completed" else None,
        "error_message": "boom" if status == "failed" else None,
        "warning": None,
        "skip_reason": None,
        "progress": "half way" if status in ("running", "retrying") else None,
        "task_run_id": task_run_id(step_id) if ran else None,
    }
    if status == "skipped":
        defaults["skip_reason"] = DISABLED_REASON
    defaults.update(values)
    return RegistrationJobStep(**defaults)


def make_rows(**statuses: str) -> list[RegistrationJobStep]:
    """All twelve rows, pending unless given; in reverse order to prove they get sorted."""
    unknown = set(statuses) - set(STEP_IDS)
    assert not unknown, unknown
    return [make_row(sid, statuses.get(sid, "pending")) for sid in reversed(STEP_IDS)]


def state(type_: StateType, name: str | None = None, message: str | None = None) -> RunState:
    return RunState(type=type_, name=name or type_.value.title(), message=message)


def task(step_id: str, type_: StateType, name: str | None = None, *, run_count: int = 1,
         message: str | None = None) -> TaskRunSnapshot:  # fmt: skip
    return TaskRunSnapshot(task_run_id(step_id), state(type_, name, message), run_count)


def flow(
    type_: StateType, name: str | None = None, *tasks: TaskRunSnapshot, message: str | None = None
) -> FlowRunSnapshot:
    return FlowRunSnapshot(FLOW_RUN_ID, state(type_, name, message), {t.id: t for t in tasks})


def by_id(job: JobPublic) -> dict[str, StepPublic]:
    return {s.step_id: s for s in job.steps}


def statuses_of(job: JobPublic) -> dict[str, str]:
    return {s.step_id: s.status for s in job.steps}


# A job part way through: one step done, one disabled, one retrying, two running.
MIXED = {
    "account_registration": "completed",
    "onboarding_user": "skipped",
    "code_generation": "retrying",
    "image_upload": "running",
    "restaurant_registration": "running",
}
MIXED_TASKS = (
    task("account_registration", StateType.COMPLETED),
    task("code_generation", StateType.SCHEDULED, "AwaitingRetry", run_count=1),
    task("image_upload", StateType.RUNNING),
    task("restaurant_registration", StateType.RUNNING),
)
NOT_STARTED = [s.id for s in STEPS if s.id not in MIXED]


def mixed(type_: StateType, name: str | None = None, *, message: str | None = None,
          job: RegistrationJob | None = None) -> JobPublic:  # fmt: skip
    return job_public(
        job or make_job(), make_rows(**MIXED), flow(type_, name, *MIXED_TASKS, message=message)
    )


# --- no flow run yet ----------------------------------------------------------------------


def test_no_flow_run_is_pending_at_step_zero() -> None:
    job = job_public(make_job(status="pending", started=False, flow_run_id=None), make_rows(), None)
    assert job.status == "pending"
    assert job.current_step == 0
    assert job.current_phase == "phase1"
    assert job.progress_percent == 0
    assert set(statuses_of(job).values()) == {"pending"}
    assert job.flow_run_id is None
    assert job.flow_run_url is None
    assert job.flow_run_state is None
    assert job.started_at is None
    assert job.completed_at is None


def test_steps_are_sorted_and_labelled_from_the_catalogue() -> None:
    job = job_public(make_job(status="pending", started=False), make_rows(), None)
    assert [s.step_number for s in job.steps] == list(range(1, 13))
    assert [(s.step_id, s.step_label, s.phase) for s in job.steps] == [
        (s.id, s.label, s.phase) for s in STEPS
    ]


def test_no_snapshot_of_a_started_job_answers_from_the_ledger() -> None:
    # The orchestrator hands over no snapshot when Prefect is briefly unreachable ("answer
    # from the ledger alone"): the ledger's running step must not turn into "pending".
    job = job_public(make_job(status="in_progress"), make_rows(**MIXED), None)
    assert job.status == "in_progress"
    assert job.flow_run_id == FLOW_RUN_ID
    steps = by_id(job)
    assert steps["account_registration"].status == "completed"
    assert steps["restaurant_registration"].status == "running"
    assert steps["code_generation"].status == "retrying"
    assert job.current_step == 2


# --- flow-run states ----------------------------------------------------------------------


@pytest.mark.parametrize(("type_", "name"), [(StateType.SCHEDULED, "Scheduled"),
                                             (StateType.SCHEDULED, "Late"),
                                             (StateType.PENDING, "Pending")])  # fmt: skip
def test_queued_flow_run_not_started_is_pending(type_: StateType, name: str) -> None:
    job = job_public(make_job(status="pending", started=False), make_rows(), flow(type_, name))
    assert job.status == "pending"
    assert job.current_step == 0
    assert job.progress_percent == 0
    assert job.error_message is None
    assert job.flow_run_state == name
    assert set(statuses_of(job).values()) == {"pending"}


@pytest.mark.parametrize(("type_", "name"), [(StateType.SCHEDULED, "AwaitingRetry"),
                                             (StateType.PENDING, "Pending")])  # fmt: skip
def test_queued_rerun_of_a_started_job_is_in_progress(type_: StateType, name: str) -> None:
    # A flow-run retry from the Prefect UI: the run is queued again under the same id.
    rows = make_rows(account_registration="completed", code_generation="failed",
                     restaurant_registration="running", image_upload="retrying")  # fmt: skip
    job = job_public(make_job(status="failed"), rows, flow(type_, name))
    assert job.status == "in_progress"
    steps = by_id(job)
    # Final ledger rows stand; what an older run left running shows as waiting.
    assert steps["account_registration"].status == "completed"
    assert steps["code_generation"].status == "failed"
    assert steps["restaurant_registration"].status == "pending"
    assert steps["image_upload"].status == "pending"
    assert steps["restaurant_registration"].error_message is None
    assert steps["restaurant_registration"].progress is None


@pytest.mark.parametrize(("type_", "name"), [(StateType.RUNNING, "Running"),
                                             (StateType.RUNNING, "Retrying"),
                                             (StateType.PAUSED, "Paused")])  # fmt: skip
def test_active_flow_run_is_in_progress(type_: StateType, name: str) -> None:
    job = mixed(type_, name)
    assert job.status == "in_progress"
    assert job.error_message is None
    assert job.completed_at is None
    assert job.flow_run_state == name
    steps = by_id(job)
    assert steps["account_registration"].status == "completed"
    assert steps["onboarding_user"].status == "skipped"
    assert steps["onboarding_user"].skip_reason == DISABLED_REASON
    assert steps["code_generation"].status == "retrying"
    assert steps["image_upload"].status == "running"
    assert steps["restaurant_registration"].status == "running"
    assert steps["restaurant_registration"].progress == "half way"
    assert all(steps[s].status == "pending" for s in NOT_STARTED)
    assert job.current_step == 2
    assert job.current_phase == "phase1"
    assert job.progress_percent == 2 * 100 // 12


@pytest.mark.parametrize("name", ["Completed", "Cached"])
def test_completed_flow_run_with_every_step_done_is_completed(name: str) -> None:
    rows = [make_row(sid, "completed") for sid in STEP_IDS]
    job = job_public(
        make_job(status="completed", completed_at=T0 + timedelta(hours=1)),
        rows,
        flow(StateType.COMPLETED, name),
    )
    assert job.status == "completed"
    assert job.progress_percent == 100
    assert job.error_message is None
    assert job.current_step == 12
    assert job.current_phase == "phase4"
    assert job.completed_at == T0 + timedelta(hours=1)
    assert all(s.status == "completed" for s in job.steps)


def test_completed_flow_run_with_disabled_steps_is_completed() -> None:
    off = {"onboarding_user", "onboarding_sync", "item_tags"}
    rows = [
        make_row(sid, "skipped") if sid in off else make_row(sid, "completed") for sid in STEP_IDS
    ]
    job = job_public(make_job(status="completed"), rows, flow(StateType.COMPLETED))
    assert job.status == "completed"
    assert job.progress_percent == 100
    assert {s.step_id: s.skip_reason for s in job.steps if s.status == "skipped"} == (
        dict.fromkeys(off, DISABLED_REASON)
    )


def test_completed_flow_run_with_a_step_skipped_for_a_failure_is_failed() -> None:
    rows = [make_row(sid, "completed") for sid in STEP_IDS[:9]] + [
        make_row("menu_import", "failed", error_message="menu CSV rejected"),
        make_row("option_sets", "skipped", skip_reason="not run: Menu import was not completed"),
        make_row("item_tags", "skipped", skip_reason="not run: Option sets was not completed"),
    ]
    job = job_public(make_job(error_message="Menu import failed"), rows,
                     flow(StateType.COMPLETED))  # fmt: skip
    assert job.status == "failed"
    assert job.error_message == "Menu import failed"
    # A failed job counts what got done (9 completed, 2 skipped), never its failed step.
    assert job.progress_percent == 11 * 100 // 12
    assert (job.failed_step, job.next_action) == ("menu_import", "retry")
    assert by_id(job)["option_sets"].skip_reason == "not run: Menu import was not completed"


def test_completed_flow_run_with_a_step_still_running_is_failed() -> None:
    job = mixed(StateType.COMPLETED)
    assert job.status == "failed"
    steps = by_id(job)
    assert steps["restaurant_registration"].status == "failed"
    assert "ended while this step was running" in (
        steps["restaurant_registration"].error_message or ""
    )
    assert steps["code_generation"].status == "failed"
    assert all(steps[s].status == "skipped" for s in NOT_STARTED)
    assert steps["item_tags"].skip_reason == "not run: the job ended first"


def test_failed_flow_run_is_failed_and_unfinished_steps_end() -> None:
    job = mixed(StateType.FAILED, message="Flow run encountered an exception")
    assert job.status == "failed"
    assert job.error_message == "Flow run encountered an exception"
    steps = by_id(job)
    assert steps["account_registration"].status == "completed"
    assert steps["onboarding_user"].status == "skipped"
    for sid in ("code_generation", "image_upload", "restaurant_registration"):
        assert steps[sid].status == "failed"
        assert steps[sid].error_message == "the flow run ended while this step was running"
        assert steps[sid].progress is None
    assert all(steps[s].status == "skipped" for s in NOT_STARTED)
    assert {s.status for s in job.steps} <= FINAL
    # SPEC: a failed job counts its completed and skipped steps (1 + 8), not the failed.
    assert job.progress_percent == 9 * 100 // 12
    assert (job.failed_step, job.next_action) == ("code_generation", "retry")


def test_failed_flow_run_prefers_the_jobs_own_error_message() -> None:
    job = mixed(
        StateType.FAILED,
        message="Flow run encountered an exception",
        job=make_job(status="failed", error_message="Payment configuration failed"),
    )
    assert job.error_message == "Payment configuration failed"


def test_crashed_flow_run_with_task_runs_still_running_is_failed_worker_lost() -> None:
    # DESIGN: a dead flow-run process leaves the flow run Crashed and its task runs Running.
    job = mixed(StateType.CRASHED, "Crashed", message="Flow run infrastructure exited with 137")
    assert job.status == "failed"
    assert job.error_message is not None
    assert "worker was lost" in job.error_message
    assert "137" in job.error_message
    assert job.flow_run_state == "Crashed"
    steps = by_id(job)
    for sid in ("image_upload", "restaurant_registration", "code_generation"):
        assert steps[sid].status == "failed", sid
        assert steps[sid].error_message == WORKER_LOST
    assert "worker was lost" in WORKER_LOST
    assert steps["account_registration"].status == "completed"
    assert steps["onboarding_user"].status == "skipped"
    for sid in NOT_STARTED:
        assert steps[sid].status == "skipped"
        assert "worker was lost" in (steps[sid].skip_reason or "")
    assert not any(s.status in ("running", "retrying", "pending") for s in job.steps)
    assert job.progress_percent == 9 * 100 // 12
    assert (job.failed_step, job.next_action) == ("code_generation", "retry")


@pytest.mark.parametrize(("type_", "name"), [(StateType.CANCELLING, "Cancelling"),
                                             (StateType.CANCELLED, "Cancelled")])  # fmt: skip
def test_cancelled_flow_run_cancels_the_job_and_its_unfinished_steps(
    type_: StateType, name: str
) -> None:
    job = mixed(type_, name)
    assert job.status == "cancelled"
    assert job.error_message == "the job was cancelled"
    steps = by_id(job)
    for sid in ("image_upload", "restaurant_registration", "code_generation"):
        assert steps[sid].status == "cancelled"
        assert steps[sid].skip_reason == "the job was cancelled"
        assert steps[sid].error_message is None
    for sid in NOT_STARTED:
        assert steps[sid].status == "cancelled"
        assert steps[sid].skip_reason == "the job was cancelled before this step started"
    assert steps["account_registration"].status == "completed"
    assert steps["account_registration"].result_data == {"from": "account_registration"}
    assert steps["onboarding_user"].status == "skipped"
    assert job.progress_percent == 2 * 100 // 12
    assert (job.failed_step, job.next_action) == (None, "retry")


def test_cancelling_flow_run_whose_task_crashed_from_sigterm_is_cancelled() -> None:
    # DESIGN: on cancel a running task run ends Crashed, not Cancelled.
    crashed = task("restaurant_registration", StateType.CRASHED, message="SIGTERM")
    job = job_public(
        make_job(),
        make_rows(account_registration="completed", restaurant_registration="running"),
        flow(StateType.CANCELLING, "Cancelling", crashed),
    )
    assert job.status == "cancelled"
    assert by_id(job)["restaurant_registration"].status == "cancelled"


def test_final_ledger_rows_keep_their_own_error_and_reason() -> None:
    rows = make_rows(account_registration="failed", code_generation="completed")
    rows = [
        make_row("account_registration", "failed", error_message="invalid email or password")
        if r.step_id == "account_registration"
        else r
        for r in rows
    ]
    job = job_public(make_job(), rows, flow(StateType.CANCELLED))
    steps = by_id(job)
    assert steps["account_registration"].status == "failed"
    assert steps["account_registration"].error_message == "invalid email or password"
    assert steps["account_registration"].skip_reason is None
    assert steps["account_registration"].completed_at == T0 + timedelta(minutes=1)


# --- task-run states while the flow run is Running ----------------------------------------

STEP = "restaurant_registration"


def one_step(ledger_status: str, task_run: TaskRunSnapshot | None, **values: Any) -> StepPublic:
    rows = make_rows(account_registration="completed")
    rows = [make_row(STEP, ledger_status, **values) if r.step_id == STEP else r for r in rows]
    tasks = () if task_run is None else (task_run,)
    job = job_public(make_job(), rows, flow(StateType.RUNNING, "Running", *tasks))
    assert job.status == "in_progress"
    return by_id(job)[STEP]


@pytest.mark.parametrize(
    ("ledger", "task_state", "name", "run_count", "expected"),
    [
        ("retrying", StateType.SCHEDULED, "AwaitingRetry", 1, "retrying"),
        ("running", StateType.SCHEDULED, "AwaitingRetry", 2, "retrying"),
        ("pending", StateType.PENDING, "Pending", 0, "pending"),
        ("running", StateType.PENDING, "Pending", 0, "running"),
        ("running", StateType.RUNNING, "Running", 1, "running"),
        ("retrying", StateType.RUNNING, "Running", 2, "retrying"),
        ("running", StateType.RUNNING, "Retrying", 2, "retrying"),
        ("completed", StateType.COMPLETED, "Completed", 1, "completed"),
        ("completed", StateType.COMPLETED, "Cached", 0, "completed"),
        # Prefect is a moment ahead of the ledger row, written right after: the row decides.
        ("running", StateType.COMPLETED, "Completed", 1, "running"),
        ("running", StateType.PAUSED, "Paused", 1, "running"),
        ("failed", StateType.FAILED, "Failed", 1, "failed"),
        ("running", StateType.FAILED, "Failed", 1, "failed"),
        ("running", StateType.CRASHED, "Crashed", 1, "failed"),
        ("running", StateType.CANCELLING, "Cancelling", 1, "cancelled"),
        ("running", StateType.CANCELLED, "Cancelled", 1, "cancelled"),
    ],
)
def test_task_run_state_while_flow_runs(
    ledger: str, task_state: StateType, name: str, run_count: int, expected: str
) -> None:
    s = one_step(ledger, task(STEP, task_state, name, run_count=run_count))
    assert s.status == expected


def test_task_run_failed_shows_prefect_message() -> None:
    s = one_step("running", task(STEP, StateType.FAILED, message="portal login refused"))
    assert s.error_message == "portal login refused"
    assert s.result_data is None
    assert s.progress is None


def test_task_run_crashed_while_flow_runs_says_it_crashed() -> None:
    s = one_step("running", task(STEP, StateType.CRASHED, message="browser process died"))
    assert s.status == "failed"
    assert s.error_message == "the step crashed: browser process died"


def test_task_run_cancelled_while_flow_runs_gives_a_reason() -> None:
    s = one_step("running", task(STEP, StateType.CANCELLED))
    assert s.skip_reason == "cancelled while running"


def test_running_step_without_a_known_task_run_keeps_the_ledger_status() -> None:
    assert one_step("running", None).status == "running"
    assert one_step("retrying", None).status == "retrying"
    # A task run of another step does not count.
    other = TaskRunSnapshot("tr-other", state(StateType.CRASHED), 1)
    assert one_step("running", other).status == "running"


def test_pending_step_ignores_its_task_run() -> None:
    s = one_step("pending", task(STEP, StateType.CRASHED), task_run_id=task_run_id(STEP))
    assert s.status == "pending"
    assert s.error_message is None


def test_awaiting_retry_keeps_the_last_error_and_the_attempt_count() -> None:
    s = one_step(
        "retrying",
        task(STEP, StateType.SCHEDULED, "AwaitingRetry", run_count=1),
        error_message="timed out: POST https://portal.test/register",
        attempts=1,
    )
    assert s.status == "retrying"
    assert s.attempts == 1
    assert s.error_message == "timed out: POST https://portal.test/register"


# --- current step, progress, public fields ------------------------------------------------


def test_current_step_is_the_lowest_running_or_retrying() -> None:
    rows = make_rows(account_registration="completed", code_generation="completed",
                     restaurant_registration="completed", image_upload="completed",
                     onboarding_user="completed", payment_configuration="running",
                     website_configuration="retrying", menu_import="running")  # fmt: skip
    job = job_public(make_job(), rows, flow(StateType.RUNNING))
    assert job.current_step == 6
    assert job.current_phase == "phase2"


def test_current_step_without_running_steps_is_the_highest_finished() -> None:
    rows = make_rows(account_registration="completed", code_generation="completed",
                     image_upload="completed", onboarding_user="completed",
                     restaurant_registration="completed", menu_import="completed")  # fmt: skip
    job = job_public(make_job(), rows, flow(StateType.RUNNING))
    assert job.current_step == 10
    assert job.current_phase == "phase3"
    assert job.progress_percent == 6 * 100 // 12


def test_progress_percent_counts_final_steps() -> None:
    rows = make_rows(account_registration="completed", onboarding_user="skipped",
                     code_generation="failed", image_upload="running")  # fmt: skip
    job = job_public(make_job(), rows, flow(StateType.RUNNING))
    assert job.progress_percent == 3 * 100 // 12


def test_failed_job_with_every_step_final_counts_only_what_got_done() -> None:
    rows = [make_row(sid, "completed") for sid in STEP_IDS[:-1]]
    rows.append(make_row("item_tags", "failed"))
    job = job_public(make_job(status="failed"), rows, flow(StateType.FAILED, message="x"))
    assert job.status == "failed"
    assert all(s.status in FINAL for s in job.steps)
    assert job.progress_percent == 11 * 100 // 12
    assert job.current_step == 12


@pytest.mark.parametrize("action", ["retry", "retry_from_step", "fix_config"])
def test_a_failed_job_names_its_first_failed_step_and_what_to_do(action: str) -> None:
    rows = make_rows(account_registration="completed", code_generation="completed")
    rows = [r for r in rows if r.step_id not in ("website_configuration", "payment_configuration")]
    rows += [
        make_row("website_configuration", "failed", next_action="retry"),
        make_row("payment_configuration", "failed", next_action="fix_config"),
    ]
    rows = [
        make_row("restaurant_registration", "failed", next_action=action)
        if r.step_id == "restaurant_registration"
        else r
        for r in rows
    ]
    job = job_public(make_job(status="failed", error_message="x"), rows, None)
    assert (job.failed_step, job.next_action) == ("restaurant_registration", action)


def test_a_live_or_completed_job_has_no_failed_step_or_next_action() -> None:
    running = job_public(make_job(), make_rows(image_upload="running"), None)
    assert (running.failed_step, running.next_action) == (None, None)
    done = job_public(
        make_job(status="completed"), [make_row(sid, "completed") for sid in STEP_IDS], None
    )
    assert (done.failed_step, done.next_action, done.progress_percent) == (None, None, 100)


def test_the_materialised_view_carries_the_version_and_the_pending_reason() -> None:
    job = make_job(status="pending", started=False, flow_run_id=None)
    job.pending_reason = "Prefect is unavailable; the job starts when Prefect answers"
    job.flow_run_state = None
    public = job_public(job, make_rows(), None)
    assert (public.version, public.pending_reason) == (7, job.pending_reason)
    job.status = "cancelled"
    assert job_public(job, make_rows(), None).pending_reason is None


def test_result_data_only_for_completed_steps() -> None:
    rows = make_rows(account_registration="completed",
                     restaurant_registration="running")  # fmt: skip
    rows = [
        make_row(STEP, "running", result_data={"partial": True}) if r.step_id == STEP else r
        for r in rows
    ]
    job = job_public(make_job(), rows, flow(StateType.RUNNING))
    steps = by_id(job)
    assert steps["account_registration"].result_data == {"from": "account_registration"}
    assert steps[STEP].result_data is None
    assert all(s.result_data is None for s in job.steps if s.status != "completed")


def test_completed_step_fields() -> None:
    rows = make_rows()
    rows = [
        make_row("account_registration", "completed", warning="the account already exists")
        if r.step_id == "account_registration"
        else r
        for r in rows
    ]
    job = job_public(make_job(), rows, flow(StateType.RUNNING))
    s = by_id(job)["account_registration"]
    assert s.status == "completed"
    assert s.warning == "the account already exists"
    assert s.attempts == 1
    assert s.duration_ms == 1500
    assert s.started_at == T0 + timedelta(seconds=1)
    assert s.completed_at == T0 + timedelta(minutes=1)
    assert s.skip_reason is None
    assert s.progress is None


def test_running_step_has_no_completed_at() -> None:
    s = one_step("running", task(STEP, StateType.RUNNING), finished_at=T0)
    assert s.completed_at is None
    assert s.started_at is not None


def test_job_completed_at_hidden_while_in_progress() -> None:
    job = mixed(StateType.RUNNING, job=make_job(completed_at=T0 + timedelta(hours=1)))
    assert job.status == "in_progress"
    assert job.completed_at is None


def test_flow_run_url_built_from_prefect_ui_url() -> None:
    job = job_public(make_job(), make_rows(), flow(StateType.RUNNING),
                     prefect_ui_url="http://127.0.0.1:4200/")  # fmt: skip
    assert job.flow_run_id == FLOW_RUN_ID
    assert job.flow_run_url == f"http://127.0.0.1:4200/runs/flow-run/{FLOW_RUN_ID}"
    no_ui = job_public(make_job(), make_rows(), flow(StateType.RUNNING))
    assert no_ui.flow_run_url is None


def test_flow_run_url_from_the_job_when_no_snapshot() -> None:
    job = job_public(make_job(status="pending", started=False), make_rows(), None,
                     prefect_ui_url="http://prefect.test")  # fmt: skip
    assert job.flow_run_url == f"http://prefect.test/runs/flow-run/{FLOW_RUN_ID}"


def test_progress_public_mirrors_the_job() -> None:
    job = mixed(StateType.CRASHED)
    progress = progress_public(job)
    assert progress.status == job.status == "failed"
    assert progress.current_phase == job.current_phase
    assert progress.current_step == job.current_step
    assert progress.progress_percent == job.progress_percent
    assert progress.step_statuses == statuses_of(job)
    assert list(progress.step_statuses) == list(STEP_IDS)
    running = progress_public(mixed(StateType.RUNNING))
    assert running.step_statuses["code_generation"] == "retrying"
    assert running.step_statuses["restaurant_registration"] == "running"
    assert running.step_statuses["item_tags"] == "pending"


def test_job_identity_fields() -> None:
    job = mixed(StateType.RUNNING)
    assert job.id == "job-1"
    assert job.restaurant_id == "rest-1"
    assert job.created_at == T0
    assert job.started_at == T0 + timedelta(seconds=1)


# --- the job's lease -----------------------------------------------------------------------


def _leased_job(seconds_ago: float) -> tuple[Any, datetime]:
    from datetime import timedelta

    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = make_job(status="in_progress")
    job.heartbeat_at = now - timedelta(seconds=seconds_ago)
    return job, now


def test_a_running_flow_whose_lease_ran_out_is_crashed() -> None:
    from regjobs.translate import lease_expired

    job, now = _leased_job(seconds_ago=25)
    rows = make_rows(**MIXED)
    seen = flow(StateType.RUNNING, "Running")
    real = lease_expired(job, seen, now, 20)
    assert real is not None and real.state.type is StateType.CRASHED
    assert "no heartbeat" in (real.state.message or "")
    public = job_public(job, rows, real)
    assert public.status == "failed"
    assert by_id(public)["restaurant_registration"].status == "failed"
    assert "worker was lost" in (by_id(public)["restaurant_registration"].error_message or "")


def test_a_fresh_lease_or_an_ended_run_is_left_alone() -> None:
    from regjobs.translate import lease_expired

    job, now = _leased_job(seconds_ago=5)
    running = flow(StateType.RUNNING, "Running")
    assert lease_expired(job, running, now, 20) is running
    old_job, now = _leased_job(seconds_ago=500)
    completed = flow(StateType.COMPLETED, "Completed")
    assert lease_expired(old_job, completed, now, 20) is completed
    assert lease_expired(old_job, None, now, 20) is None


def test_a_run_that_died_before_the_job_began_is_crashed() -> None:
    from dataclasses import replace as _replace

    from regjobs.translate import lease_expired

    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    job = make_job(status="pending", started=False)
    job.heartbeat_at = None
    running = flow(StateType.RUNNING, "Running")
    started = _replace(
        running, state=_replace(running.state, timestamp=now - timedelta(seconds=30))
    )
    dead = lease_expired(job, started, now, 20)
    assert dead is not None and dead.state.type is StateType.CRASHED
    pending = flow(StateType.PENDING, "Pending")
    claimed = _replace(
        pending, state=_replace(pending.state, timestamp=now - timedelta(seconds=30))
    )
    assert lease_expired(job, claimed, now, 20) is claimed  # a slow start, not yet dead
    long_ago = _replace(
        pending, state=_replace(pending.state, timestamp=now - timedelta(minutes=5))
    )
    lost = lease_expired(job, long_ago, now, 20)
    assert lost is not None and lost.state.type is StateType.CRASHED


# --- waiting for a person ------------------------------------------------------------------


def _waiting_rows() -> list[RegistrationJobStep]:
    since = T0 + timedelta(minutes=2)
    rows = make_rows(code_generation="completed", onboarding_user="completed")
    for row in rows:
        if row.step_id == "account_registration":
            row.status = "action_required"
            row.attempts = 1
            row.error_message = "the login was refused; a person must correct account.password"
            row.action_fields = ["account.email", "account.password"]
            row.action_since = since
            row.action_expires_at = since + timedelta(days=7)
    return rows


def test_a_job_waiting_for_a_person_is_in_progress_asking_for_input() -> None:
    job = job_public(make_job(), _waiting_rows(), None)
    assert (job.status, job.next_action, job.failed_step) == ("in_progress", "provide_input", None)
    assert job.action_required is not None
    assert job.action_required.model_dump() == {
        "step_id": "account_registration",
        "reason": "the login was refused; a person must correct account.password",
        "fields": ["account.email", "account.password"],
        "since": T0 + timedelta(minutes=2),
        "expires_at": T0 + timedelta(minutes=2, days=7),
    }
    assert by_id(job)["account_registration"].status == "action_required"
    assert job.progress_percent == 2 * 100 // 12  # a waiting step is not done
    # Prefect's Suspended (a Paused state) is a live run: the job waits, nothing is lost.
    suspended = job_public(make_job(), _waiting_rows(), flow(StateType.PAUSED, "Suspended"))
    assert (suspended.status, suspended.next_action) == ("in_progress", "provide_input")
    assert by_id(suspended)["account_registration"].status == "action_required"


def test_a_suspended_run_is_not_lost_however_old_its_lease() -> None:
    from regjobs.translate import is_live, lease_expired

    job, now = _leased_job(seconds_ago=7 * 24 * 3600)
    suspended = flow(StateType.PAUSED, "Suspended")
    assert lease_expired(job, suspended, now, 20) is suspended
    assert is_live(suspended.state)


def test_a_cancelled_job_asks_for_nothing() -> None:
    job = job_public(make_job(status="cancelled"), _waiting_rows(), flow(StateType.CANCELLED))
    assert job.status == "cancelled" and job.action_required is None
    assert job.next_action == "retry"
