"""Start and throughput: how fast one job starts, cold and warm, and how long 200 jobs at once
take on the embedded default and on the production shape. Prints figures.

    .venv/bin/python -m benchmarks.throughput [--runs 20] [--jobs 200]
        [--parts starts poll embedded production] [--keep]

1. **starts** (embedded default): POST -> first step running over --runs jobs one after the
   other (p50, p95, and where each start went: `benchmarks.latency`), cold (no warm
   processes: each flow run a new interpreter, as Prefect's process worker does) and warm.
2. **poll**: the Prefect server's CPU seconds per minute with the system idle, the worker
   polling every 1, 0.25 and 0.1 s (what a shorter poll costs).
3. **embedded** / **production**: --jobs concurrent creates of distinct restaurants
   (endpoints mode, the stand-in answering at once), then every job to its end. Reports the
   makespan (first create sent to last job ended), jobs per second, the jobs' statuses, the
   stand-in's side effects against one per step per job (exactly once), the CPU seconds per
   job of each part of the system (the Prefect server, its services, the workers with their
   flow-run and warm processes, the API, the stand-in), summed over each part's process
   tree from /proc, and of the machine's PostgreSQL and Redis (all their clients'), and the
   peak PSS of the whole system (every process of the stack,
   sampled each second; PostgreSQL and Redis not included).

The production shape is `deployments.stack.Production` (what `python -m deployments.launcher
--production` starts): fresh PostgreSQL databases made here and dropped at the end, and an
empty Redis database (the first of 15, 14, ... with no keys; flushed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.browser import pss
from benchmarks.creates import PG_ADMIN_URL, burst, ends, explain_failures
from benchmarks.latency import measure_starts, own_stack, print_starts
from deployments.stack import Production, Stack, marked_processes
from regjobs.catalogue import STEP_IDS
from regjobs.db import scratch_postgres_database

TICK = os.sysconf("SC_CLK_TCK")
#: Processes of the machine's own services, by name: counted as parts too.
SERVICES = {"postgres": "postgresql (machine)", "redis-server": "redis (machine)"}


# ------------------------------------------------------------------- processes


def _stat(pid: int) -> tuple[int, float] | None:
    """A process's parent and its CPU seconds, its own and its reaped children's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # (after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15))
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICK


def part_of(name: str) -> str:
    """The part of the system a child of the stack belongs to."""
    if name.startswith("worker"):
        return "workers"
    if name == "prefect":
        return "prefect server"
    if name == "prefect-services":
        return "prefect services"
    return name


def cpu_by_part(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each part of the stack: every live process of it (the marker),
    own and reaped children's time, assigned to the child of the stack it descends from."""
    leaders = {child.process.pid: part_of(name) for name, child in stack.children.items()}
    pids = {*marked_processes(stack.stack_id), *leaders}
    stats = {pid: s for pid in pids if (s := _stat(pid))}
    totals: dict[str, float] = {}
    for pid, (_, seconds) in stats.items():
        at, seen = pid, 0
        while at not in leaders and at in stats and seen < 50:
            at, seen = stats[at][0], seen + 1
        part = leaders.get(at, "other")
        totals[part] = totals.get(part, 0.0) + seconds
    # The machine's shared services (every client's share, not only this stack's).
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        service = SERVICES.get(comm)
        if service and (found := _stat(int(entry.name))):
            totals[service] = totals.get(service, 0.0) + found[1]
    return totals


@dataclass
class PeakMemory:
    """The whole system's PSS, sampled every `every` seconds in a thread."""

    stack: Stack
    every: float = 1.0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> PeakMemory:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(pss(p) for p in marked_processes(self.stack.stack_id)))
            self._stop.wait(self.every)


# ---------------------------------------------------------------------- starts


def starts(runs: int, keep: bool) -> None:
    for label, warm in (("cold (no warm processes)", 0), ("warm", None)):
        print(f"\n== starts, embedded default, {label} ==", flush=True)
        with own_stack(keep=keep, warm=warm, REGJOBS_STEP_MODE="endpoints") as stack:
            print_starts(measure_starts(stack, runs))


# ------------------------------------------------------------------ poll cost


def poll_cost(window: float, keep: bool) -> None:
    """What the worker's poll costs the Prefect server: its CPU seconds per minute with
    the system idle (one worker, no jobs), at each poll interval."""
    print(f"\n== idle Prefect server CPU by worker poll interval ({window:.0f} s each) ==")
    for seconds in (1.0, 0.25, 0.1):
        with own_stack(keep=keep, poll_seconds=seconds, REGJOBS_STEP_MODE="endpoints") as stack:
            time.sleep(10)  # start-up settles
            before = cpu_by_part(stack)
            time.sleep(window)
            after = cpu_by_part(stack)
        used = {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 60 / window for k in after}
        print(
            f"poll every {seconds:g} s: Prefect server {used.get('prefect server', 0):.1f} CPU "
            f"s/min, worker {used.get('workers', 0):.1f} CPU s/min",
            flush=True,
        )


