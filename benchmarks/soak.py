"""Soak: many jobs at once on two workers, with faults from the matrix. Prints a report.

    .venv/bin/python -m benchmarks.soak [--jobs 50] [--mode endpoints|direct] [--seed N]
        [--database sqlite|postgresql] [--keep]

`--database postgresql` puts the job tables and the Prefect server on fresh PostgreSQL
databases on 127.0.0.1 (the production shape; made here and dropped at the end); the
default is the embedded SQLite of `make run`. `--keep` keeps the logs and databases.

Not a test: it runs for minutes. Each job gets its own account and restaurant and one of
these fates, drawn from the seed:
- clean: completes;
- transient faults (a 503, a 429 with Retry-After, a reset connection, a timeout) on some of
  its steps, fewer than the retries: completes;
- the account exists already (same password): completes with a warning;
- the account exists with another password: fails at account registration (the job's
  credentials do not open the existing account), its dependents skipped.
Transient faults are injected on the stand-in per step for the next calls, whichever job
makes them; the retries absorb them. The report: jobs completed/failed against what each
fate expects, side effects against the number each step should have had (duplicates must be
0), jobs not ended by the deadline (stuck, must be 0), and the peak memory (PSS) of the
whole system.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter

import httpx

from benchmarks.browser import sample as memory
from benchmarks.latency import KEY, own_stack
from deployments.demo import DEMO_CONFIG
from deployments.stack import Stack
from regjobs.catalogue import FINAL_JOB_STATUSES, STEP_IDS, JobStatus
from regjobs.db import LOCAL_POSTGRES_ADMIN_URL, scratch_postgres_database

PG_ADMIN_URL = os.environ.get("REGJOBS_PG_ADMIN_URL", LOCAL_POSTGRES_ADMIN_URL)

FATES = ("clean", "transient", "account exists", "bad credentials")
TRANSIENT = (
    {"mode": "status", "status": 503, "times": 1},
    {"mode": "status", "status": 429, "retry_after": 1, "times": 1},
    {"mode": "reset", "times": 1},
    {"mode": "timeout", "times": 1},
)
#: The steps a bad-credentials job performs before it fails (the rest never run).
BAD_CREDENTIALS_EFFECTS = ("code_generation", "onboarding_user", "image_upload")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--mode", choices=("endpoints", "direct"), default="endpoints")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--worker-limit",
        type=int,
        default=None,
        help="flow runs per worker at once (0: no limit; default REGJOBS_WORKER_LIMIT)",
    )
    parser.add_argument("--keep", action="store_true", help="keep logs and databases")
    args = parser.parse_args()
    with contextlib.ExitStack() as resources:
        env = {
            "REGJOBS_STEP_MODE": args.mode,
            "REGJOBS_RETRY_BASE_SECONDS": "0.5",
            "REGJOBS_HTTP_TIMEOUT_SECONDS": "3",
        }
        if args.database == "postgresql":
            env["DATABASE_URL"] = resources.enter_context(
                scratch_postgres_database(PG_ADMIN_URL, "regjobs_soak")
            )
            prefect_db = resources.enter_context(
                scratch_postgres_database(PG_ADMIN_URL, "prefect_soak")
            )
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db.replace("+psycopg2", "+asyncpg")
        stack = resources.enter_context(
            own_stack(keep=args.keep, worker_limit=args.worker_limit, **env)
        )
        stack.start_worker("worker2")
        limit = stack.config.worker_limit
        print(f"databases: {args.database}; flow runs per worker: {limit or 'no limit'}")
        soak(stack, args.jobs, args.mode, random.Random(args.seed))


def soak(stack: Stack, jobs: int, mode: str, rng: random.Random) -> None:
    api = httpx.Client(
        base_url=stack.config.api_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    )
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, memory(stack.stack_id).total)
            stop.wait(0.5)

    threading.Thread(target=sample, daemon=True).start()
    fates = [rng.choice(FATES) for _ in range(jobs)]
    expected_effects: Counter[str] = Counter()
    created: list[tuple[str, str]] = []
    create_seconds: list[float] = []
    create_timeouts = 0
    started = time.monotonic()
    # Accounts first (the stand-in's own calls must not meet the injected faults), then the
    # faults, then the jobs.
    emails = [f"soak-{uuid.uuid4().hex[:8]}@example.com" for _ in fates]
    password = DEMO_CONFIG["account"]["password"]
    for email, fate in zip(emails, fates, strict=True):
        if fate in ("account exists", "bad credentials"):
            other = password if fate == "account exists" else "another-password-123"
            standin.post(
                "/platform/api/v1/accounts", json={"email": email, "password": other, "phone": ""}
            ).raise_for_status()
            expected_effects["account_registration"] += 1  # this set-up call is one
        if fate == "bad credentials":
            expected_effects.update(BAD_CREDENTIALS_EFFECTS)
        else:
            expected_effects.update(
                s
                for s in STEP_IDS
                if not (fate == "account exists" and s == "account_registration")
            )
    for fate in fates:
        if fate == "transient":
            for step in rng.sample(STEP_IDS, 2):
                standin.post(
                    "/_control/faults", json={"step": step, **rng.choice(TRANSIENT)}
                ).raise_for_status()
    for n, (email, fate) in enumerate(zip(emails, fates, strict=True)):
        body = {
            "restaurant_id": f"soak-{n}",
            "execution_config": {
                **DEMO_CONFIG,
                "account": {**DEMO_CONFIG["account"], "email": email},
                "restaurant": {**DEMO_CONFIG["restaurant"], "name": f"Soak {email[5:13]}"},
                "onboarding": {**DEMO_CONFIG["onboarding"], "user_email": f"owner-{email}"},
            },
        }
        # As a frontend would: a create that times out is sent again with the same
        # Idempotency-Key, and answers with the job the first one made.
        key = {"Idempotency-Key": f"soak-{email}"}
        sent = time.monotonic()
        for attempt in range(5):
            try:
                response = api.post("/api/registration-jobs", json=body, headers=key)
                break
            except httpx.TimeoutException:
                if attempt == 4:
                    raise
                create_timeouts += 1
        response.raise_for_status()
        create_seconds.append(time.monotonic() - sent)
        created.append((response.json()["job_id"], fate))

    deadline = time.monotonic() + 60 + jobs * (20 if mode == "direct" else 5)
    ends: dict[str, str] = {}
    while time.monotonic() < deadline and len(ends) < len(created):
        for job_id, _ in created:
            if job_id not in ends:
                status = api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"]
                if status in FINAL_JOB_STATUSES:
                    ends[job_id] = status
        time.sleep(1)
    wall = time.monotonic() - started
    stop.set()

    expected = {
        job_id: JobStatus.FAILED if fate == "bad credentials" else JobStatus.COMPLETED
        for job_id, fate in created
    }
    as_expected = sum(1 for j, s in ends.items() if s == expected[j])
    stuck = len(created) - len(ends)
    actual = standin.get("/_control/effects").json()
    duplicated = sum(max(0, actual[s] - expected_effects[s]) for s in STEP_IDS)
    missing = sum(max(0, expected_effects[s] - actual[s]) for s in STEP_IDS)
    print(f"soak: {jobs} jobs, mode {mode}, 2 workers, fates {dict(Counter(fates))}")
    print(
        f"  ended in {wall:.0f} s: {dict(Counter(ends.values()))}; as expected {as_expected}/{jobs}"
    )
    print(f"  duplicated effects: {duplicated}; missing effects: {missing}; stuck jobs: {stuck}")
    print(
        f"  POST /api/registration-jobs: median {statistics.median(create_seconds):.2f} s, "
        f"max {max(create_seconds):.2f} s; {create_timeouts} timed out (30 s) and were sent "
        "again with their Idempotency-Key"
    )
    for step in STEP_IDS:
        if actual[step] != expected_effects[step]:
            print(f"  {step}: {actual[step]} effects, {expected_effects[step]} expected")
    for job_id, fate in created:
        if ends.get(job_id) != expected[job_id]:
            job = api.get(f"/api/registration-jobs/{job_id}").json()
            print(f"  unexpected: job {job_id} ({fate}) {job['status']}: {job['error_message']}")
    print(f"  peak PSS of the whole system: {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
