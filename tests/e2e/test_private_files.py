"""A flow run's launcher reaches the warm pool through its private socket. (That every file
under a running system's state folder is its user's alone is shown with `make run`'s
launcher in test_launcher.py, which starts one launcher for it and for stopping.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    flow_run_pids,
    hold_step,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_flow_runs_start_warm_through_the_private_socket(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    """The peer checks let the system's own processes through: a flow run's launcher (the
    work pool's `python -m deployments.warm`) is handed a warm process rather than falling
    back to a cold `python -m prefect.engine`, which it would do silently. A launcher also
    starts cold when no warm process is ready in time (a starved machine: once in CI), so
    up to three jobs are tried, one after the other: refused peers would make every one
    cold."""
    seen = []
    for i in range(3):
        job_id = hold_step(api, standin, f"{restaurant_id}-{i}", "code_generation", 30)
        flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
        commands = [
            Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3]
            for pid in flow_run_pids(flow_run_id)
        ]
        api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
        seen.append(commands)
        if [b"-m", b"deployments.warm"] in commands:
            assert [b"-m", b"prefect.engine"] not in commands, commands
            return
    raise AssertionError(f"every flow run started cold: {seen}")
