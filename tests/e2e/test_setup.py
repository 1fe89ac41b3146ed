"""The deployment set-up's work pool and browser limit (`deployments.setup`), against the
test system's Prefect server: made when missing, as `prefect work-pool create --type
process` would make the pool; the limit brought up to date when the set-up runs again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.workers.process import ProcessWorker

from deployments.setup import _pool_and_limit
from deployments.stack import Stack
from regjobs.settings import Settings

pytestmark = pytest.mark.e2e


@pytest.fixture
def names(stack: Stack) -> Iterator[tuple[str, str]]:
    """A work pool and a limit of this test's own, removed after it."""
    tag = uuid.uuid4().hex[:8]
    pool, limit = f"setup-pool-{tag}", f"setup-limit-{tag}"
    yield pool, limit
    with get_client(sync_client=True) as client:
        client.delete_work_pool(pool)
        client.delete_global_concurrency_limit_by_name(limit)


def test_the_set_up_makes_the_pool_and_limit_then_brings_the_limit_up_to_date(
    names: tuple[str, str],
) -> None:
    pool_name, limit_name = names

    def set_up(limit: int) -> None:
        settings = Settings(work_pool=pool_name, browser_limit_name=limit_name, browser_limit=limit)
        asyncio.run(_pool_and_limit(settings))

    set_up(3)
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(pool_name)
        assert pool.type == "process"
        assert pool.base_job_template == ProcessWorker.get_default_base_job_template()
        assert client.read_global_concurrency_limit_by_name(limit_name).limit == 3

    set_up(1)  # again, as after a change of REGJOBS_BROWSER_LIMIT
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool_name).id == pool.id
        assert client.read_global_concurrency_limit_by_name(limit_name).limit == 1
