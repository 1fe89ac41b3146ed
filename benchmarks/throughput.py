"""Start and throughput: how fast one job starts, cold and warm, and how long 200 jobs at once
take on the embedded default and on the production shape. Prints figures.

    .venv/bin/python -m benchmarks.throughput [--runs 20] [--jobs 200] [--path-runs 5]
        [--parts compare starts poll embedded production] [--keep]

0. **compare** (the default): the registration flow against a bare Prefect baseline
   (flows/baseline.py: twelve no-op tasks in the same graph, deployed from
   benchmarks/baseline.yaml on the same work pool with the same command), side by side on
   one production-shape stack, so the same workers, warm processes, Prefect server, services
   and PostgreSQL run both: start p50/p95 (create -> first step running, --runs one after the
   other, warm), wall time over the 5-s critical path with 1-s steps (--path-runs), and a
   burst of --jobs of each (makespan; CPU seconds per job by part). The registration
   flow's jobs are created through its API (endpoints mode, the stand-in answering at once);
   the baseline's flow runs through Prefect's API, as the dispatcher makes them.

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

The production shape is `deployments.stack_config.Production` (what `python -m deployments.launcher
--production` starts): fresh PostgreSQL databases made here and dropped at the end, and an
empty Redis database (the first of 15, 14, ... with no keys; flushed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import baseline, machine
from benchmarks.browser import pss
from benchmarks.creates import AUTH, PG_ADMIN_URL, burst, ends, explain_failures
from benchmarks.latency import (
    create,
    measure_starts,
    own_stack,
    print_starts,
    quantile,
    ts,
    wait_job,
)
from deployments.pids import marked_processes
from deployments.prefect_server import new_auth_string
from deployments.stack import Stack
from deployments.stack_config import Production
from regjobs.catalogue import STEP_IDS, JobStatus, step
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


def production_starts(runs: int, keep: bool, prefect_workers: int) -> None:
    """Where a start goes in the production shape, warm (the comparison's shape)."""
    print("\n== starts, production shape, warm ==", flush=True)
    with production_stack(keep, prefect_workers) as stack:
        measure_starts(stack, 2)  # uncounted, as in the comparison
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


@contextlib.contextmanager
def production_stack(keep: bool, prefect_workers: int) -> Iterator[Stack]:
    """The production shape on fresh PostgreSQL databases and an empty Redis database."""
    with contextlib.ExitStack() as resources:
        jobs_db = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "rj_jobs"))
        prefect_db = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "rj_prefect"))
        shape = Production(
            prefect_database_url=prefect_db.replace("+psycopg2", "+asyncpg"),
            database_url=jobs_db,
            redis_url=resources.enter_context(empty_redis_db()),
            prefect_workers=prefect_workers,
            prefect_auth=new_auth_string(),
        )
        yield resources.enter_context(
            own_stack(keep=keep, production=shape, REGJOBS_STEP_MODE="endpoints")
        )


def production(jobs: int, timeout: float, keep: bool, prefect_workers: int) -> None:
    print(
        f"\n== {jobs} jobs at once, production shape (PostgreSQL, Redis, Prefect services "
        f"apart, {prefect_workers} Prefect webserver process(es), 2 API processes, "
        "2 workers) ==",
        flush=True,
    )
    with production_stack(keep, prefect_workers) as stack:
        many(stack, jobs, timeout)


# --------------------------------------------------------------------- compare


@dataclass
class Figures:
    """One flow's side of the comparison."""

    starts: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    makespan: float = 0.0
    ended: dict[str, int] = field(default_factory=dict)


def registration_starts(stack: Stack, runs: int, pause: float = 0.5) -> list[float]:
    """POST -> the job's first step attempt running (the API's `started_at`), one job after
    the other."""
    totals: list[float] = []
    with contextlib.ExitStack() as clients:
        api = clients.enter_context(httpx.Client(base_url=stack.config.api_url, headers=AUTH))
        standin = clients.enter_context(httpx.Client(base_url=stack.config.standin_url))
        for _ in range(runs):
            standin.post("/_control/reset").raise_for_status()
            job_id, sent = create(api)
            job = wait_job(api, job_id)
            assert job["status"] == JobStatus.COMPLETED, job["status"]
            totals.append(min(ts(s["started_at"]) for s in job["steps"] if s["started_at"]) - sent)
            time.sleep(pause)
    return totals


