"""The cost baseline (benchmarks/throughput.py, docs/design.md "The cost baseline"): a bare
Prefect flow with twelve no-op tasks in the registration flow's dependency graph, and
nothing else: no job database, no ledger, no events, artifacts or ownership checks.

It is deployed beside `registration-job` on the same work pool, with the same command (the
warm processes), so the same workers run it with the same settings against the same Prefect
server and database: what a registration job costs beyond it is what this project adds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from regjobs import catalogue

#: The deployment's name (flow `baseline-job`), made by `benchmarks.throughput`.
DEPLOYMENT = "baseline-job/baseline-job"


@task(cache_policy=NO_CACHE, persist_result=False)
async def noop_step(step_id: str, seconds: float = 0.0) -> str:
    """A step that does nothing (or sleeps `seconds`, for the critical path)."""
    if seconds:
        await asyncio.sleep(seconds)
    return step_id


@flow(name="baseline-job", persist_result=False)
async def baseline_job(step_seconds: float = 0.0) -> None:
    """Run the twelve steps as the registration flow does: each as soon as the steps it
    needs have ended, its task run naming theirs as upstream (`wait_for`)."""
    started: dict[str, asyncio.Task[State[Any]]] = {}

    async def run(step: catalogue.Step) -> State[Any]:
        upstream = [await started[n] for n in step.needs]
        call = noop_step.with_options(task_run_name=step.label)
        running = call(step.id, step_seconds, wait_for=upstream, return_state=True)
        return await cast("Awaitable[State[Any]]", running)

    for step in catalogue.STEPS:  # topological order: a step's needs are started before it
        started[step.id] = asyncio.ensure_future(run(step))
    await asyncio.gather(*started.values())
