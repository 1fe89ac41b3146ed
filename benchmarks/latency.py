"""How fast a job starts and how close it runs to its critical path. Prints figures.

    .venv/bin/python -m benchmarks.latency [--runs 5]

Starts its own system (Prefect server on SQLite, worker, stand-in, API) on free ports in a
temporary folder, exactly as `make run` does, and stops it at the end. Steps run in
`endpoints` mode (one call each), so these are figures of the orchestration; browser steps
are measured by `benchmarks.browser`.
1. POST -> first step running: from sending the POST to the earliest step `started_at`
   (the ledger's clock and this one are the same machine's), over --runs jobs.
2. Critical path: every stand-in call slowed to 1 s; the graph's longest chain is then
   5 s (account -> restaurant -> menu import -> option sets -> item tags, and image upload's
   two calls -> menu import -> ...). Reports job wall time (first step start to job end).
3. `/progress` latency while jobs poll it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from deployments.demo import DEMO_CONFIG
from deployments.stack import Stack, StackConfig, free_port
from regjobs.catalogue import STEP_IDS, STEPS

FINAL = {"completed", "failed", "cancelled"}
KEY = "rj_bench_" + uuid.uuid4().hex


def wait_job(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = api.get(f"/api/registration-jobs/{job_id}/progress").json()
        if progress["status"] in FINAL:
            return dict(api.get(f"/api/registration-jobs/{job_id}").json())
        time.sleep(0.05)
    raise TimeoutError(job_id)


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def create(api: httpx.Client) -> tuple[str, float]:
    """A job for a new restaurant of a new account (jobs at once must not share them)."""
    tag = uuid.uuid4().hex[:8]
    config = {
        **DEMO_CONFIG,
        "account": {**DEMO_CONFIG["account"], "email": f"bench-{tag}@example.com"},
        "restaurant": {**DEMO_CONFIG["restaurant"], "name": f"Bench {tag}"},
    }
    sent = time.time()
    response = api.post(
        "/api/registration-jobs",
        json={"restaurant_id": f"bench-{tag}", "execution_config": config},
    )
    response.raise_for_status()
    return str(response.json()["job_id"]), sent


def measured_critical_path(job: dict[str, Any]) -> float:
    """The longest chain of the graph, weighing each step by its recorded duration."""
    durations = {s["step_id"]: (s["duration_ms"] or 0) / 1000 for s in job["steps"]}
    finish: dict[str, float] = {}
    for step in STEPS:  # topological order
        finish[step.id] = durations[step.id] + max((finish[n] for n in step.needs), default=0)
    return max(finish.values())


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f} s, min {min(values):.2f} s, "
        f"max {max(values):.2f} s (n={len(values)})"
    )


@contextmanager
def own_stack(
    *, keep: bool = False, worker_limit: int | None = None, **env: str
) -> Iterator[Stack]:
    """A whole system on free ports in a temporary folder, started as `make run` does.
    With `keep`, the folder (logs, databases) stays after the end and its path is printed."""
    tmp = tempfile.mkdtemp(prefix="regjobs-bench-")
    try:
        config = StackConfig(
            state_dir=Path(tmp),
            api_port=free_port(),
            prefect_port=free_port(),
            standin_port=free_port(),
            prefect_ui=False,
            **({} if worker_limit is None else {"worker_limit": worker_limit}),
            env={"REGJOBS_DEV_API_KEY": KEY, "REGJOBS_CDN_POLL_SECONDS": "0.2", **env},
        )
        stack = Stack(config)
        started = time.monotonic()
        stack.start_all()
        print(f"system up in {time.monotonic() - started:.1f} s")
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        if keep:
            print(f"logs and databases kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with own_stack(REGJOBS_STEP_MODE="endpoints") as stack:
        run(stack, args.runs)


def run(stack: Stack, runs: int) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    api = httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=30)
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)

    to_first_step: list[float] = []
    to_end: list[float] = []
    for _ in range(runs):
        standin.post("/_control/reset").raise_for_status()
        job_id, sent = create(api)
        job = wait_job(api, job_id)
        assert job["status"] == "completed", job
        first = min(ts(s["started_at"]) for s in job["steps"] if s["started_at"])
        to_first_step.append(first - sent)
        to_end.append(ts(job["completed_at"]) - sent)
    print(f"POST -> first step running:  {summary(to_first_step)}")
    print(f"POST -> job completed (instant stand-in): {summary(to_end)}")

    walls: list[float] = []
    paths: list[float] = []
    for _ in range(runs):
        standin.post("/_control/reset").raise_for_status()
        standin.post("/_control/config", json={"cdn_processing_seconds": 0}).raise_for_status()
        for step in STEP_IDS:
            standin.post(
                "/_control/faults", json={"step": step, "mode": "slow", "seconds": 1}
            ).raise_for_status()
        job_id, _ = create(api)
        job = wait_job(api, job_id)
        assert job["status"] == "completed", job
        first = min(ts(s["started_at"]) for s in job["steps"] if s["started_at"])
        walls.append(ts(job["completed_at"]) - first)
        paths.append(measured_critical_path(job))
    print("critical path with every stand-in call at 1 s: 5.0 s (5 steps in a chain)")
    print(f"critical path of the measured step durations: {summary(paths)}")
    print(f"job wall time (first step start -> job end): {summary(walls)}")
    print(f"overhead over the critical path: median {statistics.median(walls) - 5.0:.2f} s")

    standin.post("/_control/reset").raise_for_status()
    job_id, _ = create(api)
    latencies: list[float] = []
    for _ in range(200):
        t0 = time.perf_counter()
        api.get(f"/api/registration-jobs/{job_id}/progress").raise_for_status()
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    print(
        f"/progress latency over 200 calls: p50 {latencies[100]:.1f} ms, "
        f"p95 {latencies[190]:.1f} ms, max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
