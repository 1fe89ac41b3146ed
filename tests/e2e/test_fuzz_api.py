"""Generated requests against the API's own OpenAPI document, over HTTP, with a valid key
and without: no answer is a 5xx, and every answer matches the documented schema.

Each operation gets up to FUZZ_EXAMPLES generated requests per key setting; each test
prints how many requests it sent, and holds them to at least MIN_SENT (each test on its own:
none depends on another having run).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from deployments.stack import Stack

# `database`: CI's PostgreSQL pass runs it too (so it must not be `slow`).
pytestmark = [pytest.mark.e2e]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "80"))
#: Requests one key setting sends at the least (7 operations or more, EXAMPLES each at most;
#: Hypothesis stops early on an operation with few distinct inputs).
MIN_SENT = 500
#: What the API promises: no server error, and answers as documented (status codes,
#: content types, headers, bodies). Cross-field rules of the config are not in the schema,
#: so a schema-valid body may well be refused (422): that is not checked.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _call(case: Any, stack: Stack, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = case.call(base_url=stack.config.api_url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text)
    case.validate_response(response, checks=CHECKS)
    if response.status_code == 201 and key:
        # A generated config valid enough to make a job: stop it, it is not what we test.
        job_id = response.json()["job_id"]
        httpx.post(
            f"{stack.config.api_url}/api/registration-jobs/{job_id}/cancel",
            headers=headers,
            timeout=30,
        )


@pytest.mark.parametrize("with_key", [True, False], ids=["with key", "without key"])
def test_fuzz_every_operation(stack: Stack, dev_key: str, with_key: bool) -> None:
    key = dev_key if with_key else None
    sent = 0
    # Schemathesis' own pytest integration does not run on pytest 9 yet: drive Hypothesis
    # with its strategies directly.
    schema = schemathesis.openapi.from_url(f"{stack.config.api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    covered = {(op.method.upper(), op.path) for op in operations}
    assert {
        ("POST", "/api/registration-jobs"),
        ("GET", "/api/registration-jobs"),
        ("GET", "/api/registration-jobs/{job_id}"),
        ("GET", "/api/registration-jobs/{job_id}/progress"),
        ("GET", "/api/registration-jobs/{job_id}/events"),
        ("POST", "/api/registration-jobs/{job_id}/cancel"),
        ("POST", "/api/registration-jobs/{job_id}/retry"),
    } <= covered
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            nonlocal sent
            sent += 1
            _call(case, stack, key)

        run()
    print(f"fuzzing sent {sent} requests {'with' if key else 'without'} a key")
    assert sent >= MIN_SENT
