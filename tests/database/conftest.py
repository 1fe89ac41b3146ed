"""Fixtures of the database tier: the API app in the test process, without Prefect."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import api_in_thread, own_job_database


@pytest.fixture(scope="module")
def own_database(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str
) -> Iterator[None]:
    """A job database of the module's own (`pytestmark = ... usefixtures("own_database")`):
    for modules whose jobs name made-up flow runs, which the session's test system, if this
    process runs one, would fail as disappeared (its reconciler reads every active job's
    run in Prefect)."""
    with own_job_database(tmp_path_factory.mktemp("own-db"), pg_admin_url):
        yield


@pytest.fixture(scope="module")
def api_base(stack_env: dict[str, str]) -> Iterator[str]:
    """The API app, its reconciler off (no Prefect here)."""
    with api_in_thread() as base:
        yield base


@pytest.fixture
def client(api_base: str, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    """An API client of the development key's organisation."""
    headers = {"Authorization": f"Bearer {stack_env['REGJOBS_DEV_API_KEY']}"}
    with httpx.Client(base_url=api_base, headers=headers, timeout=30) as http:
        yield http