def wall_parts(job: dict[str, Any]) -> dict[str, float]:
    """Where a job's time over its steps' own went, in seconds: the waits from a step's last
    need ending to the step starting (summed along the chain that ends last), the steps'
    time over their calls' (each call 1 s, image upload's two), and its last step's end to
    the job's."""
    steps = {s["step_id"]: s for s in job["steps"] if s["started_at"] and s["completed_at"]}
    calls = {"image_upload": 2}
    over: dict[str, float] = {}
    gap: dict[str, float] = {}
    for sid, s in steps.items():
        began, ended = ts(s["started_at"]), ts(s["completed_at"])
        over[sid] = ended - began - calls.get(sid, 1)
        ended_needs = [ts(steps[n]["completed_at"]) for n in step(sid).needs if n in steps]
        gap[sid] = began - max(ended_needs) if ended_needs else 0.0
    last = max(steps, key=lambda s: ts(steps[s]["completed_at"]))
    chain: list[str] = []
    sid = last
    while True:
        chain.append(sid)
        needs = [n for n in step(sid).needs if n in steps]
        if not needs:
            break
        sid = max(needs, key=lambda n: ts(steps[n]["completed_at"]))
    return {
        "waits between steps": sum(gap[s] for s in chain),
        "steps over their calls": sum(over[s] for s in chain),
        "last step end -> job end": ts(job["completed_at"]) - ts(steps[last]["completed_at"]),
        "steps on the chain": len(chain),
    }


def registration_walls(stack: Stack, runs: int) -> list[float]:
    """First step start -> job end, every stand-in call slowed to 1 s (benchmarks.latency);
    prints where the time over the critical path went (`wall_parts`, medians)."""
    found: list[float] = []
    parts: list[dict[str, float]] = []
    with contextlib.ExitStack() as clients:
        api = clients.enter_context(httpx.Client(base_url=stack.config.api_url, headers=AUTH))
        standin = clients.enter_context(httpx.Client(base_url=stack.config.standin_url))
        for _ in range(runs):
            standin.post("/_control/reset").raise_for_status()
            standin.post("/_control/config", json={"cdn_processing_seconds": 0})
            for step in STEP_IDS:
                standin.post("/_control/faults", json={"step": step, "mode": "slow", "seconds": 1})
            job_id, _ = create(api)
            job = wait_job(api, job_id)
            assert job["status"] == JobStatus.COMPLETED, job["status"]
            first = min(ts(s["started_at"]) for s in job["steps"] if s["started_at"])
            found.append(ts(job["completed_at"]) - first)
            parts.append(wall_parts(job))
        standin.post("/_control/reset").raise_for_status()
    if parts:
        medians = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        print(
            "registration walls, medians: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()),
            flush=True,
        )
    return found


#: Prefect's parts that go on working after a burst's last job ended: its services persist
#: the burst's events and task-run states from their queue, the server answers them.
SETTLING = ("prefect server", "prefect services")


def settle(stack: Stack, rate: float = 0.3, bound: float = 120.0) -> float:
    """Wait until Prefect's server and services together use less than `rate` CPU s a
    second (over 1-s windows, twice in a row: the backlog of what came before is done), at
    most `bound` seconds; how long it took."""

    def used() -> float:
        return sum(cpu_by_part(stack).get(p, 0.0) for p in SETTLING)

    started = time.monotonic()
    last, calm = used(), 0
    while calm < 2 and time.monotonic() - started < bound:
        time.sleep(1.0)
        now = used()
        calm = calm + 1 if now - last < rate else 0
        last = now
    return time.monotonic() - started


def measured_burst(stack: Stack, run: Callable[[], dict[str, int]]) -> Figures:
    """CPU by part and makespan of `run` (a burst, every job to its end). The CPU is
    counted from a settled system until the system settles again after the last job ended
    (the work its jobs left to Prefect's services is the burst's, not the next one's);
    the makespan ends with the last job."""
    settle(stack)
    before = cpu_by_part(stack)
    started = time.monotonic()
    ended = run()
    makespan = time.monotonic() - started
    tail = settle(stack)
    after = cpu_by_part(stack)
    print(f"  (settled {tail:.0f} s after the last job ended)", flush=True)
    cpu = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return Figures(cpu=cpu, makespan=makespan, ended=ended)


def registration_burst(stack: Stack, jobs: int, timeout: float) -> dict[str, int]:
    httpx.post(f"{stack.config.standin_url}/_control/reset").raise_for_status()
    codes, _, job_ids = asyncio.run(burst(stack.config.api_url, jobs))
    statuses = ends(stack, job_ids, timeout)
    explain_failures(stack, job_ids)
    refused = jobs - len(job_ids)
    return {**dict(statuses), **({f"not created ({Counter(codes)})": refused} if refused else {})}


