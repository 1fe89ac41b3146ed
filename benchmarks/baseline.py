"""The cost baseline's side of `benchmarks.throughput --parts compare`: flow runs of the bare
Prefect flow (flows/baseline.py) made through Prefect's REST API, as the job API's
dispatcher makes the registration flow's, and read back from it. The deployment is made
from benchmarks/baseline.yaml on the stack's own work pool.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import datetime
from typing import Any

import httpx

from deployments.stack import PYTHON, Stack
from flows.baseline import DEPLOYMENT
from regjobs.catalogue import STEPS

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def deploy(stack: Stack) -> None:
    stack.run(
        [
            PYTHON,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--prefect-file",
            "benchmarks/baseline.yaml",
            "--all",
        ]
    )


def headers(stack: Stack) -> dict[str, str]:
    """What Prefect's own client sends in the production shape: its Basic auth, and a CSRF
    token (the server's CSRF protection is on there)."""
    production = stack.config.production
    if production is None:
        return {}
    auth = {"Authorization": f"Basic {base64.b64encode(production.prefect_auth.encode()).decode()}"}
    csrf_client = str(uuid.uuid4())
    response = httpx.get(
        f"{stack.config.prefect_api_url}/csrf-token", params={"client": csrf_client}, headers=auth
    )
    response.raise_for_status()
    token = response.json()["token"]
    return {**auth, "Prefect-Csrf-Token": token, "Prefect-Csrf-Client": csrf_client}


def client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.config.prefect_api_url, headers=headers(stack), timeout=60)


def deployment_id(prefect: httpx.Client) -> str:
    response = prefect.get(f"/deployments/name/{DEPLOYMENT}")
    response.raise_for_status()
    return str(response.json()["id"])


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def create(prefect: httpx.Client, deployment: str, step_seconds: float = 0.0) -> tuple[str, float]:
    """A flow run of the baseline; its id and when the create was sent."""
    sent = time.time()
    response = prefect.post(
        f"/deployments/{deployment}/create_flow_run",
        json={"parameters": {"step_seconds": step_seconds}},
    )
    response.raise_for_status()
    return str(response.json()["id"]), sent


def states(prefect: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for at in range(0, len(ids), 200):
        response = prefect.post(
            "/flow_runs/filter",
            json={"flow_runs": {"id": {"any_": ids[at : at + 200]}}, "limit": 200},
        )
        response.raise_for_status()
        found.update({run["id"]: run for run in response.json()})
    return found


def wait(prefect: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Every flow run to a final state (or the deadline); the runs as last read."""
    deadline = time.monotonic() + timeout
    while True:
        runs = states(prefect, ids)
        done = all((runs.get(i, {}).get("state_type") or "") in FINAL for i in ids)
        if done or time.monotonic() > deadline:
            return runs
        time.sleep(0.05 if len(ids) == 1 else 1.0)


def task_runs(prefect: httpx.Client, flow_run_id: str) -> list[dict[str, Any]]:
    response = prefect.post(
        "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 50}
    )
    response.raise_for_status()
    return list(response.json())


def first_start(prefect: httpx.Client, flow_run_id: str, timeout: float = 30) -> float:
    """When the flow run's first task run began running. Prefect records task runs from
    their events (its services' task-run recorder), a moment after the flow run has ended:
    waits until all twelve are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = [ts(t["start_time"]) for t in task_runs(prefect, flow_run_id) if t["start_time"]]
        if len(found) >= len(STEPS) or time.monotonic() > deadline:
            return min(found)
        time.sleep(0.1)


def starts(stack: Stack, runs: int, pause: float = 0.5) -> list[float]:
    """Create -> first task running, `runs` flow runs one after the other."""
    totals: list[float] = []
    with client(stack) as prefect:
        deployment = deployment_id(prefect)
        for _ in range(runs):
            run_id, sent = create(prefect, deployment)
            run = wait(prefect, [run_id], 120)[run_id]
            assert run["state_type"] == "COMPLETED", run["state_type"]
            totals.append(first_start(prefect, run_id) - sent)
            time.sleep(pause)
    return totals


def walls(stack: Stack, runs: int, step_seconds: float = 1.0) -> list[float]:
    """First task start -> flow run end, with every step `step_seconds` long."""
    found: list[float] = []
    with client(stack) as prefect:
        deployment = deployment_id(prefect)
        for _ in range(runs):
            run_id, _ = create(prefect, deployment, step_seconds)
            run = wait(prefect, [run_id], 120)[run_id]
            assert run["state_type"] == "COMPLETED", run["state_type"]
            found.append(ts(run["end_time"]) - first_start(prefect, run_id))
    return found


async def _burst(stack: Stack, deployment: str, jobs: int) -> list[str]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=stack.config.prefect_api_url, headers=headers(stack), timeout=120, limits=limits
    ) as prefect:

        async def one() -> str:
            response = await prefect.post(
                f"/deployments/{deployment}/create_flow_run", json={"parameters": {}}
            )
            response.raise_for_status()
            return str(response.json()["id"])

        return list(await asyncio.gather(*(one() for _ in range(jobs))))


def burst(stack: Stack, jobs: int, timeout: float) -> dict[str, int]:
    """`jobs` flow runs created at once, each to its end; how many ended in each state."""
    with client(stack) as prefect:
        ids = asyncio.run(_burst(stack, deployment_id(prefect), jobs))
        runs = wait(prefect, ids, timeout)
    counts: dict[str, int] = {}
    for run_id in ids:
        state = (runs.get(run_id, {}).get("state_type") or "missing").lower()
        counts[state] = counts.get(state, 0) + 1
    return counts
