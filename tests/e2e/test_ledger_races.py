"""The API writes down an end only Prefect saw; the flow-run process writes its own. Against
the real job database (SQLite, and PostgreSQL in CI's second pass)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType
from sqlalchemy import select

from api.orchestrator import Orchestrator
from api.service import read_job
from api.translate import FlowRunSnapshot, RunState
from regjobs import ledger
from regjobs.catalogue import STEP_IDS
from regjobs.config import ExecutionConfig
from regjobs.db import session_scope
from regjobs.errors import Classified, ErrorClass
from regjobs.models import Organisation, RegistrationJob, RegistrationJobStep
from regjobs.settings import get_settings
from tests.helpers import full_config

pytestmark = pytest.mark.database


def started_job() -> str:
    with session_scope() as session:
        organisation = Organisation(name=f"race-{uuid.uuid4().hex[:8]}")
        session.add(organisation)
        session.flush()
        job = ledger.create_job(
            session,
            organisation_id=organisation.id,
            restaurant_id="race",
            config=ExecutionConfig.model_validate(full_config()),
        )
        job_id = job.id
    ledger.begin_run(job_id=job_id, flow_run_id="flow-run-1")
    return job_id


def flow_fails_onboarding_sync(job_id: str) -> None:
    """What the flow-run process records when onboarding sync fails for good."""
    ledger.start_attempt(
        job_id=job_id, step_id="onboarding_sync", flow_run_id="flow-run-1", task_run_id=None
    )
    ledger.fail_attempt(
        job_id=job_id,
        step_id="onboarding_sync",
        attempt=1,
        error=Classified(ErrorClass.NON_RETRYABLE, "HTTP 404"),
        will_retry=False,
    )
    ledger.finish_run(job_id=job_id, status="failed", error_message="failed step: x")


def test_an_end_seen_late_in_prefect_leaves_what_the_flow_recorded(stack_env: Any) -> None:
    job_id = started_job()

    # The API reads the job and its steps (all pending)...
    with session_scope() as api_session:
        seen = api_session.get(RegistrationJob, job_id)
        assert seen is not None
        rows = api_session.scalars(
            select(RegistrationJobStep).where(RegistrationJobStep.job_id == job_id)
        ).all()
        assert {r.step_id: r.status for r in rows}["onboarding_sync"] == "pending"
        # ...then, while it asks Prefect, the step fails for good and the flow ends the job.
        flow_fails_onboarding_sync(job_id)
        # Prefect now says Failed; the API's rows are from before.
        written = ledger.record_outcome(
            api_session,
            job=seen,
            flow_run_id="flow-run-1",
            observed_at=None,
            status="failed",
            error_message="the job failed",
            steps={s: ("skipped", None, "not run: the job ended first") for s in STEP_IDS},
        )

    assert written is False
    after = ledger.step_states(job_id=job_id)
    assert after["onboarding_sync"].status == "failed"
    with session_scope() as session:
        ended = session.get(RegistrationJob, job_id)
        assert ended is not None and ended.error_message == "failed step: x"


class FlowEndsWhileAsked(Orchestrator):
    """Prefect, asked for the run's state, answers Failed: the flow ended meanwhile."""

    def snapshot(self, job_id: str, flow_run_id: str | None) -> FlowRunSnapshot | None:
        flow_fails_onboarding_sync(job_id)
        failed = RunState(StateType.FAILED, "Failed", "failed step: x", datetime.now(UTC))
        return FlowRunSnapshot("flow-run-1", failed, {})


def test_a_read_that_meets_the_flow_ending_answers_what_the_flow_recorded(
    stack_env: Any,
) -> None:
    job_id = started_job()
    with session_scope() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None
        public = read_job(session, job=job, orchestrator=FlowEndsWhileAsked(get_settings()))
    step = next(s for s in public.steps if s.step_id == "onboarding_sync")
    assert (public.status, step.status, step.error_message) == ("failed", "failed", "HTTP 404")
    assert ledger.step_states(job_id=job_id)["onboarding_sync"].status == "failed"
