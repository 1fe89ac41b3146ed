"""Waiting for a person in the ledger: a step that needs a person waits, the run suspends
holding nothing, one person's input wins and resumes the same run (through the outbox),
a resume is told from a second start, the wait expires into `fix_config`, and a cancel
works while it waits."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from regjobs import ledger
from regjobs.catalogue import JobStatus, NextAction, StepStatus
from regjobs.config import ExecutionConfig
from regjobs.crypto import encrypt_json
from regjobs.db import read_session, transaction
from regjobs.errors import ACCOUNT_LOGIN, LoginRefused, classify
from regjobs.ledger import outbox, outcomes
from regjobs.models import RegistrationJobStep, utcnow
from regjobs.release import Release
from tests.helpers import environment, full_config, ledger_job

# Its jobs name made-up flow runs.
pytestmark = [pytest.mark.database, pytest.mark.usefixtures("own_database")]


def run_of(job_id: str) -> str:
    """The job's flow run (its own: deliveries of other tests' jobs are not its)."""
    return f"fr{job_id[2:]}"


def begin(job_id: str, run_count: int = 1) -> ledger.RunStart:
    return transaction(
        ledger.begin_run,
        job_id=job_id,
        flow_run_id=run_of(job_id),
        generation=1,
        run_count=run_count,
    )


def refuse_login(job_id: str, epoch: int) -> None:
    """The account's login refused: the step needs a person (no retry)."""
    attempt = transaction(
        ledger.start_attempt, job_id=job_id, epoch=epoch, step_id="account_registration",
        flow_run_id=run_of(job_id), task_run_id=None,
    )  # fmt: skip
    refused = LoginRefused("the platform refused the login", fields=ACCOUNT_LOGIN, email="o@x.nz")
    transaction(
        ledger.fail_attempt, job_id=job_id, epoch=epoch, step_id="account_registration",
        attempt=attempt.number, error=classify(refused), will_retry=False,
    )  # fmt: skip


def finish_others(job_id: str, epoch: int) -> None:
    """Every step that does not need the account completes (phase 1's other branches)."""
    for step_id in ("code_generation", "onboarding_user", "image_upload"):
        attempt = transaction(
            ledger.start_attempt, job_id=job_id, epoch=epoch, step_id=step_id,
            flow_run_id=run_of(job_id), task_run_id=None,
        )  # fmt: skip
        transaction(
            ledger.complete_attempt, job_id=job_id, epoch=epoch, step_id=step_id,
            attempt=attempt.number, result={"done": step_id}, warning=None,
        )  # fmt: skip


def suspend(job_id: str, epoch: int, version: int = 1) -> ledger.Waiting | None:
    return transaction(
        ledger.suspend_run, job_id=job_id, epoch=epoch, flow_run_id=run_of(job_id),
        config_version=version,
    )  # fmt: skip


def give_input(job_id: str, based_on: int, password: str) -> Any:
    config = ExecutionConfig.model_validate(full_config(account={"password": password}))
    return transaction(
        ledger.provide_input, job_id=job_id, based_on=based_on,
        config_encrypted=encrypt_json(config.secret_dict()), config_public=config.public_dict(),
    )  # fmt: skip


def view(job_id: str) -> Any:
    with read_session() as session:
        return ledger.public_view(session=session, job_id=job_id)


def deliveries(job_id: str) -> list[outbox.Delivery]:
    with read_session() as session:
        found = outbox.deliveries(session=session, limit=10_000)
        return [d for d in found if d.flow_run_id == run_of(job_id)]


