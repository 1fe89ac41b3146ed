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
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from benchmarks import machine
from regjobs.db import LOCAL_POSTGRES_ADMIN_URL, scratch_postgres_database

R = TypeVar("R")


@contextlib.contextmanager
def job_database(kind: str) -> Iterator[None]:
    """A fresh, migrated job database and state folder, named in this process's
    environment until the block ends (then dropped, removed)."""
    from regjobs.db import engine_for, migrate
    from regjobs.settings import get_settings

    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regjobs-ledger-")))
        if kind == "postgresql":
            url = stack.enter_context(
                scratch_postgres_database(LOCAL_POSTGRES_ADMIN_URL, "regjobs_bench")
            )
        else:
            url = f"sqlite:///{state / 'regjobs.db'}"
        migrate(url)
        before = {k: os.environ.get(k) for k in ("DATABASE_URL", "REGJOBS_STATE_DIR")}
        os.environ.update(DATABASE_URL=url, REGJOBS_STATE_DIR=str(state))
        get_settings.cache_clear()
        try:
            yield
        finally:
            engine_for(url).dispose()
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            get_settings.cache_clear()


def new_job() -> str:
    from deployments.demo import DEMO_CONFIG
    from regjobs import ledger
    from regjobs.config import ExecutionConfig
    from regjobs.db import transaction
    from regjobs.models import Organisation

    def make(*, session: Session) -> str:
        organisation = Organisation(name=f"org-{uuid.uuid4().hex[:12]}")
        session.add(organisation)
        session.flush()
        job = ledger.create_job(
            session=session,
            organisation_id=organisation.id,
            restaurant_id=f"r-{uuid.uuid4().hex[:8]}",
            config=ExecutionConfig.model_validate(DEMO_CONFIG),
        )
        return str(job.id)

    return transaction(make)


def run(jobs: int, profile: bool) -> None:
    from regjobs import catalogue, ledger
    from regjobs.db import read_session, transaction

    timings: dict[str, list[float]] = {"walk read": [], "start_attempt": [], "complete_attempt": []}

    def timed(kind: str, fn: Callable[[], R]) -> R:
        started = time.perf_counter()
        result = fn()
        timings[kind].append(time.perf_counter() - started)
        return result

    def walk(job_id: str, epoch: int) -> ledger.Walk:
        with read_session() as session:
            return ledger.walk_state(session=session, job_id=job_id, epoch=epoch)

    def write(fn: Callable[..., R], **kwargs: Any) -> Callable[[], R]:
        return lambda: transaction(fn, **kwargs)

    made = [new_job() for _ in range(jobs)]
    profiler = cProfile.Profile() if profile else None
    cpu = 0.0
    for i, job_id in enumerate(made):
        run_id = f"flow-run-{i}"
        start = transaction(ledger.begin_run, job_id=job_id, flow_run_id=run_id, generation=1)
        began = time.process_time()
        if profiler:
            profiler.enable()
        for step_id in catalogue.STEP_IDS:
            timed("walk read", functools.partial(walk, job_id, start.epoch))
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
