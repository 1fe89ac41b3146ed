"""How fast a job starts and how close it runs to its critical path. Prints figures.

    .venv/bin/python -m benchmarks.latency [--runs 20] [--path-runs 5] [--warm N]

Starts its own system (Prefect server on SQLite, worker, stand-in, API) on free ports in a
temporary folder, exactly as `make run` does, and stops it at the end. Steps run in
`endpoints` mode (one call each), so these are figures of the orchestration; browser steps
are measured by `benchmarks.browser`.
1. POST -> first step running: from sending the POST to the earliest step attempt's
   `started_at` (the ledger's clock and this one are the same machine's), over --runs jobs
   one after the other, with where each one's start went: POST answered -> flow run created
   in Prefect (the outbox row dispatched) -> the worker took it (the run's Pending state)
   -> Running -> the flow began the job (the ledger's `began_at`) -> first attempt.
2. Critical path: every stand-in call slowed to 1 s; the graph's longest chain is then
   5 s (account -> restaurant -> menu import -> option sets -> item tags, and image upload's
   two calls -> menu import -> ...). Reports job wall time (first step start to job end).
3. `/progress` latency while jobs poll it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text

from deployments.demo import DEMO_CONFIG
from deployments.stack import Stack, free_port
from deployments.stack_config import Production, StackConfig
from regjobs.catalogue import FINAL_JOB_STATUSES, STEP_IDS, STEPS, JobStatus

KEY = "rj_bench_" + uuid.uuid4().hex


def wait_job(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = api.get(f"/api/registration-jobs/{job_id}/progress").json()
        if progress["status"] in FINAL_JOB_STATUSES:
            return dict(api.get(f"/api/registration-jobs/{job_id}").json())
        time.sleep(0.05)
    raise TimeoutError(job_id)


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def create(api: httpx.Client) -> tuple[str, float]:
    """A job for a new restaurant of a new account (jobs at once must not share them); its
    id and when the POST was sent."""
    job_id, sent, _ = create_timed(api)
    return job_id, sent


def create_timed(api: httpx.Client) -> tuple[str, float, float]:
    """As `create`, and when the answer came."""
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
    answered = time.time()
    response.raise_for_status()
    return str(response.json()["job_id"]), sent, answered


#: The start of a job, phase by phase: (label, the timestamp that ends the phase).
PHASES = (
    ("POST answered", "answered"),
    ("flow run created (outbox dispatched)", "created"),
    ("worker took it (Pending)", "taken"),
    ("flow run Running", "flow_running"),
    ("job begun (ledger)", "began"),
    ("first step attempt started", "first_step"),
)


@dataclass
class Start:
    """The timestamps of one job's start (epoch seconds, one machine's clock)."""

    sent: float
    answered: float
    created: float
    taken: float
    flow_running: float
    began: float
    first_step: float

    @property
    def total(self) -> float:
        return self.first_step - self.sent

    def phases(self) -> list[float]:
        marks = [self.sent, *(getattr(self, name) for _, name in PHASES)]
        return [b - a for a, b in itertools.pairwise(marks)]


def job_database(stack: Stack) -> Engine:
    """The stack's job database, read directly (the API does not show run timestamps)."""
    url = stack.env().get("DATABASE_URL") or f"sqlite:///{stack.config.state_dir / 'regjobs.db'}"
    return create_engine(url)


def read_start(stack: Stack, db: Engine, job_id: str, sent: float, answered: float) -> Start:
    """Where one job's start went: the outbox row and its flow run (job database), the flow
    run's creation and state history (Prefect), the first step attempt (job database)."""
    with db.connect() as connection:
        flow_run_id, began = connection.execute(
            text(
                "SELECT flow_run_id, began_at FROM registration_job_runs WHERE job_id = :j "
                "ORDER BY generation LIMIT 1"
            ),
            {"j": job_id},
        ).one()
        first = connection.execute(
            text("SELECT min(started_at) FROM registration_step_attempts WHERE job_id = :j"),
            {"j": job_id},
        ).scalar_one()
    production = stack.config.production
    auth = tuple(production.prefect_auth.split(":", 1)) if production else None
    with httpx.Client(
        base_url=stack.config.prefect_api_url,
        auth=auth,  # type: ignore[arg-type]
        timeout=30,
    ) as prefect:
        run = prefect.get(f"/flow_runs/{flow_run_id}").json()
        states = prefect.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).json()
    at: dict[str, float] = {}
    for state in sorted(states, key=lambda s: s["timestamp"]):
        at.setdefault(state["type"], ts(state["timestamp"]))
    return Start(
        sent=sent,
        answered=answered,
        created=ts(run["created"]),
        taken=at["PENDING"],
        flow_running=at["RUNNING"],
        began=_epoch(began),
        first_step=_epoch(first),
    )