def test_a_job_waits_suspends_and_one_input_resumes_the_same_run() -> None:
    job_id = ledger_job()
    start = begin(job_id)
    refuse_login(job_id, start.epoch)
    job = view(job_id)
    assert job.status is JobStatus.IN_PROGRESS
    assert job.next_action is NextAction.PROVIDE_INPUT
    waiting = job.action_required
    assert waiting is not None and waiting.step_id == "account_registration"
    assert waiting.fields == list(ACCOUNT_LOGIN)
    assert waiting.since is not None and waiting.expires_at is not None
    assert waiting.expires_at - waiting.since == timedelta(days=7)
    step = next(s for s in job.steps if s.step_id == "account_registration")
    assert (step.status, step.attempts) == (StepStatus.ACTION_REQUIRED, 1)

    # While branches that do not need the account can still run, the run does not suspend.
    assert suspend(job_id, start.epoch) is None
    finish_others(job_id, start.epoch)
    suspended = suspend(job_id, start.epoch)
    assert suspended is not None and not suspended.resume_now
    assert suspended.step_ids == ("account_registration",)
    assert suspended.fields == ACCOUNT_LOGIN
    assert view(job_id).flow_run_state == "Suspended"
    assert deliveries(job_id) == []  # nothing to tell Prefect until a person answers

    # Two inputs from the same version: exactly one wins.
    give_input(job_id, 1, "Joe's Pizza Kitchen 2nd try ✓")
    with pytest.raises(ledger.Conflict):
        give_input(job_id, 1, "another guess")
    job = view(job_id)
    assert (job.status, job.next_action, job.action_required) == (JobStatus.IN_PROGRESS, None, None)
    with read_session() as session:
        row = session.get_one(RegistrationJobStep, (job_id, "account_registration"))
        assert (row.status, row.generation, row.generation_attempts) == ("pending", 1, 0)
    [resume] = deliveries(job_id)
    assert (resume.kind, resume.version) == ("resume", 2)
    # The run that asked still holds the job; the read before its next walk of the graph
    # sees the step queued again under a newer config version (the run does not start it
    # with its own, version 1).
    with read_session() as session:
        seen = ledger.walk_state(session=session, job_id=job_id, epoch=start.epoch)
    assert (seen.lost, seen.config_version) == (None, 2)
    assert seen.states["account_registration"].status is StepStatus.PENDING

    # Prefect resumes the run with its id and run count: a resume, once.
    resumed = begin(job_id, run_count=1)
    assert resumed.resumed and resumed.config_version == 2 and resumed.epoch > start.epoch
    assert resumed.config.account.password is not None
    assert resumed.config.account.password.get_secret_value() == "Joe's Pizza Kitchen 2nd try ✓"
    assert resumed.steps["code_generation"].status is StepStatus.COMPLETED  # reused
    assert deliveries(job_id) == []  # the resume arrived
    with pytest.raises(ledger.RunRefused):
        begin(job_id, run_count=1)  # the same run count again is no resume


def test_a_resume_without_new_input_finds_the_step_still_waiting() -> None:
    job_id = ledger_job()
    start = begin(job_id)
    refuse_login(job_id, start.epoch)
    finish_others(job_id, start.epoch)
    assert suspend(job_id, start.epoch) is not None
    again = begin(job_id, run_count=1)  # resumed from Prefect's UI, no new version
    assert again.resumed and again.config_version == 1
    assert again.steps["account_registration"].status is StepStatus.ACTION_REQUIRED
    assert suspend(job_id, again.epoch) is not None


def test_input_while_other_steps_run_resumes_the_run_at_once() -> None:
    job_id = ledger_job()
    start = begin(job_id)
    refuse_login(job_id, start.epoch)
    give_input(job_id, 1, "Joe's Pizza Kitchen 2nd try ✓")  # the run still runs others
    assert deliveries(job_id) == []
    finish_others(job_id, start.epoch)
    suspended = suspend(job_id, start.epoch, version=1)
    assert suspended is not None and suspended.resume_now
    [resume] = deliveries(job_id)
    assert (resume.kind, resume.version) == ("resume", 2)


def test_a_wait_past_its_limit_fails_the_job_with_fix_config() -> None:
    job_id = ledger_job()
    start = begin(job_id)
    refuse_login(job_id, start.epoch)
    finish_others(job_id, start.epoch)
    assert suspend(job_id, start.epoch) is not None
    with read_session() as session:
        assert job_id not in dict(outcomes.expired_waits(session=session, now=utcnow()))
        later = utcnow() + timedelta(days=7, seconds=1)
        expired = dict(outcomes.expired_waits(session=session, now=later))
    assert job_id in expired
    assert transaction(outcomes.expire_wait, job_id=job_id, epoch=expired[job_id], now=later)
    job = view(job_id)
    assert job.status is JobStatus.FAILED
    assert (job.failed_step, job.next_action) == ("account_registration", NextAction.FIX_CONFIG)
    assert job.action_required is None
    step = next(s for s in job.steps if s.step_id == "account_registration")
    assert step.status is StepStatus.FAILED and "REGJOBS_INPUT_TIMEOUT" in (
        step.error_message or ""
    )
    [told] = deliveries(job_id)
    assert told.kind == "fail"
    with pytest.raises(ledger.Conflict):
        give_input(job_id, 1, "too late")


