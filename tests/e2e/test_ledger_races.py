"""The API writes down an end only Prefect saw; the flow-run process writes its own. Against
the real job database (SQLite, and PostgreSQL in CI's second pass)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from regjobs import ledger
from regjobs.catalogue import STEP_IDS
from regjobs.config import ExecutionConfig
from regjobs.db import session_scope
from regjobs.errors import Classified, ErrorClass
from regjobs.models import Organisation, RegistrationJob, RegistrationJobStep
from tests.helpers import full_config

pytestmark = pytest.mark.database


def test_an_end_seen_late_in_prefect_leaves_what_the_flow_recorded(stack_env: Any) -> None:
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

    # The API reads the job and its steps (all pending)...
    with session_scope() as api_session:
        seen = api_session.get(RegistrationJob, job_id)
        assert seen is not None
        rows = api_session.scalars(
            select(RegistrationJobStep).where(RegistrationJobStep.job_id == job_id)
        ).all()
        assert {r.step_id: r.status for r in rows}["onboarding_sync"] == "pending"
        # ...then, while it asks Prefect, the step fails for good and the flow ends the job.
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