def _epoch(value: Any) -> float:
    """A database timestamp (naive UTC, or text on SQLite) as epoch seconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank: the ceil(q * n)-th smallest (p95 of 20 runs is
    the 19th)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def print_starts(starts: list[Start], label: str = "POST -> first step running") -> None:
    """Each run's breakdown, then p50 and p95 of the total and the median of each phase."""
    header = "  run  total  " + "  ".join(f"{i + 1:>5}" for i in range(len(PHASES)))
    print(f"{label}, per run (s); phases:")
    for i, (name, _) in enumerate(PHASES):
        print(f"    {i + 1}: -> {name}")
    print(header)
    for n, start in enumerate(starts, 1):
        cells = "  ".join(f"{v:5.2f}" for v in start.phases())
        print(f"  {n:3d}  {start.total:5.2f}  {cells}")
    totals = [s.total for s in starts]
    medians = [statistics.median(s.phases()[i] for s in starts) for i in range(len(PHASES))]
    print(
        f"{label}: p50 {quantile(totals, 0.5):.2f} s, p95 {quantile(totals, 0.95):.2f} s, "
        f"min {min(totals):.2f} s, max {max(totals):.2f} s (n={len(totals)})"
    )
    print("  median by phase: " + ", ".join(f"{i + 1}: {m:.2f}" for i, m in enumerate(medians)))


def measure_starts(stack: Stack, runs: int, pause: float = 0.5) -> list[Start]:
    """`runs` jobs one after the other (each to its end, then a pause so the worker is idle
    as it would be), and where each one's start went."""
    headers = {"Authorization": f"Bearer {KEY}"}
    api = httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=30)
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)
    db = job_database(stack)
    starts: list[Start] = []
    try:
        for _ in range(runs):
            standin.post("/_control/reset").raise_for_status()
            job_id, sent, answered = create_timed(api)
            job = wait_job(api, job_id)
            assert job["status"] == JobStatus.COMPLETED, job
            starts.append(read_start(stack, db, job_id, sent, answered))
            time.sleep(pause)
    finally:
        db.dispose()
        api.close()
        standin.close()
    return starts


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
    *,
    keep: bool = False,
    worker_limit: int | None = None,
    warm: int | None = None,
    production: Production | None = None,
    poll_seconds: float | None = None,
    **env: str,
) -> Iterator[Stack]:
    """A whole system on free ports in a temporary folder, started as `make run` does.
    With `keep`, the folder (logs, databases) stays after the end and its path is printed;
    `warm`: warm flow-run processes per worker (the setting's default if None; 0: none);
    `production`: the production shape instead of the embedded default."""
    tmp = tempfile.mkdtemp(prefix="regjobs-bench-")
    try:
        options: dict[str, Any] = {
            "worker_limit": worker_limit,
            "warm_processes": warm,
            "poll_seconds": poll_seconds,
        }
        config = StackConfig(
            state_dir=Path(tmp),
            api_port=free_port(),
            prefect_port=free_port(),
            standin_port=free_port(),
            prefect_ui=False,
            production=production,
            env={"REGJOBS_DEV_API_KEY": KEY, "REGJOBS_CDN_POLL_SECONDS": "0.2", **env},
            **{k: v for k, v in options.items() if v is not None},
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
    parser.add_argument("--runs", type=int, default=20, help="jobs for the start latency")
    parser.add_argument("--path-runs", type=int, default=5, help="jobs for the critical path")
    parser.add_argument("--warm", type=int, default=None, help="warm processes per worker")
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    args = parser.parse_args()
    with own_stack(keep=args.keep, warm=args.warm, REGJOBS_STEP_MODE="endpoints") as stack:
        run(stack, args.runs, args.path_runs)


def run(stack: Stack, runs: int, path_runs: int) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    api = httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=30)
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)

    print_starts(measure_starts(stack, runs))

    walls: list[float] = []
    paths: list[float] = []
    for _ in range(path_runs):
        standin.post("/_control/reset").raise_for_status()
        standin.post("/_control/config", json={"cdn_processing_seconds": 0}).raise_for_status()
        for step in STEP_IDS:
            standin.post(
                "/_control/faults", json={"step": step, "mode": "slow", "seconds": 1}
            ).raise_for_status()
        job_id, _ = create(api)
        job = wait_job(api, job_id)
        assert job["status"] == JobStatus.COMPLETED, job
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
