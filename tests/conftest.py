"""Fixtures for the database and for the real system (Prefect server, worker, stand-in, API).

`REGJOBS_TEST_DATABASE=postgresql` runs the database and end-to-end tests against a fresh
PostgreSQL database on 127.0.0.1 (made and dropped here); the default is SQLite.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine

from deployments.stack import Stack, free_port
from deployments.stack_config import StackConfig
from regjobs.db import LOCAL_POSTGRES_ADMIN_URL
from tests.helpers import StepModes, end_leftover_jobs, new_key

PG_ADMIN_URL = os.environ.get("REGJOBS_TEST_PG_ADMIN_URL", LOCAL_POSTGRES_ADMIN_URL)
DEV_KEY = "rj_test_" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL server's admin URL the tests make scratch databases with
    (REGJOBS_TEST_PG_ADMIN_URL, else the local one)."""
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def dev_key() -> str:
    """The test system's development API key (the `api` client's)."""
    return DEV_KEY


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated job database for this test session."""
    from regjobs.db import migrate

    if os.environ.get("REGJOBS_TEST_DATABASE", "sqlite") == "postgresql":
        from regjobs.db import engine_for, scratch_postgres_database

        with scratch_postgres_database(PG_ADMIN_URL, "regjobs_test") as url:
            migrate(url)
            yield url
            engine_for(url).dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'regjobs.db'}"
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Engine:
    # Pre-ping: a test that drops every connection (test_database_drop) must not leave
    # the next test a dead pooled one.
    return create_engine(database_url, pool_pre_ping=True)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def stack_env(database_url: str, state_dir: Path) -> dict[str, str]:
    """Settings every process of the test system shares (and this process too)."""
    env = {
        "DATABASE_URL": database_url,
        "REGJOBS_STATE_DIR": str(state_dir),
        "REGJOBS_DEV_API_KEY": DEV_KEY,
        # Short enough to keep the suite quick, long enough to see `retrying` from outside.
        "REGJOBS_RETRY_BASE_SECONDS": "0.5",
        "REGJOBS_RETRY_JITTER_FACTOR": "0.2",
        "REGJOBS_HTTP_TIMEOUT_SECONDS": "3",
        "REGJOBS_CDN_POLL_SECONDS": "0.2",
        # A missing element fails an attempt after 3 s, not 15.
        "REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS": "3",
        # Most end-to-end tests are about orchestration, not the portal: their steps go
        # through the app's endpoints, which is quicker than Chromium. The tests of the
        # browser steps switch the worker to direct mode (the `direct_mode` fixture).
        "REGJOBS_STEP_MODE": "endpoints",
        # A release's queue unpolled this long has no live worker (test_redeploy waits for
        # a job to say so after it stops a release's worker).
        "REGJOBS_RELEASE_WORKER_GONE_SECONDS": "5",
        # The worker asks Prefect for runs every 1 s, not 0.25 s: each ask costs Prefect's
        # server a query, and CI runs four systems on two cores (an idle system took 23% of
        # a core, 17.5% so; docs/figures.md). The fairness test, which times a start, keeps
        # the default.
        "REGJOBS_WORKER_POLL_SECONDS": "1",
    }
    for key, value in env.items():
        os.environ[key] = value
    from regjobs.settings import get_settings

    get_settings.cache_clear()
    return env


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], state_dir: Path) -> Iterator[Stack]:
    config = StackConfig(
        state_dir=state_dir,
        api_port=free_port(),
        prefect_port=free_port(),
        standin_port=free_port(),
        env=stack_env,
        prefect_ui=False,
        # One process per port, so a test can tell which one leads the reconcilers.
        api_workers=1,
    )
    system = Stack(config)
    system.start_all()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: config.prefect_api_url}):
            yield system
    finally:
        system.stop()


#: The test clients drop a pooled connection idle for 2 s, before the servers' own 5-s
#: keep-alive timeout (uvicorn's) can close it under a request the client is sending (CI
#: once saw "Server disconnected without sending a response" from the stand-in).
KEEPALIVE = httpx.Limits(keepalive_expiry=2)


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    with httpx.Client(
        base_url=stack.config.api_url, headers=headers, timeout=30, limits=KEEPALIVE
    ) as client:
        yield client


@pytest.fixture
def standin(stack: Stack) -> Iterator[httpx.Client]:
    """The stand-in, reset before each test once no job an earlier test left running can
    call it any more (its counts are this test's alone)."""
    with httpx.Client(base_url=stack.config.standin_url, timeout=30, limits=KEEPALIVE) as client:
        ended = end_leftover_jobs()
        if ended:
            print(f"cancelled {len(ended)} job(s) earlier tests left running: {ended}")
        client.post("/_control/reset").raise_for_status()
        yield client


@pytest.fixture
def restaurant_id() -> str:
    return f"rest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def step_modes(stack: Stack) -> StepModes:
    """Switches the test system's worker between step modes (restarting it only on a
    change)."""
    return StepModes(stack)


@pytest.fixture(scope="module")
def direct_mode(step_modes: StepModes) -> Iterator[None]:
    """The worker (and its flow runs) in direct mode for this module: the API steps call
    the platform API, onboarding service and CDN; the browser steps drive the portal."""
    step_modes.use("direct")
    try:
        yield
    finally:
        step_modes.use("endpoints")


@pytest.fixture(scope="module")
def other_org(stack: Stack) -> Iterator[httpx.Client]:
    """An API client of another organisation than `api`'s."""
    key = new_key(stack, f"other-{uuid.uuid4().hex[:6]}")
    with httpx.Client(
        base_url=stack.config.api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        yield client
