"""A stored config that no longer validates meets the flow run that begins its job: the
ledger refuses with a message naming each field and no value, and the job fails at once
with `fix_config` (the end to end run: tests/e2e/test_stored_config.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import update

from regjobs import ledger
from regjobs.catalogue import JobStatus
from regjobs.crypto import decrypt_json, encrypt_json
from regjobs.db import read_session, transaction
from regjobs.models import RegistrationJob
from tests.database.test_ledger import begin, new_job

pytestmark = pytest.mark.database

PASSWORD = "Zq9-harbour-2024"


@pytest.fixture(autouse=True)
def _settings(stack_env: dict[str, str]) -> None:
    """The job database of this test session (no system started)."""


def spoil(job_id: str, change: Any) -> None:
    def write(*, session: Any) -> None:
        job = session.get(RegistrationJob, job_id)
        stored = decrypt_json(job.config_encrypted)
        change(stored)
        session.execute(
            update(RegistrationJob)
            .where(RegistrationJob.id == job_id)
            .values(config_encrypted=encrypt_json(stored))
        )

    transaction(write)


def old_version(stored: dict[str, Any]) -> None:
    stored["account"]["password"] = (PASSWORD + "-") * 20
    stored["account"]["pin"] = PASSWORD
    stored["website"]["primary_color"] = "red"


def test_begin_run_refuses_naming_each_field_and_no_value() -> None:
    job_id = new_job()
    spoil(job_id, old_version)
    with pytest.raises(ledger.ConfigInvalid) as refused:
        begin(job_id)
    message = str(refused.value)
    assert message.startswith("the job's stored execution config is not valid: ")
    for field in ("account.password", "account.pin", "website.primary_color"):
        assert field in message
    assert PASSWORD.lower() not in message.lower()
    # Nothing of the ValidationError (its input: the whole config) rides along.
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None and job.status == JobStatus.PENDING  # begin_run rolled back


def test_the_refused_start_fails_the_job_with_fix_config() -> None:
    job_id = new_job()
    spoil(job_id, old_version)
    with pytest.raises(ledger.ConfigInvalid) as refused:
        begin(job_id)
    assert transaction(
        ledger.refuse_start,
        job_id=job_id,
        flow_run_id="flow-run-1",
        generation=1,
        message=str(refused.value),
    )
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None
        view = json.loads(job.view or "{}")
    assert (view["status"], view["next_action"], view["failed_step"]) == (
        "failed",
        "fix_config",
        None,
    )
    assert view["error_message"] == str(refused.value)
    assert view["flow_run_id"] == "flow-run-1"
    # Done once: a late or other run changes nothing more.
    assert not transaction(
        ledger.refuse_start, job_id=job_id, flow_run_id="flow-run-2", generation=None,
        message="again",
    )  # fmt: skip


def test_a_run_that_is_not_the_jobs_current_one_changes_nothing() -> None:
    job_id = new_job()
    spoil(job_id, old_version)
    assert not transaction(
        ledger.refuse_start, job_id=job_id, flow_run_id="someone-else", generation=7,
        message="no",
    )  # fmt: skip
    with read_session() as session:
        job = session.get(RegistrationJob, job_id)
        assert job is not None and job.status == JobStatus.PENDING
