"""`POST .../input` against the API app and the job database (no Prefect, no outside
system): 409 unless a step waits, 422 naming the field for a merged config that is not
valid or a field asked for left unchanged, and one answer wins."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from regjobs import ledger
from regjobs.db import read_session, transaction
from regjobs.errors import classify, value_rejected
from regjobs.models import RegistrationJob
from tests.helpers import full_config

# Its waiting jobs name made-up flow runs.
pytestmark = [pytest.mark.database, pytest.mark.usefixtures("own_database")]

REFUSED_PHONE = "+64 3 000 0000"


def new_job(client: httpx.Client, *, waits: bool) -> str:
    """A job whose restaurant registration the portal refused for its phone (when `waits`)."""
    created = client.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": f"input-{uuid.uuid4().hex[:8]}",
            "auto_start": False,
            "execution_config": full_config(
                restaurant={"name": "Kāinga <Pizza> & Co", "phone": REFUSED_PHONE}
            ),
        },
    )
    assert created.status_code == 201, created.text
    job_id = str(created.json()["job_id"])
    if waits:
        start = transaction(ledger.begin_run, job_id=job_id, flow_run_id=str(uuid.uuid4()))
        attempt = transaction(
            ledger.start_attempt, job_id=job_id, epoch=start.epoch,
            step_id="restaurant_registration", flow_run_id=None, task_run_id=None,
        )  # fmt: skip
        rejected = value_rejected(
            "restaurant_registration", "the phone number cannot be reached", ["phone"]
        )
        assert rejected is not None
        transaction(
            ledger.fail_attempt, job_id=job_id, epoch=start.epoch,
            step_id="restaurant_registration", attempt=attempt.number,
            error=classify(rejected), will_retry=False,
        )  # fmt: skip
    return job_id


def send(client: httpx.Client, job_id: str, body: Any) -> httpx.Response:
    return client.post(f"/api/registration-jobs/{job_id}/input", json=body)


def locs(response: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def test_input_for_a_job_that_waits_for_nothing_is_409(client: httpx.Client) -> None:
    job_id = new_job(client, waits=False)
    answer = send(client, job_id, {"execution_config": {"restaurant": {"phone": "+64 3 1"}}})
    assert answer.status_code == 409, answer.text
    assert send(client, str(uuid.uuid4()), {"execution_config": {}}).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"execution_config": {"restaurant": {"phone": REFUSED_PHONE}}}, "restaurant.phone"),
        ({"execution_config": {"restaurant": {"name": " "}}}, "restaurant.name"),
        ({"execution_config": {"restaurant": {"colour": "red"}}}, "restaurant.colour"),
        ({"execution_config": {"website": {"theme": "neon"}}}, "website.theme"),
    ],
)
def test_a_bad_input_is_422_naming_the_field_and_the_job_keeps_waiting(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    job_id = new_job(client, waits=True)
    before = client.get(f"/api/registration-jobs/{job_id}").json()
    answer = send(client, job_id, body)
    assert answer.status_code == 422, answer.text
    assert f"body.execution_config.{field}" in locs(answer)
    after = client.get(f"/api/registration-jobs/{job_id}").json()
    assert after["action_required"] == before["action_required"]
    assert after["action_required"]["fields"] == ["restaurant.phone"]
    assert send(client, job_id, {"execution_config": {}, "extra": 1}).status_code == 422


def test_the_corrected_value_is_stored_as_a_new_version_and_queues_the_step(
    client: httpx.Client,
) -> None:
    job_id = new_job(client, waits=True)
    answer = send(client, job_id, {"execution_config": {"restaurant": {"phone": "+64 3 379 1"}}})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "success": True,
        "status": "in_progress",
        "flow_run_id": answer.json()["flow_run_id"],
    }
    job = client.get(f"/api/registration-jobs/{job_id}").json()
    assert (job["status"], job["action_required"], job["next_action"]) == (
        "in_progress",
        None,
        None,
    )
    step = next(s for s in job["steps"] if s["step_id"] == "restaurant_registration")
    assert step["status"] == "pending"
    with read_session() as session:
        row = session.get_one(RegistrationJob, job_id)
        config = ledger.job_config(row)
        assert (row.config_version, config.restaurant.phone) == (2, "+64 3 379 1")
        assert row.config_public["restaurant"]["name"] == "Kāinga <Pizza> & Co"
    again = send(client, job_id, {"execution_config": {"restaurant": {"phone": "+64 3 379 2"}}})
    assert again.status_code == 409, again.text