def test_cancel_while_waiting_cancels_the_suspended_run_outright() -> None:
    job_id = ledger_job()
    start = begin(job_id)
    refuse_login(job_id, start.epoch)
    finish_others(job_id, start.epoch)
    assert suspend(job_id, start.epoch) is not None
    transaction(ledger.cancel_job, job_id=job_id)
    job = view(job_id)
    assert job.status is JobStatus.CANCELLED and job.action_required is None
    step = next(s for s in job.steps if s.step_id == "account_registration")
    assert step.status is StepStatus.CANCELLED
    cancels = deliveries(job_id)
    # Told after the grace a running process gets; a suspended run has no process.
    assert all(d.kind == "cancel" and d.suspended for d in cancels)
    with pytest.raises(ledger.Conflict):
        give_input(job_id, 1, "after the cancel")


class Events:
    """Prefect, as far as the reconciler's expiry talks to it: the events it emits."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        self.emitted.append((event, payload))


def test_the_reconciler_fails_a_job_waiting_past_a_short_input_timeout() -> None:
    """REGJOBS_INPUT_TIMEOUT set short: the wait's deadline is the step's, and once the
    reconciler's clock is past it the job fails with fix_config (no sleeping: the clock is
    the test's)."""
    from typing import cast

    from api.orchestrator import Orchestrator
    from api.reconcile import Reconciliation
    from regjobs.settings import get_settings

    # The setting and the settings cached from it both end with the block (the environment
    # restored after the cache was cleared would leave the next test a 2-s timeout).
    with environment({"REGJOBS_INPUT_TIMEOUT": "2"}):
        job_id = ledger_job()
        start = begin(job_id)
        refuse_login(job_id, start.epoch)
        finish_others(job_id, start.epoch)
        assert suspend(job_id, start.epoch) is not None
        waiting = view(job_id).action_required
        assert waiting is not None and waiting.since is not None and waiting.expires_at
        assert (waiting.expires_at - waiting.since).total_seconds() == 2

        prefect = Events()
        at = waiting.expires_at - timedelta(seconds=1)
        reconciliation = Reconciliation(get_settings(), cast(Orchestrator, prefect), lambda: at)
        reconciliation.expire_waits()
        assert view(job_id).status is JobStatus.IN_PROGRESS
        at = waiting.expires_at + timedelta(seconds=1)
        reconciliation.expire_waits()
    job = view(job_id)
    assert (job.status, job.next_action, job.failed_step) == (
        JobStatus.FAILED,
        NextAction.FIX_CONFIG,
        "account_registration",
    )
    assert ("regjobs.job.failed", {"job_id": job_id, "error": "waited for input too long"}) in (
        prefect.emitted
    )
    assert [d.kind for d in deliveries(job_id)] == ["fail"]


def test_a_job_waiting_on_an_old_release_moves_to_the_new_one_and_waits_there() -> None:
    """`regjobs jobs upgrade` of a job suspended waiting for a person (its release to be
    drained): its suspended run is cancelled in Prefect, a new run is asked for on the new
    release's queue, and that run, once it begins, finds the step still waiting."""
    tag = uuid.uuid4().hex[:8]
    old, new = f"{tag}-a", f"{tag}-b"
    for version in (old, new):
        release = Release(version, commit="0" * 40, folder=Path("/nowhere"), steps={})
        transaction(ledger.remember_release, release=release)
    job_id = ledger_job()
    start = transaction(
        ledger.begin_run, job_id=job_id, flow_run_id=run_of(job_id), generation=1,
        run_count=1, code_version=old,
    )  # fmt: skip
    refuse_login(job_id, start.epoch)
    finish_others(job_id, start.epoch)
    assert suspend(job_id, start.epoch) is not None

    moved = transaction(ledger.upgrade_job, job_id=job_id, to_version=new)
    assert (moved.from_version, moved.to_version, moved.requeued) == (old, new, True)
    job = view(job_id)
    assert job.status is JobStatus.IN_PROGRESS and job.code_version == new
    assert job.action_required is not None  # still waiting for the same person
    assert [d.kind for d in deliveries(job_id)] == ["cancel"]
    with read_session() as session:
        asked = [
            r for r in ledger.runs_to_dispatch(session=session, limit=500) if r.job_id == job_id
        ]
    assert [r.work_queue for r in asked] == [f"release-{new}"]
    # The new run begins on the new release and finds the step waiting: it suspends again.
    again = transaction(
        ledger.begin_run, job_id=job_id, flow_run_id=f"nr{job_id[2:]}",
        generation=asked[0].generation, run_count=1, code_version=new,
    )  # fmt: skip
    assert again.steps["account_registration"].status is StepStatus.ACTION_REQUIRED