#: Nominal critical path with 1-s steps: account -> restaurant -> menu import -> option sets
#: -> item tags (and image upload's two calls -> menu import -> ...).
CRITICAL_PATH = 5.0


def print_side_by_side(jobs: int, sides: dict[str, Figures]) -> None:
    reg, base = sides["registration"], sides["baseline"]
    print("\n== side by side (registration flow | bare Prefect baseline | ratio) ==")

    def row(label: str, a: float, b: float, unit: str = "") -> None:
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"  {label:<38} {a:8.2f}{unit} | {b:8.2f}{unit} | {ratio}")

    for name, figures in sides.items():
        print(f"  {name} ended: {figures.ended}")
    q = {"p50": 0.5, "p95": 0.95} if reg.starts and base.starts else {}
    for label, at in q.items():
        row(
            f"start {label} (create -> first step running)",
            quantile(reg.starts, at),
            quantile(base.starts, at),
            " s",
        )
    if reg.walls and base.walls:
        row(
            "wall / critical path (1-s steps), median",
            statistics.median(reg.walls) / CRITICAL_PATH,
            statistics.median(base.walls) / CRITICAL_PATH,
        )
    row(f"makespan of {jobs}", reg.makespan, base.makespan, " s")
    total_reg, total_base = sum(reg.cpu.values()), sum(base.cpu.values())
    row("CPU s per job, total", total_reg / jobs, total_base / jobs)
    for part in sorted({*reg.cpu, *base.cpu}, key=lambda k: -reg.cpu.get(k, 0.0)):
        row(f"  {part}", reg.cpu.get(part, 0.0) / jobs, base.cpu.get(part, 0.0) / jobs)
    print(
        f"  (starts n={len(reg.starts)}/{len(base.starts)} warm; walls n={len(reg.walls)}/"
        f"{len(base.walls)}; critical path {CRITICAL_PATH:.0f} s)",
        flush=True,
    )


def compare(args: argparse.Namespace) -> None:
    """The registration flow and the bare baseline (flows/baseline.py) on one production-shape
    stack, the same workers, warm processes, Prefect server and databases: starts, walls,
    then a burst of each."""
    print(
        f"\n== registration flow against the bare Prefect baseline, production shape "
        f"({args.jobs} jobs, {args.runs} starts, {args.path_runs} walls) ==",
        flush=True,
    )
    with production_stack(args.keep, args.prefect_workers) as stack:
        baseline.deploy(stack)
        sides = {"registration": Figures(), "baseline": Figures()}
        if args.runs:  # warm both up (not counted)
            registration_starts(stack, 2)
            baseline.starts(stack, 2)
        sides["registration"].starts = registration_starts(stack, args.runs)
        sides["baseline"].starts = baseline.starts(stack, args.runs)
        sides["registration"].walls = registration_walls(stack, args.path_runs)
        sides["baseline"].walls = baseline.walls(stack, args.path_runs)
        for name, run in (
            ("registration", lambda: registration_burst(stack, args.jobs, args.timeout)),
            ("baseline", lambda: baseline.burst(stack, args.jobs, args.timeout)),
        ):
            measured = measured_burst(stack, run)
            measured.starts, measured.walls = sides[name].starts, sides[name].walls
            sides[name] = measured
            print(f"{name}: {args.jobs} jobs in {measured.makespan:.1f} s", flush=True)
        print_side_by_side(args.jobs, sides)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20, help="jobs for the start latency")
    parser.add_argument("--jobs", type=int, default=200, help="jobs at once")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("compare", "starts", "production-starts", "poll", "embedded", "production"),
        default=["compare"],
    )
    parser.add_argument("--path-runs", type=int, default=5, help="compare: walls per flow")
    parser.add_argument("--poll-window", type=float, default=60, help="seconds per interval")
    parser.add_argument("--prefect-workers", type=int, default=1, help="production shape")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for jobs to end")
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    if "compare" in args.parts:
        compare(args)
    if "starts" in args.parts:
        starts(args.runs, args.keep)
    if "production-starts" in args.parts:
        production_starts(args.runs, args.keep, args.prefect_workers)
    if "poll" in args.parts:
        poll_cost(args.poll_window, args.keep)
    if "embedded" in args.parts:
        embedded(args.jobs, args.timeout, args.keep)
    if "production" in args.parts:
        production(args.jobs, args.timeout, args.keep, args.prefect_workers)


if __name__ == "__main__":
    main()
