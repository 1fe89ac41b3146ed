"""Reads under load, measured with wrk (a C load generator: its own CPU is small next to
the API's on the same two cores). Prints figures.

    .venv/bin/python -m benchmarks.wrk_reads [--seconds 10] [--connections 100]
                                             [--database sqlite postgresql]

For each database, a fresh system started as `make run` does (`postgresql`: the job
tables and the Prefect server on fresh PostgreSQL databases, as `benchmarks.creates` makes
them), steps in `endpoints` mode with every stand-in call slowed to 8 s, so the polled job
is running (its view changing) while it is read. Then, for --seconds each:
1. `GET /api/registration-jobs/{id}` from --connections connections;
2. `GET /api/registration-jobs/{id}/progress` the same way;
3. (2) with `If-None-Match` of the job's current ETag (304s while it does not change);
4. (2) with a job view token (`?token=`, as the job status page reads) instead of the key.
Each line: p50, p90 and p99 latency (wrk's `--latency`), requests/s, errors (socket
errors and timeouts, and answers other than 2xx and 3xx). The target (issue 20): p90 <=
50 ms, >= 2,000 reads/s, 0 errors, at 100 connections.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks import machine
from benchmarks.creates import database_env
from benchmarks.latency import KEY, create, own_stack
from benchmarks.readers import slow_everything, wait_running

WRK = "/usr/bin/wrk"
AUTH = {"Authorization": f"Bearer {KEY}"}
TARGET = "target: p90 <= 50 ms, >= 2000 requests/s, 0 errors"


@dataclass(frozen=True)
class WrkResult:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests_per_s: float
    requests: int
    errors: int

    def line(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"{self.requests_per_s:.0f} requests/s ({self.requests} in all), "
            f"errors {self.errors}"
        )

    def meets_target(self) -> bool:
        return self.p90_ms <= 50 and self.requests_per_s >= 2000 and self.errors == 0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse(output: str) -> WrkResult:
    """The figures of wrk's `--latency` report."""
    percentiles = {
        int(p): _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.M)
    }
    requests = int(re.search(r"^\s*(\d+) requests in", output, re.M).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(percentiles[50], percentiles[90], percentiles[99], rate, requests, errors)


def wrk(
    url: str, headers: dict[str, str], *, connections: int, seconds: float, threads: int
) -> WrkResult:
    """One wrk run against `url`, every request with `headers`."""
    command = [WRK, "--latency", "-t", str(threads), "-c", str(connections)]
    command += ["-d", f"{seconds:g}s", "--timeout", "5s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    return parse(done.stdout)


def run(database: str, seconds: float, connections: int, threads: int) -> None:
    with contextlib.ExitStack() as resources:
        env: dict[str, Any] = {
            "REGJOBS_STEP_MODE": "endpoints",
            **database_env(resources, database),
        }
        stack = resources.enter_context(own_stack(worker_limit=10, **env))
        api = resources.enter_context(
            httpx.Client(base_url=stack.config.api_url, headers=AUTH, timeout=30)
        )
        standin = resources.enter_context(
            httpx.Client(base_url=stack.config.standin_url, timeout=30)
        )
        slow_everything(standin, 8.0)  # the job runs through all three loads
        job_id, _ = create(api)
        wait_running(api, job_id)
        job_url = f"{stack.config.api_url}/api/registration-jobs/{job_id}"

        def measure(url: str, headers: dict[str, str]) -> WrkResult:
            return wrk(url, headers, connections=connections, seconds=seconds, threads=threads)

        print(f"{database}, {connections} connections, {seconds:g} s each, a job running:")
        results = [("GET job", measure(job_url, AUTH))]
        results.append(("GET /progress", measure(f"{job_url}/progress", AUTH)))
        etag = api.get(f"{job_url}/progress").headers["etag"]
        conditional = {**AUTH, "If-None-Match": etag}
        results.append(("/progress If-None-Match", measure(f"{job_url}/progress", conditional)))
        token = api.post(f"{job_url}/view-token").json()["token"]
        results.append(("/progress ?token=", measure(f"{job_url}/progress?token={token}", {})))
        still = api.get(f"{job_url}/progress").json()["status"]
        for label, result in results:
            mark = "meets" if result.meets_target() else "MISSES"
            print(f"  {label:<24} {result.line()}  ({mark} the target)", flush=True)
        print(f"  the job was {still} at the end ({TARGET})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument(
        "--database", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"]
    )
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    for database in args.database:
        run(database, args.seconds, args.connections, args.threads)
    print(machine.describe(), flush=True)


if __name__ == "__main__":
    main()
