"""Browser steps: how long each takes, and the peak memory of a worker running three jobs
with the browser limit at 2. Prints figures.

    .venv/bin/python -m benchmarks.browser

Starts its own system (as `make run` does) on free ports in a temporary folder. Memory is
the sum of the resident set sizes of the worker and every process under it (flow-run
processes, Playwright drivers, Chromium), sampled every 0.2 s.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx

from benchmarks.latency import KEY, create, own_stack, wait_job
from deployments.stack import Stack
from regjobs.catalogue import STEPS, StepKind

BROWSER_STEPS = [s.id for s in STEPS if s.kind is StepKind.BROWSER]
PAGE = 4096


def tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = pages * PAGE
    members = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in members)


def main() -> None:
    with own_stack(REGJOBS_BROWSER_LIMIT="2") as stack:
        run(stack)


def run(stack: Stack) -> None:
    api = httpx.Client(
        base_url=stack.config.api_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    )
    worker = stack.children["worker"].process.pid
    idle = tree_rss(worker)
    peak = idle
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(worker))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    jobs = [create(api)[0] for _ in range(3)]
    ends = [wait_job(api, job, timeout=300) for job in jobs]
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    assert all(j["status"] == "completed" for j in ends), [j["status"] for j in ends]
    durations: dict[str, list[float]] = {s: [] for s in BROWSER_STEPS}
    for job in ends:
        for step in job["steps"]:
            if step["step_id"] in durations and step["duration_ms"] is not None:
                durations[step["step_id"]].append(step["duration_ms"] / 1000)
    print(f"three jobs, browser limit 2: all completed in {wall:.1f} s")
    for step_id, values in durations.items():
        print(
            f"  {step_id:<26} median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )
    print(f"worker tree RSS: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
