"""Browser steps: how long each takes, and the whole system's memory with 1, 4 and 12 jobs
at once in direct mode, the browser limit at 2. Prints figures.

    .venv/bin/python -m benchmarks.browser [--jobs 1 4 12]

For each number of jobs, its own system started as `make run` does (on free ports in a
temporary folder; one worker running up to 12 flow runs at once). Memory is PSS
(proportional set size: a page shared by N processes counts 1/N to each, so the sum is the
memory really used), summed over every process of the system (Prefect server, worker,
flow-run processes, Playwright drivers, Chromium, stand-in, API), sampled every 0.25 s;
Chromium's share and the number of browsers alive at once are reported beside it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.latency import KEY, own_stack, wait_job
from deployments.demo import DEMO_CONFIG
from deployments.pids import browser_processes, chromium_processes, marked_processes
from deployments.stack import Stack
from regjobs.catalogue import STEPS, JobStatus, StepKind

BROWSER_STEPS = [s.id for s in STEPS if s.kind is StepKind.BROWSER]


def pss(pid: int) -> int:
    """Bytes of PSS of one process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Sample:
    total: int
    chromium: int
    browsers: int


def sample(stack_id: str) -> Sample:
    sizes = {pid: pss(pid) for pid in marked_processes(stack_id)}
    chromium = chromium_processes(sizes)
    return Sample(
        total=sum(sizes.values()),
        chromium=sum(sizes[pid] for pid in chromium),
        browsers=len(browser_processes(chromium)),
    )


def create(api: httpx.Client) -> str:
    tag = uuid.uuid4().hex[:8]
    config = {
        **DEMO_CONFIG,
        "account": {**DEMO_CONFIG["account"], "email": f"mem-{tag}@example.com"},
        "restaurant": {**DEMO_CONFIG["restaurant"], "name": f"Mem {tag}"},
        "onboarding": {**DEMO_CONFIG["onboarding"], "user_email": f"owner-{tag}@example.com"},
    }
    response = api.post(
        "/api/registration-jobs", json={"restaurant_id": f"mem-{tag}", "execution_config": config}
    )
    response.raise_for_status()
    return str(response.json()["job_id"])


def run(stack: Stack, jobs: int) -> None:
    api = httpx.Client(
        base_url=stack.config.api_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    )
    idle = sample(stack.stack_id)
    peak = Sample(idle.total, idle.chromium, idle.browsers)
    most_browsers = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak, most_browsers
        while not stop.is_set():
            now = sample(stack.stack_id)
            most_browsers = max(most_browsers, now.browsers)
            if now.total > peak.total:
                peak = now
            peak.chromium = max(peak.chromium, now.chromium)
            stop.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    job_ids = [create(api) for _ in range(jobs)]
    ends = [wait_job(api, job, timeout=900) for job in job_ids]
    wall = time.monotonic() - started
    stop.set()
    watcher.join()
    assert all(j["status"] == JobStatus.COMPLETED for j in ends), [j["status"] for j in ends]
    mib = 2**20
    print(
        f"{jobs:>2} job(s), browser limit 2: completed in {wall:.0f} s; whole-system PSS idle "
        f"{idle.total / mib:.0f} MiB, peak {peak.total / mib:.0f} MiB, of it Chromium "
        f"{peak.chromium / mib:.0f} MiB (peak); most browsers alive at once: {most_browsers}",
        flush=True,
    )
    if jobs == 1:
        return
    durations: dict[str, list[float]] = {s: [] for s in BROWSER_STEPS}
    for job in ends:
        for step in job["steps"]:
            if step["step_id"] in durations and step["duration_ms"] is not None:
                durations[step["step_id"]].append(step["duration_ms"] / 1000)
    for step_id, values in durations.items():
        print(
            f"     {step_id:<26} median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4, 12])
    args = parser.parse_args()
    for jobs in args.jobs:
        with own_stack(REGJOBS_BROWSER_LIMIT="2", worker_limit=12) as stack:
            run(stack, jobs)


if __name__ == "__main__":
    main()
