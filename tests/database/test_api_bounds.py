"""Hostile input against the real API app (in this process, on a real socket) and the job
database of the session (SQLite; PostgreSQL in CI's second pass): bounds are 422s naming
the field, a huge body is 413 unread, ids out of range are 404, evidence links expire and
name their organisation."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from regjobs import ledger
from regjobs.auth import add_key, ensure_organisation
from regjobs.config import ExecutionConfig
from regjobs.db import transaction
from regjobs.evidence import evidence_url
from regjobs.models import StepEvidence
from regjobs.settings import get_settings
from tests.helpers import full_config, upload

pytestmark = pytest.mark.database

PNG = b"\x89PNG\r\n\x1a\nnot really"


def create_body(**sections: Any) -> dict[str, Any]:
    return {
        "restaurant_id": f"bounds-{uuid.uuid4().hex[:8]}",
        "auto_start": False,
        "execution_config": full_config(**sections),
    }


def locs(response: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def test_the_traversal_menu_id_is_422_naming_the_field(client: httpx.Client) -> None:
    response = client.post(
        "/api/registration-jobs", json=create_body(menu={"menu_id": "../../api/admin/x#"})
    )
    assert response.status_code == 422, response.text
    assert locs(response) == ["body.execution_config.menu.menu_id"]


@pytest.mark.parametrize(
    ("section", "field", "length"),
    [("restaurant", "name", 301), ("restaurant", "name", 5000), ("account", "phone", 1000)],
)
def test_a_long_value_is_422_naming_the_field(
    client: httpx.Client, section: str, field: str, length: int
) -> None:
    response = client.post(
        "/api/registration-jobs", json=create_body(**{section: {field: "n" * length}})
    )
    assert response.status_code == 422, response.text
    assert f"body.execution_config.{section}.{field}" in locs(response)


def test_a_nul_character_is_422_not_a_database_error(client: httpx.Client) -> None:
    body = create_body(restaurant={"name": "a\x00b"})
    response = client.post("/api/registration-jobs", json=body)
    assert response.status_code == 422
    assert locs(response) == ["body.execution_config.restaurant.name"]
    body = create_body()
    body["restaurant_id"] = "r\x00"
    assert client.post("/api/registration-jobs", json=body).status_code == 422
    listed = client.get("/api/registration-jobs", params={"restaurant_id": "a\x00"})
    assert listed.status_code == 422
    assert client.get("/api/restaurants/a%00b/registration-jobs/active").status_code == 422


def test_a_200_character_name_is_fine(client: httpx.Client) -> None:
    response = client.post(
        "/api/registration-jobs", json=create_body(restaurant={"name": "n" * 200})
    )
    assert response.status_code == 201, response.text
    client.post(f"/api/registration-jobs/{response.json()['job_id']}/cancel")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_10_mib_body_is_413_before_it_is_read_whole(
    api_base: str, stack_env: dict[str, str], chunked: bool
) -> None:
    key = stack_env["REGJOBS_DEV_API_KEY"]
    result = upload(
        api_base,
        "/api/registration-jobs",
        total=10 * 2**20,
        chunked=chunked,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert result.status == 413, result.answer[:500]
    # The answer came while most of the body was still unsent.
    assert result.sent < 2 * 2**20, result.sent
    assert b'"detail"' in result.answer
    how = "chunked" if chunked else "declared"
    print(f"413 after {result.sent} of {10 * 2**20} bytes sent ({how})")


# --------------------------------------------------------------------------- evidence


@pytest.fixture
def job_with_evidence(stack_env: dict[str, str]) -> tuple[str, str, int]:
    """A job of the development organisation with one screenshot: (job, organisation, id)."""

    def make(*, session: Any) -> tuple[str, str, int]:
        org = ensure_organisation(session, get_settings().dev_organisation)
        job = ledger.create_job(
            session=session,
            organisation_id=org.id,
            restaurant_id=f"ev-{uuid.uuid4().hex[:8]}",
            config=ExecutionConfig.model_validate(full_config()),
            auto_start=False,
        )
        shot = StepEvidence(job_id=job.id, step_id="website_configuration", attempt=1, data=PNG)
        session.add(shot)
        session.flush()
        return job.id, org.id, shot.id

    return transaction(make)


def other_organisation() -> tuple[str, str]:
    """A new organisation and a key of it."""

    def make(*, session: Any) -> tuple[str, str]:
        org = ensure_organisation(session, f"other-{uuid.uuid4().hex[:8]}")
        return org.id, add_key(session, organisation=org, label="test")

    return transaction(make)


@pytest.mark.parametrize("evidence_id", [2**63, 2**64, 10**30, 0, -1])
def test_an_evidence_id_out_of_range_is_404(
    client: httpx.Client, job_with_evidence: tuple[str, str, int], evidence_id: int
) -> None:
    job_id, _, _ = job_with_evidence
    response = client.get(f"/api/registration-jobs/{job_id}/evidence/{evidence_id}")
    assert response.status_code == 404, response.text


def test_a_signed_link_opens_without_a_key(
    api_base: str, job_with_evidence: tuple[str, str, int]
) -> None:
    job_id, org_id, evidence_id = job_with_evidence
    url = evidence_url(get_settings(), job_id, evidence_id, org_id).split("/api/", 1)[1]
    response = httpx.get(f"{api_base}/api/{url}")
    assert response.status_code == 200
    assert response.content == PNG


def test_an_expired_link_is_404(api_base: str, job_with_evidence: tuple[str, str, int]) -> None:
    job_id, org_id, evidence_id = job_with_evidence
    settings = get_settings()
    made = time.time() - settings.evidence_link_ttl_seconds - 2 * 3600
    url = evidence_url(settings, job_id, evidence_id, org_id, now=made).split("/api/", 1)[1]
    assert httpx.get(f"{api_base}/api/{url}").status_code == 404
    # Not even with a key of the job's organisation: the link alone decides.
    key = get_settings().dev_api_key
    assert key is not None
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    assert httpx.get(f"{api_base}/api/{url}", headers=headers).status_code == 404


def test_a_link_of_another_organisation_is_404(
    api_base: str, job_with_evidence: tuple[str, str, int]
) -> None:
    job_id, org_id, evidence_id = job_with_evidence
    other_id, other_key = other_organisation()
    settings = get_settings()
    # Rightly signed, but for an organisation the job does not belong to.
    signed = evidence_url(settings, job_id, evidence_id, other_id).split("/api/", 1)[1]
    assert httpx.get(f"{api_base}/api/{signed}").status_code == 404
    # The job's own link with the organisation swapped: the signature no longer holds.
    own = evidence_url(settings, job_id, evidence_id, org_id).split("/api/", 1)[1]
    swapped = own.replace(f"org={org_id}", f"org={other_id}")
    assert httpx.get(f"{api_base}/api/{swapped}").status_code == 404
    # A key of the other organisation opens nothing either.
    unsigned = own.split("?")[0]
    headers = {"Authorization": f"Bearer {other_key}"}
    assert httpx.get(f"{api_base}/api/{unsigned}", headers=headers).status_code == 404


def test_an_altered_expiry_is_404(api_base: str, job_with_evidence: tuple[str, str, int]) -> None:
    job_id, org_id, evidence_id = job_with_evidence
    own = evidence_url(get_settings(), job_id, evidence_id, org_id).split("/api/", 1)[1]
    later = own.replace("exp=", "exp=9")
    assert httpx.get(f"{api_base}/api/{later}").status_code == 404


def test_links_are_signed_with_a_derived_key_not_the_fernet_key(
    job_with_evidence: tuple[str, str, int],
) -> None:
    import hashlib
    import hmac
    from urllib.parse import parse_qs, urlsplit

    job_id, org_id, evidence_id = job_with_evidence
    settings = get_settings()
    url = evidence_url(settings, job_id, evidence_id, org_id)
    query = parse_qs(urlsplit(url).query)
    message = f"evidence:{job_id}:{evidence_id}:{org_id}:{query['exp'][0]}".encode()
    with_fernet_key = hmac.new(settings.fernet_keys()[0], message, hashlib.sha256).hexdigest()
    assert query["sig"][0] != with_fernet_key[:32]