# ---------------------------------------------------------------------- bursts


def many(stack: Stack, jobs: int, timeout: float) -> None:
    """`jobs` concurrent creates, every job to its end; the figures."""
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)
    standin.post("/_control/reset").raise_for_status()
    time.sleep(2)  # let the start-up settle before measuring CPU
    cpu_before = cpu_by_part(stack)
    with PeakMemory(stack) as memory:
        started = time.monotonic()
        codes, latencies, job_ids = asyncio.run(burst(stack.config.api_url, jobs))
        statuses = ends(stack, job_ids, timeout)
        makespan = time.monotonic() - started
    cpu_after = cpu_by_part(stack)
    explain_failures(stack, job_ids)
    effects = standin.get("/_control/effects").json()
    standin.close()
    wrong = {s: effects.get(s, 0) for s in STEP_IDS if effects.get(s, 0) != jobs}
    latencies.sort()
    print(
        f"{jobs} concurrent creates: status codes {dict(Counter(codes))}; create p50 "
        f"{latencies[len(latencies) // 2]:.0f} ms, max {latencies[-1]:.0f} ms"
    )
    print(f"jobs: {dict(statuses)}; makespan {makespan:.1f} s; {jobs / makespan:.2f} jobs/s")
    print(
        "effects: every step exactly once per job"
        if not wrong
        else f"effects NOT once per job ({jobs} expected): {wrong}"
    )
    used = {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after}
    total = sum(used.values())
    print(
        f"CPU seconds per job: total {total / jobs:.2f} ("
        + ", ".join(f"{k} {v / jobs:.2f}" for k, v in sorted(used.items(), key=lambda i: -i[1]))
        + f"); {total / makespan:.2f} cores busy on average"
    )
    print(f"peak PSS of the whole system: {memory.peak / 2**20:.0f} MiB", flush=True)


def embedded(jobs: int, timeout: float, keep: bool) -> None:
    print(f"\n== {jobs} jobs at once, embedded default (SQLite, one worker) ==", flush=True)
    with own_stack(keep=keep, REGJOBS_STEP_MODE="endpoints") as stack:
        many(stack, jobs, timeout)


@contextlib.contextmanager
def empty_redis_db() -> Iterator[str]:
    """A Redis database with no keys on the local server (tried from 15 down), flushed at
    the end."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0:
            try:
                yield f"redis://127.0.0.1:6379/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no empty Redis database on 127.0.0.1:6379")


def production(jobs: int, timeout: float, keep: bool, prefect_workers: int) -> None:
    print(
        f"\n== {jobs} jobs at once, production shape (PostgreSQL, Redis, Prefect services "
        f"apart, {prefect_workers} Prefect webserver process(es), 2 API processes, "
        "2 workers) ==",
        flush=True,
    )
    with contextlib.ExitStack() as resources:
        jobs_db = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "rj_jobs"))
        prefect_db = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "rj_prefect"))
        shape = Production(
            prefect_database_url=prefect_db.replace("+psycopg2", "+asyncpg"),
            database_url=jobs_db,
            redis_url=resources.enter_context(empty_redis_db()),
            prefect_workers=prefect_workers,
        )
        stack = resources.enter_context(
            own_stack(keep=keep, production=shape, REGJOBS_STEP_MODE="endpoints")
        )
        many(stack, jobs, timeout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20, help="jobs for the start latency")
    parser.add_argument("--jobs", type=int, default=200, help="jobs at once")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("starts", "poll", "embedded", "production"),
        default=["starts", "poll", "embedded", "production"],
    )
    parser.add_argument("--poll-window", type=float, default=60, help="seconds per interval")
    parser.add_argument("--prefect-workers", type=int, default=1, help="production shape")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for jobs to end")
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    args = parser.parse_args()
    if "starts" in args.parts:
        starts(args.runs, args.keep)
    if "poll" in args.parts:
        poll_cost(args.poll_window, args.keep)
    if "embedded" in args.parts:
        embedded(args.jobs, args.timeout, args.keep)
    if "production" in args.parts:
        production(args.jobs, args.timeout, args.keep, args.prefect_workers)


if __name__ == "__main__":
    main()
