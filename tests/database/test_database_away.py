"""The job database unreachable (restarting, failing over) or out of connections: a request
is 503 with Retry-After and the usual `{"detail"}`, never a 500; the caller sends it again.
(A real PostgreSQL restart with jobs in flight: tests/hosts/test_host_failures.py.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api import service
from tests.helpers import full_config

pytestmark = [pytest.mark.database]


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("INSERT", {}, Exception("connection refused\nis the server running?")),
        InterfaceError("SELECT", {}, Exception("connection already closed")),
        PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
    ],
    ids=["refused", "closed", "pool exhausted"],
)
def test_a_create_meeting_an_unreachable_database_is_503_with_retry_after(
    api_base: str, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    async def away(*_: Any, **__: Any) -> Any:
        raise error

    monkeypatch.setattr(service, "create_answer", away)
    headers = {"Authorization": f"Bearer {stack_env['REGJOBS_DEV_API_KEY']}"}
    body = {
        "restaurant_id": "away-Ünï-<b>",
        "auto_start": False,
        "execution_config": full_config(
            account={"password": "Pizza Ünï <b>pass</b> word"},
            restaurant={"name": "Pizza Ünï <b>"},
        ),
    }
    response = httpx.post(f"{api_base}/api/registration-jobs", json=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.json() == {"detail": "the job database is unavailable; try again shortly"}
    assert "word" not in response.text
