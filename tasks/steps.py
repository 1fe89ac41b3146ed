"""One Prefect task per step: retries, timeouts and the ledger around each handler.

Every attempt is written to the ledger before and after it runs. Retries are Prefect's
(declared on the task, decided by `retry_condition_fn`); whether an error is worth another
attempt is decided by `regjobs.errors.classify` alone, both here and in that function.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any

import httpx
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from regjobs import catalogue, ledger
from regjobs.config import ExecutionConfig
from regjobs.errors import AlreadyDone, classify, scrubbed
from regjobs.settings import Settings, get_settings
from tasks.clients.systems import Clients
from tasks.handlers import HANDLERS, StepContext

_clients: contextvars.ContextVar[Clients] = contextvars.ContextVar("regjobs_clients")
_config: contextvars.ContextVar[ExecutionConfig] = contextvars.ContextVar("regjobs_config")


@asynccontextmanager
async def step_resources(config: ExecutionConfig, settings: Settings) -> AsyncIterator[None]:
    """Clients shared by every step of one flow run (one connection pool per run)."""
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    async with httpx.AsyncClient(timeout=timeout) as http:
        clients_token = _clients.set(Clients.build(http, settings))
        config_token = _config.set(config)
        try:
            yield
        finally:
            _clients.reset(clients_token)
            _config.reset(config_token)


def should_retry(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition: only the retryable error classes get another attempt."""
    error = state.data if isinstance(state.data, BaseException) else None
    return error is None or classify(error).retryable


async def run_step(job_id: str, step_id: str) -> dict[str, Any]:
    """One attempt of one step, recorded in the ledger."""
    settings = get_settings()
    step = catalogue.step(step_id)
    context = TaskRunContext.get()
    task_run = context.task_run if context else None
    flow_run_id = str(task_run.flow_run_id) if task_run and task_run.flow_run_id else None
    attempt = await asyncio.to_thread(
        ledger.start_attempt,
        job_id=job_id,
        step_id=step_id,
        flow_run_id=flow_run_id,
        task_run_id=str(task_run.id) if task_run else None,
    )
    logger = get_run_logger()
    if attempt.not_before is not None:
        # The outside system asked for a pause (Retry-After) longer than our backoff.
        wait = (attempt.not_before - datetime.now(UTC)).total_seconds()
        if wait > 0:
            logger.info("waiting %.1f s as the outside system asked (Retry-After)", wait)
            await asyncio.sleep(wait)

    async def progress(text: str) -> None:
        await asyncio.to_thread(ledger.set_progress, job_id=job_id, step_id=step_id, progress=text)

    ctx = StepContext(
        job_id=job_id,
        step_id=step_id,
        config=_config.get(),
        inputs=attempt.inputs,
        idempotency_key=f"{job_id}:{step_id}:{attempt.generation}",
        clients=_clients.get(),
        mode=settings.step_mode,
        progress=progress,
    )
    warning: str | None = None
    try:
        async with asyncio.timeout(step.timeout_seconds * settings.step_timeout_scale):
            result = await HANDLERS[step_id](ctx)
    except AlreadyDone as done:
        result, warning = done.existing, done.warning
        logger.warning("%s: %s", step.label, warning)
    except Exception as exc:
        # Defence in depth: whatever an outside system echoed, no secret reaches a log.
        error = scrubbed(classify(exc), ctx.config.secrets())
        run_count = task_run.run_count if task_run else 1
        will_retry = error.retryable and run_count <= settings.step_retries
        logger.error(
            "%s attempt %d failed (%s): %s%s",
            step.label,
            attempt.number,
            error.error_class.value,
            error.message,
            "; will retry" if will_retry else "",
        )
        await asyncio.to_thread(
            ledger.fail_attempt,
            job_id=job_id,
            step_id=step_id,
            attempt=attempt.number,
            error=error,
            will_retry=will_retry,
        )
        raise
    await asyncio.to_thread(
        ledger.complete_attempt,
        job_id=job_id,
        step_id=step_id,
        attempt=attempt.number,
        result=result,
        warning=warning,
    )
    return result


@cache
def step_task(step_id: str) -> Task[Any, Any]:
    """The Prefect task of a step, named by its label so the Prefect UI reads like the product."""
    settings = get_settings()
    step = catalogue.step(step_id)
    base = settings.retry_base_seconds
    decorate = task(
        name=step.label,
        task_run_name=step.label,
        retries=settings.step_retries,
        retry_delay_seconds=[base * 2**n for n in range(max(settings.step_retries, 1))],
        retry_jitter_factor=settings.retry_jitter_factor or None,
        retry_condition_fn=should_retry,
        cache_policy=NO_CACHE,
        persist_result=False,
        # No task tags: in Prefect 3.9.1 each tagged task run first checks tag concurrency
        # limits, which delayed concurrently started steps by up to 2.4 s (measured here).
    )
    return decorate(run_step)
