"""The demo job `make run` submits: create it, then show its progress until it ends."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from regjobs.catalogue import FINAL_JOB_STATUSES, StepStatus
from regjobs.config import EXAMPLE_CONFIG

#: The example config with every optional step switched on, so the demo runs all twelve.
DEMO_CONFIG: dict[str, Any] = {
    **EXAMPLE_CONFIG,
    "onboarding": {
        "create_user": True,
        "sync_record": True,
        "user_name": "Demo Owner",
        "user_email": "owner@example.com",
        "user_password": "OwnerPass#2026",
    },
}


def run_demo(api_url: str, api_key: str, stop: threading.Event) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    restaurant_id = f"demo-{int(time.time())}"
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        created = client.post(
            "/api/registration-jobs",
            json={
                "restaurant_id": restaurant_id,
                "execution_config": DEMO_CONFIG,
            },
        )
        created.raise_for_status()
        job_id = created.json()["job_id"]
        posted = time.monotonic()
        print(f"demo job {job_id} for restaurant {restaurant_id}")
        last: dict[str, str] = {}
        progress: dict[str, Any] = {}
        while not stop.is_set():
            progress = client.get(f"/api/registration-jobs/{job_id}/progress").json()
            for step_id, status in progress["step_statuses"].items():
                if last.get(step_id) != status:
                    print(f"  {time.monotonic() - posted:6.1f} s  {step_id:<26} {status}")
            last = progress["step_statuses"]
            if progress["status"] in FINAL_JOB_STATUSES:
                break
            stop.wait(0.5)
        job = client.get(f"/api/registration-jobs/{job_id}").json()
        done = sum(1 for s in job["steps"] if s["status"] == StepStatus.COMPLETED)
        print(
            f"demo job {job['status']}: {done} of {len(job['steps'])} steps completed, "
            f"{job['progress_percent']}% in {time.monotonic() - posted:.1f} s"
        )
        if job.get("flow_run_url"):
            print(f"  in Prefect: {job['flow_run_url']}")
        return dict(job)
