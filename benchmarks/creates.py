"""Creates: a burst of concurrent creates of distinct restaurants, then every job to its end.
Prints figures.

    .venv/bin/python -m benchmarks.creates [--jobs 50 200] [--database sqlite postgresql]

For each database and burst size, a fresh system started as `make run` does (`postgresql`:
the job tables and the Prefect server on fresh PostgreSQL databases on 127.0.0.1, made here
and dropped at the end), steps in `endpoints` mode. Reports the creates' status codes and
latency (p50, p95, max), how many jobs completed, and the makespan (first create sent to
last job ended). `--bursts N`: N bursts on one system with its worker stopped, the creates'
latency alone (`--with-worker`: the worker left running, so a burst meets the flow runs of
the bursts before it). `--client httpx`: the burst sent by `httpx.AsyncClient` instead of a minimal
client on connections opened beforehand; on two cores its own CPU is most of what it
measures (against an app that answers at once, 200 such creates took p95 810-905 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from benchmarks import load, machine
from benchmarks.latency import KEY, own_stack
from deployments.demo import DEMO_CONFIG
from deployments.stack import Stack
from regjobs.catalogue import FINAL_JOB_STATUSES, JobStatus
from regjobs.db import LOCAL_POSTGRES_ADMIN_URL, scratch_postgres_database

PG_ADMIN_URL = os.environ.get("REGJOBS_PG_ADMIN_URL", LOCAL_POSTGRES_ADMIN_URL)
AUTH = {"Authorization": f"Bearer {KEY}"}


def body(tag: str) -> dict[str, Any]:
    """A job of its own account, restaurant and onboarding user."""
    return {
        "restaurant_id": f"burst-{tag}",
        "execution_config": {
            **DEMO_CONFIG,
            "account": {**DEMO_CONFIG["account"], "email": f"burst-{tag}@example.com"},
            "restaurant": {**DEMO_CONFIG["restaurant"], "name": f"Burst {tag}"},
            "onboarding": {**DEMO_CONFIG["onboarding"], "user_email": f"owner-{tag}@example.com"},
        },
    }


async def burst(base_url: str, jobs: int) -> tuple[list[int], list[float], list[str]]:
    """`jobs` creates sent at once, each on its own (already open) connection."""
    host, port = base_url.removeprefix("http://").split(":")
    connections = [load.Connection(host, int(port), timeout=120) for _ in range(jobs)]
    await asyncio.gather(*(c.open() for c in connections))
    headers = {**AUTH, "Content-Type": "application/json"}
    payloads = [json.dumps(body(uuid.uuid4().hex[:10])).encode() for _ in range(jobs)]

    async def one(connection: load.Connection, payload: bytes) -> tuple[int, float, str]:
        sent = time.perf_counter()
        status, _, answer = await connection.request(
            "POST", "/api/registration-jobs", headers, payload
        )
        took = (time.perf_counter() - sent) * 1000
        connection.close()
        return status, took, json.loads(answer).get("job_id", "") if status < 300 else ""

    answers = await asyncio.gather(*(one(c, p) for c, p in zip(connections, payloads, strict=True)))
    return [a[0] for a in answers], [a[1] for a in answers], [a[2] for a in answers if a[2]]


async def httpx_burst(base_url: str, jobs: int) -> tuple[list[int], list[float], list[str]]:
    """The same burst as an ordinary client sends it: `httpx.AsyncClient`, each create on a
    connection it opens when the create is sent. Its own CPU (some ms a request, on the
    same two cores) is in the latency."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {**AUTH, "Content-Type": "application/json"}
    payloads = [json.dumps(body(uuid.uuid4().hex[:10])).encode() for _ in range(jobs)]
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def one(payload: bytes) -> tuple[int, float, str]:
            sent = time.perf_counter()
            answer = await client.post("/api/registration-jobs", content=payload, headers=headers)
            took = (time.perf_counter() - sent) * 1000
            created = answer.json().get("job_id", "") if answer.status_code < 300 else ""
            return answer.status_code, took, created

        answers = await asyncio.gather(*(one(p) for p in payloads))
    return [a[0] for a in answers], [a[1] for a in answers], [a[2] for a in answers if a[2]]


BURSTS = {"raw": burst, "httpx": httpx_burst}


def ends(stack: Stack, job_ids: list[str], timeout: float) -> Counter[str]:
    """Wait for every job to end (the list endpoint, a page at a time); their statuses."""
    wanted = set(job_ids)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.config.api_url, headers=AUTH, timeout=30) as api:
        while True:
            statuses: dict[str, str] = {}
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                page = api.get("/api/registration-jobs", params=params).json()
                statuses.update({j["id"]: j["status"] for j in page["jobs"] if j["id"] in wanted})
                cursor = page["next_cursor"]
                if not cursor:
                    break
            if (
                all(statuses.get(j) in FINAL_JOB_STATUSES for j in wanted)
                or time.monotonic() > deadline
            ):
                return Counter(statuses.get(j, "missing") for j in wanted)
            time.sleep(1)


