"""The database drops every connection mid-step: the job carries on and completes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine, text

from regjobs.catalogue import STEP_IDS
from tests.helpers import effects, hold_step, postgresql_only, watch_job

pytestmark = [pytest.mark.e2e, pytest.mark.database]


@postgresql_only("SQLite has no connections to drop")
def test_connections_dropped_mid_step_are_retried(
    api: httpx.Client, standin: httpx.Client, db: Engine, restaurant_id: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "restaurant_registration", 3)

    with db.connect() as connection:
        dropped = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert dropped >= 1, "the flow-run process and the API hold connections"

    job = watch_job(api, job_id, timeout=60).job
    assert job["status"] == "completed", job
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)
