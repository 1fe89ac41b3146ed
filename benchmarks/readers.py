"""Readers: how the API holds up under pollers and event-stream subscribers. Prints figures.

    .venv/bin/python -m benchmarks.readers [--seconds 10]

Starts its own system as `make run` does (Prefect server and job database on SQLite, a
worker, the stand-in, the API) on free ports in a temporary folder, and stops it at the end.
Jobs run in `endpoints` mode with every stand-in call slowed, so the polled job is running
(changing) while it is polled.
1. 100 closed-loop pollers of one running job's `/progress` for --seconds;
2. the same, each poller sending `If-None-Match` with the ETag it last got;
3. 300 browser tabs polling `/progress` every 2 s (open loop) for 2 x --seconds;
4. 200 Server-Sent Events subscribers of 10 running jobs: events delivered, every stream
   complete and in order, lag from the ledger's write to the subscriber;
5. (1) again with the Prefect server stopped (SIGSTOP) for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from benchmarks import load
from benchmarks.latency import KEY, create, own_stack
from deployments.stack import Stack
from regjobs.catalogue import FINAL_STEP_STATUSES, STEP_IDS, JobStatus

AUTH = {"Authorization": f"Bearer {KEY}"}


def slow_everything(standin: httpx.Client, seconds: float) -> None:
    standin.post("/_control/reset").raise_for_status()
    standin.post("/_control/config", json={"cdn_processing_seconds": 0}).raise_for_status()
    for step in STEP_IDS:
        standin.post(
            "/_control/faults", json={"step": step, "mode": "slow", "seconds": seconds}
        ).raise_for_status()


def wait_running(api: httpx.Client, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            api.get(f"/api/registration-jobs/{job_id}/progress").json()["status"]
            == JobStatus.IN_PROGRESS
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not start")


def polling(stack: Stack, job_id: str, seconds: float, *, conditional: bool) -> str:
    path = f"/api/registration-jobs/{job_id}/progress"

    def headers(_: int, last: Mapping[str, str]) -> Mapping[str, str]:
        if conditional and "etag" in last:
            return {**AUTH, "If-None-Match": last["etag"]}
        return AUTH

    tally = load.run(
        load.closed_loop("127.0.0.1", stack.config.api_port, 100, seconds, lambda _: path, headers)
    )
    return tally.line(seconds)


def tabs(stack: Stack, job_id: str, seconds: float) -> str:
    path = f"/api/registration-jobs/{job_id}/progress"
    tally = load.run(
        load.open_loop(
            "127.0.0.1", stack.config.api_port, 300, 2.0, seconds, lambda _: path, lambda *_: AUTH
        )
    )
    return tally.line(seconds)


def when(event: dict[str, Any]) -> float | None:
    """When the ledger wrote a step event: its start, or its end."""
    stamp = (
        event.get("completed_at")
        if event.get("status") in FINAL_STEP_STATUSES
        else event.get("started_at")
    )
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


async def subscriber(
    client: httpx.AsyncClient, job_id: str, lags: list[float], counts: list[int]
) -> bool:
    """Read one job's stream to its end; whether it was complete and in order."""
    seqs: list[int] = []
    event: dict[str, str] = {}
    async with client.stream("GET", f"/api/registration-jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                event[name] = value
                continue
            if "id" in event:
                seqs.append(int(event["id"]))
                data = json.loads(event["data"])
                stamp = when(data) if event.get("event") == "step" else None
                if stamp is not None:
                    lags.append((time.time() - stamp) * 1000)
            event = {}
    counts.append(len(seqs))
    return seqs == list(range(1, len(seqs) + 1))


def streams(stack: Stack, api: httpx.Client, jobs: int, per_job: int) -> str:
    job_ids = [create(api)[0] for _ in range(jobs)]

    async def main() -> tuple[list[bool], list[float], list[int], float]:
        lags: list[float] = []
        counts: list[int] = []
        limits = httpx.Limits(max_connections=jobs * per_job + 10)
        async with httpx.AsyncClient(
            base_url=stack.config.api_url, headers=AUTH, timeout=300, limits=limits
        ) as client:
            started = time.monotonic()
            complete = await asyncio.gather(
                *(
                    subscriber(client, job_id, lags, counts)
                    for job_id in job_ids
                    for _ in range(per_job)
                )
            )
            return list(complete), lags, counts, time.monotonic() - started

    complete, lags, counts, took = asyncio.run(main())
    lags.sort()
    p95 = lags[int(len(lags) * 0.95)] if lags else float("nan")
    median = statistics.median(lags) if lags else float("nan")
    return (
        f"{len(complete)} subscribers of {jobs} running jobs for {took:.0f} s: "
        f"{sum(counts)} events delivered, {sum(complete)} streams complete and in order; "
        f"lag from the ledger write: median {median:.0f} ms, p95 {p95:.0f} ms, "
        f"max {lags[-1] if lags else float('nan'):.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    # 200 streams of one key: over the default cap of a key's streams (100 per process).
    with own_stack(
        REGJOBS_STEP_MODE="endpoints", REGJOBS_SSE_STREAMS_PER_KEY="250", worker_limit=10
    ) as stack:
        api = httpx.Client(base_url=stack.config.api_url, headers=AUTH, timeout=30)
        standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)

        slow_everything(standin, 2.0)
        job_id, _ = create(api)
        wait_running(api, job_id)
        print(f"1. 100 closed-loop pollers of /progress, {args.seconds:.0f} s:")
        print("   " + polling(stack, job_id, args.seconds, conditional=False))
        print("2. the same with If-None-Match:")
        print("   " + polling(stack, job_id, args.seconds, conditional=True))
        print(f"3. 300 tabs polling /progress every 2 s, {2 * args.seconds:.0f} s:")
        print("   " + tabs(stack, job_id, 2 * args.seconds))

        slow_everything(standin, 0.5)
        print("4. Server-Sent Events:")
        print("   " + streams(stack, api, jobs=10, per_job=20))

        prefect = stack.children["prefect"].process.pid
        os.killpg(prefect, signal.SIGSTOP)
        try:
            print(f"5. (1) with the Prefect server stopped (SIGSTOP), {args.seconds:.0f} s:")
            print("   " + polling(stack, job_id, args.seconds, conditional=False))
        finally:
            os.killpg(prefect, signal.SIGCONT)


if __name__ == "__main__":
    main()
