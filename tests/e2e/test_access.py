"""Every endpoint: keys (none, revoked), organisations (others' jobs do not exist), and bad
input answered 4xx with a clear message, never 500."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deployments.stack import Stack
from tests.helpers import full_config, new_key

pytestmark = [pytest.mark.e2e]

JOB_ENDPOINTS = [
    ("GET", "/api/registration-jobs/{job}"),
    ("GET", "/api/registration-jobs/{job}/progress"),
    ("POST", "/api/registration-jobs/{job}/start"),
    ("POST", "/api/registration-jobs/{job}/cancel"),
    ("POST", "/api/registration-jobs/{job}/retry"),
    ("GET", "/api/registration-jobs/{job}/events"),
]
ALL_ENDPOINTS = [
    ("POST", "/api/registration-jobs"),
    ("GET", "/api/registration-jobs"),
    ("GET", "/api/restaurants/{restaurant}/registration-jobs/active"),
    *JOB_ENDPOINTS,
]


@pytest.fixture(scope="module")
def parked_job(api: httpx.Client) -> Iterator[dict[str, str]]:
    """A job of the demo organisation that never starts (auto_start false)."""
    restaurant = f"parked-{uuid.uuid4().hex[:8]}"
    created = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant,
            "auto_start": False,
            "execution_config": full_config(),
        },
    )
    created.raise_for_status()
    yield {"job": created.json()["job_id"], "restaurant": restaurant}
    api.post(f"/api/registration-jobs/{created.json()['job_id']}/cancel")


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return client.request(method, path, **kwargs)


@pytest.mark.parametrize(("method", "path"), ALL_ENDPOINTS)
def test_no_key_is_401(stack: Stack, parked_job: dict[str, str], method: str, path: str) -> None:
    with httpx.Client(base_url=stack.config.api_url) as anonymous:
        response = call(anonymous, method, path.format(**parked_job), json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_key_is_401_on_every_endpoint(stack: Stack, parked_job: dict[str, str]) -> None:
    key = new_key(stack, "demo-organisation")
    with httpx.Client(
        base_url=stack.config.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        assert client.get("/api/registration-jobs/{job}".format(**parked_job)).status_code == 200
        stack.run([sys.executable, "-m", "regjobs.auth", "revoke", key[:11]])
        for method, path in ALL_ENDPOINTS:
            response = call(client, method, path.format(**parked_job), json={})
            assert response.status_code == 401, (method, path)
            assert "revoked" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path"), JOB_ENDPOINTS)
def test_another_organisations_job_is_404(
    other_org: httpx.Client, parked_job: dict[str, str], method: str, path: str
) -> None:
    response = call(other_org, method, path.format(**parked_job), json={})
    assert response.status_code == 404
    assert parked_job["job"] in response.json()["detail"]


def test_another_organisations_active_job_is_not_visible(
    api: httpx.Client, other_org: httpx.Client, parked_job: dict[str, str]
) -> None:
    path = "/api/restaurants/{restaurant}/registration-jobs/active".format(**parked_job)
    assert api.get(path).json()["job"]["id"] == parked_job["job"]
    assert other_org.get(path).json() == {"job": None}


@pytest.mark.parametrize(("method", "path"), JOB_ENDPOINTS)
def test_unknown_and_malformed_job_ids(api: httpx.Client, method: str, path: str) -> None:
    unknown = call(api, method, path.format(job=uuid.uuid4()), json={})
    assert unknown.status_code == 404
    malformed = call(api, method, path.format(job="not-a-uuid"), json={})
    assert malformed.status_code == 422
    assert ["path", "job_id"] in [e["loc"] for e in malformed.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"from_step": "no_such_step"}, 422),
        ({"from_step": 7}, 422),
        ({"from_step": "website_configuration", "extra": True}, 422),
        ([1, 2], 422),
    ],
)
def test_bad_retry_bodies(
    api: httpx.Client, parked_job: dict[str, str], body: Any, status: int
) -> None:
    response = api.post("/api/registration-jobs/{job}/retry".format(**parked_job), json=body)
    assert response.status_code == status, response.text
    assert "from_step" in response.text or "body" in response.text


def test_retry_of_a_pending_job_is_409(api: httpx.Client, parked_job: dict[str, str]) -> None:
    response = api.post("/api/registration-jobs/{job}/retry".format(**parked_job))
    assert response.status_code == 409
    assert "pending" in response.json()["detail"]


def test_malformed_json_on_every_body_endpoint(
    api: httpx.Client, parked_job: dict[str, str]
) -> None:
    for path in ("/api/registration-jobs", "/api/registration-jobs/{job}/retry"):
        response = api.post(
            path.format(**parked_job),
            content=b"{nope",
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["type"] == "json_invalid"
