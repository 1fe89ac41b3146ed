"""Restarts mid-job: the Prefect server, the API. The job is neither lost nor failed."""

from __future__ import annotations

import httpx
import pytest

from deployments.stack import Stack
from regjobs.catalogue import STEP_IDS
from tests.helpers import effects, hold_step, watch_job

pytestmark = pytest.mark.e2e


def test_prefect_server_restart_mid_job(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "restaurant_registration", 8)

    stack.stop_child("prefect")
    # While Prefect is down the API answers from the ledger.
    assert api.get(f"/api/registration-jobs/{job_id}/progress").status_code == 200
    stack.start_prefect()

    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed", job
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)


def test_api_restart_mid_job_loses_nothing(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "menu_import", 4)

    stack.stop_child("api")
    stack.start_api()

    job = watch_job(api, job_id, timeout=60).job
    assert job["status"] == "completed"
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)
