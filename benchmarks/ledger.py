"""The ledger's writes of a job's steps alone, as a flow run makes them, without Prefect: for
each of --jobs jobs, its run begins, then each of its twelve steps is read (the walk's one
read), started and completed, one after the other in one thread. Prints the wall time of
each kind of operation (median, p90) and the client's CPU per job; with --profile, where
that CPU went (cProfile, cumulative).

    .venv/bin/python -m benchmarks.ledger [--jobs 40] [--database postgresql|sqlite]
        [--profile]

What the same writes cost inside a flow run, beside Prefect's engine and its other steps, is
in docs/figures.md ("Against Prefect itself, eleventh session"): alone they take a few
milliseconds each; there, tens.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import machine
from regjobs.db import LOCAL_POSTGRES_ADMIN_URL

R = TypeVar("R")


@contextlib.contextmanager
def job_database(kind: str) -> Iterator[None]:
    """A fresh, migrated job database (`kind`) and state folder of this process until the
    block ends, then dropped and removed: the test tiers' own (`tests.helpers`)."""
    from tests.helpers import environment, own_job_database

    with (
        tempfile.TemporaryDirectory(prefix="regjobs-ledger-") as state,
        environment({"REGJOBS_TEST_DATABASE": kind}),
        own_job_database(Path(state), LOCAL_POSTGRES_ADMIN_URL),
    ):
        yield


def run(jobs: int, profile: bool) -> None:
    from regjobs import catalogue, ledger
    from regjobs.db import read, transaction
    from tests.helpers import ledger_job

    timings: dict[str, list[float]] = {"walk read": [], "start_attempt": [], "complete_attempt": []}

    def timed(kind: str, fn: Callable[[], R]) -> R:
        started = time.perf_counter()
        result = fn()
        timings[kind].append(time.perf_counter() - started)
        return result

    def write(fn: Callable[..., R], **kwargs: Any) -> Callable[[], R]:
        return lambda: transaction(fn, **kwargs)

    made = [ledger_job() for _ in range(jobs)]
    profiler = cProfile.Profile() if profile else None
    cpu = 0.0
    for i, job_id in enumerate(made):
        run_id = f"flow-run-{i}"
        start = transaction(ledger.begin_run, job_id=job_id, flow_run_id=run_id, generation=1)
        began = time.process_time()
        if profiler:
            profiler.enable()
        for step_id in catalogue.STEP_IDS:
            timed(
                "walk read",
                functools.partial(read, ledger.walk_state, job_id=job_id, epoch=start.epoch),
            )
            attempt = timed(
                "start_attempt",
                write(
                    ledger.start_attempt,
                    job_id=job_id,
                    epoch=start.epoch,
                    step_id=step_id,
                    flow_run_id=run_id,
                    task_run_id=None,
                ),
            )
            timed(
                "complete_attempt",
                write(
                    ledger.complete_attempt,
                    job_id=job_id,
                    epoch=start.epoch,
                    step_id=step_id,
                    attempt=attempt.number,
                    result={"value": "Café «Ünïcode» <b>markup</b>"},
                    warning=None,
                ),
            )
        if profiler:
            profiler.disable()
        cpu += time.process_time() - began
    for kind, found in timings.items():
        ordered = sorted(found)
        print(
            f"  {kind:<18} median {statistics.median(found) * 1000:6.2f} ms, "
            f"p90 {ordered[int(len(ordered) * 0.9)] * 1000:6.2f} ms (n={len(found)})"
        )
    print(f"  client CPU per job (12 steps: 36 operations): {cpu / jobs * 1000:.1f} ms")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    print(f"== the ledger's step writes alone ({args.jobs} jobs, {args.database}) ==")
    with job_database(args.database):
        run(args.jobs, args.profile)
    print(machine.describe(), flush=True)


if __name__ == "__main__":
    main()
