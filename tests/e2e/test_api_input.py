"""Bad input gets a clear 4xx naming what is wrong, and nothing is created; secrets stay secret."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import Engine, func, inspect, select, text

from deployments.stack import Stack
from regjobs.models import RegistrationJob
from tests.helpers import flow_run_logs, full_config, watch_job

pytestmark = [pytest.mark.e2e]


def job_count(db: Engine) -> int:
    with db.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(RegistrationJob)).scalar_one()
        )


def post(api: httpx.Client, body: Any) -> httpx.Response:
    return api.post("/api/registration-jobs", json=body)


def locs(response: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"execution_config": full_config()}, "body.restaurant_id"),
        ({"restaurant_id": 42, "execution_config": full_config()}, "body.restaurant_id"),
        (
            {"restaurant_id": "r", "auto_start": "soon", "execution_config": full_config()},
            "body.auto_start",
        ),
        (
            {"restaurant_id": "r", "execution_config": {**full_config(), "colour": "red"}},
            "body.execution_config.colour",
        ),
        (
            {"restaurant_id": "r", "execution_config": full_config(menu={"menu_id": None})},
            "body.execution_config.menu.menu_id",
        ),
        (
            {"restaurant_id": "r", "execution_config": full_config(account={"email": "nope"})},
            "body.execution_config.account.email",
        ),
        (
            {"restaurant_id": "r", "execution_config": full_config(website={"theme": "neon"})},
            "body.execution_config.website.theme",
        ),
        ({"restaurant_id": "r", "execution_config": full_config(), "extra": 1}, "body.extra"),
    ],
)
def test_bad_create_is_422_naming_the_field_and_creates_nothing(
    api: httpx.Client, db: Engine, body: dict[str, Any], field: str
) -> None:
    before = job_count(db)
    response = post(api, body)
    assert response.status_code == 422, response.text
    assert field in locs(response)
    assert job_count(db) == before


def test_malformed_json_is_422(api: httpx.Client, db: Engine) -> None:
    before = job_count(db)
    response = api.post(
        "/api/registration-jobs",
        content=b'{"restaurant_id": "r",',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert job_count(db) == before


def test_a_body_nested_past_the_parser_is_400_not_500(api: httpx.Client, db: Engine) -> None:
    """Past Python's recursion limit the JSON parser gives up: the framework's 400, never
    a 500."""
    before = job_count(db)
    nested = b'{"restaurant_id": "r", "execution_config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = api.post(
        "/api/registration-jobs", content=nested, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "There was an error parsing the body"
    assert job_count(db) == before


def test_a_create_streamed_in_chunks_and_a_long_idempotency_key(
    api: httpx.Client, db: Engine
) -> None:
    body = json.dumps({"restaurant_id": f"chunks-{uuid.uuid4().hex[:8]}",
                       "execution_config": full_config()}).encode()  # fmt: skip

    def chunks() -> Any:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    created = api.post(
        "/api/registration-jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    assert api.post(f"/api/registration-jobs/{created.json()['job_id']}/cancel").status_code == 200
    before = job_count(db)
    too_long = api.post(
        "/api/registration-jobs",
        content=body,
        headers={"Content-Type": "application/json", "Idempotency-Key": "k" * 201},
    )
    assert too_long.status_code == 422
    assert locs(too_long) == ["header.idempotency-key"]
    assert job_count(db) == before


@pytest.mark.parametrize(
    "path", ["/api/registration-jobs/not-a-uuid", "/api/registration-jobs/not-a-uuid/progress"]
)
def test_malformed_job_id_is_422(api: httpx.Client, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 422
    assert locs(response) == ["path.job_id"]


def test_unknown_job_is_404(api: httpx.Client) -> None:
    job_id = uuid.uuid4()
    response = api.get(f"/api/registration-jobs/{job_id}")
    assert response.status_code == 404
    assert str(job_id) in response.json()["detail"]


def test_no_key_and_a_wrong_key_are_401(stack: Stack) -> None:
    url = f"{stack.config.api_url}/api/registration-jobs/{uuid.uuid4()}"
    missing = httpx.get(url)
    wrong = httpx.get(url, headers={"Authorization": "Bearer rj_not_a_key"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(f"{stack.config.api_url}/healthz").status_code == 200


def test_the_password_is_never_in_the_clear(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Engine, restaurant_id: str
) -> None:
    password = f"Pw-{uuid.uuid4().hex}"
    owner_password = f"Owner-{uuid.uuid4().hex}"
    config = full_config(
        account={"password": password}, onboarding={"user_password": owner_password}
    )
    # A rejected create echoes nothing either.
    rejected = post(
        api, {"restaurant_id": restaurant_id, "execution_config": {**config, "unknown": password}}
    )
    assert rejected.status_code == 422
    # An outside system that fails once: its error goes into the ledger and the logs.
    standin.post(
        "/_control/faults",
        json={"step": "account_registration", "mode": "status", "status": 500, "times": 1},
    ).raise_for_status()
    created = post(api, {"restaurant_id": restaurant_id, "execution_config": config})
    assert created.status_code == 201
    job_id = created.json()["job_id"]
    watch = watch_job(api, job_id)
    assert watch.job["status"] == "completed"

    secrets = (password, owner_password)
    texts = [
        rejected.text,
        created.text,
        json.dumps(watch.job),
        api.get(f"/api/registration-jobs/{job_id}/progress").text,
    ]
    # Every column of every table of the job database.
    with db.connect() as connection:
        for table in inspect(db).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                texts.append(repr(tuple(row)))
        stored = connection.execute(
            select(RegistrationJob.config_public).where(RegistrationJob.id == job_id)
        ).scalar_one()
    assert stored["account"]["password"] == "**********"
    # The flow run's parameters and every log line Prefect stored for it.
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(watch.job["flow_run_id"]))
        texts.append(json.dumps(run.parameters))
    logs = flow_run_logs(run.id)
    texts.extend(log.message for log in logs)
    assert run.parameters == {"job_id": job_id}
    assert any("500" in log.message for log in logs), "the failed attempt was logged"
    # The log files of every process.
    texts.extend(p.read_text(errors="replace") for p in Path(stack.logs_dir).glob("*.log"))
    for secret in secrets:
        assert not [t for t in texts if secret in t]
