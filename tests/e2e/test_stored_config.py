"""A stored config that no longer validates when its flow run starts (written by an older
version, or a bound that changed since): the job fails at once with `fix_config` and a
message naming each field, and no value of the config (a password above all) reaches
Prefect: not the flow run's state, not its logs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from sqlalchemy import Engine, select, update

from regjobs.crypto import decrypt_json, encrypt_json
from regjobs.models import RegistrationJob
from tests.helpers import flow_run_logs, flow_run_state, full_config, wait_for, watch_job

pytestmark = pytest.mark.e2e

PASSWORD = "Zq9-harbour-2024"


def test_a_stored_config_that_fails_at_flow_start_carries_no_value_to_prefect(
    api: httpx.Client, standin: httpx.Client, db: Engine, restaurant_id: str
) -> None:
    config = full_config(
        account={"password": PASSWORD, "email": "harbour@example.com"},
        restaurant={"name": "Harbour Diner"},
    )
    created = api.post(
        "/api/registration-jobs",
        json={"restaurant_id": restaurant_id, "auto_start": False, "execution_config": config},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]

    # What an older version might have stored: a longer password than the config now
    # takes, and a field it no longer has, holding the password.
    with db.begin() as connection:
        stored: dict[str, Any] = decrypt_json(
            connection.execute(
                RegistrationJob.__table__.select().where(RegistrationJob.id == job_id)
            )
            .one()
            ._mapping["config_encrypted"]
        )
        stored["account"]["password"] = (PASSWORD + "-") * 20
        stored["account"]["pin"] = PASSWORD
        connection.execute(
            update(RegistrationJob)
            .where(RegistrationJob.id == job_id)
            .values(config_encrypted=encrypt_json(stored))
        )

    assert api.post(f"/api/registration-jobs/{job_id}/start").status_code == 200
    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "failed"
    assert job["next_action"] == "fix_config"
    assert "account.password" in job["error_message"]
    assert "account.pin" in job["error_message"]
    assert "stored execution config is not valid" in job["error_message"]
    # Failed at once: one flow run, not one a cycle until the runs before beginning ran out.
    with db.connect() as connection:
        runs = connection.execute(
            select(RegistrationJob.flow_run_ids).where(RegistrationJob.id == job_id)
        ).scalar_one()
    assert runs == [job["flow_run_id"]]
    assert all(s["status"] == "pending" and s["attempts"] == 0 for s in job["steps"])

    # The flow run ends Failed in Prefect just after it wrote the job's failure to the ledger.
    wait_for(
        lambda: flow_run_state(job["flow_run_id"])[0] not in (StateType.RUNNING, StateType.PENDING),
        timeout=30,
        what="the flow run's final state in Prefect",
    )
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(job["flow_run_id"]))
        states = client.read_flow_run_states(run.id)
    assert run.state is not None and run.state.type is StateType.FAILED
    assert "account.password" in (run.state.message or "")
    logs = "\n".join(log.message for log in flow_run_logs(run.id))
    assert "account.pin" in logs
    seen = [run.model_dump_json(), *(s.model_dump_json() for s in states), logs]
    seen += [api.get(f"/api/registration-jobs/{job_id}").text]
    for text in seen:
        assert PASSWORD.lower() not in text.lower()
        assert "input_value" not in text