def explain_failures(stack: Stack, job_ids: list[str]) -> None:
    """A line for each job that did not complete: what stopped it."""
    with httpx.Client(base_url=stack.config.api_url, headers=AUTH, timeout=30) as api:
        for job_id in job_ids:
            job = api.get(f"/api/registration-jobs/{job_id}").json()
            if job["status"] != JobStatus.COMPLETED:
                step: dict[str, Any] = next(
                    (s for s in job["steps"] if s["step_id"] == job["failed_step"]), {}
                )
                print(
                    f"  job {job_id} {job['status']}: {job['error_message']} "
                    f"(step {job['failed_step']}: {step.get('error_message')})"
                )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def database_env(resources: contextlib.ExitStack, database: str) -> dict[str, str]:
    """The environment of a system on `database`: nothing for SQLite (`make run`'s own);
    for `postgresql`, the job tables and the Prefect server on fresh PostgreSQL databases on
    127.0.0.1, dropped when `resources` closes."""
    if database != "postgresql":
        return {}
    jobs = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "regjobs_bench"))
    prefect = resources.enter_context(scratch_postgres_database(PG_ADMIN_URL, "prefect_bench"))
    return {
        "DATABASE_URL": jobs,
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect.replace("+psycopg2", "+asyncpg"),
    }


def run(
    database: str,
    jobs: int,
    timeout: float,
    keep: bool = False,
    bursts: int = 0,
    client: str = "raw",
    with_worker: bool = False,
) -> None:
    with contextlib.ExitStack() as resources:
        env: dict[str, Any] = {
            "REGJOBS_STEP_MODE": "endpoints",
            **database_env(resources, database),
        }
        stack = resources.enter_context(own_stack(keep=keep, worker_limit=None, **env))
        if bursts:
            repeat_bursts(stack, database, jobs, bursts, client, with_worker)
            return
        started = time.monotonic()
        codes, latencies, job_ids = asyncio.run(BURSTS[client](stack.config.api_url, jobs))
        statuses = ends(stack, job_ids, timeout)
        makespan = time.monotonic() - started
        explain_failures(stack, job_ids)
        print(
            f"{database}, {jobs} concurrent creates ({client} client): "
            f"status codes {dict(Counter(codes))}; "
            f"create latency p50 {percentile(latencies, 50):.0f} ms, "
            f"p95 {percentile(latencies, 95):.0f} ms, max {max(latencies):.0f} ms; "
            f"jobs {dict(statuses)}; makespan {makespan:.0f} s",
            flush=True,
        )


def repeat_bursts(
    stack: Stack, database: str, jobs: int, bursts: int, client: str, with_worker: bool
) -> None:
    """`bursts` bursts on one system, with its worker stopped (the jobs wait in Prefect, so
    no flow run takes CPU): the creates' latency alone, burst after burst. `with_worker`:
    the worker runs, and the flow runs of one burst start while the next arrives."""
    if not with_worker:
        stack.stop_child("worker")
    p95s = []
    for n in range(bursts):
        codes, latencies, _ = asyncio.run(BURSTS[client](stack.config.api_url, jobs))
        p95s.append(percentile(latencies, 95))
        print(
            f"{database}, burst {n + 1} of {jobs} creates: status codes {dict(Counter(codes))}; "
            f"p50 {percentile(latencies, 50):.0f} ms, p95 {p95s[-1]:.0f} ms, "
            f"max {max(latencies):.0f} ms",
            flush=True,
        )
        time.sleep(8)  # the dispatcher hands the burst's runs to Prefect meanwhile
    print(
        f"{database}, {bursts} bursts of {jobs}: p95 median {percentile(p95s, 50):.0f} ms, "
        f"min {min(p95s):.0f} ms, max {max(p95s):.0f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 200])
    parser.add_argument(
        "--database", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for jobs to end")
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    parser.add_argument(
        "--bursts", type=int, default=0, help="N bursts on one system, worker stopped, no run"
    )
    parser.add_argument(
        "--with-worker", action="store_true", help="with --bursts: leave the worker running"
    )
    parser.add_argument(
        "--client",
        choices=sorted(BURSTS),
        default="raw",
        help="raw: connections opened first, a minimal HTTP client; httpx: httpx.AsyncClient",
    )
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    for database in args.database:
        for jobs in args.jobs:
            run(database, jobs, args.timeout, args.keep, args.bursts, args.client, args.with_worker)
    print(machine.describe(), flush=True)


if __name__ == "__main__":
    main()
