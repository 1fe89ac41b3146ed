"""One Prefect task per step: retries, timeouts and the ledger around each handler.

Every attempt is written to the ledger before and after it runs. Retries are Prefect's
(declared on the task, decided by `retry_condition_fn`); whether an error is worth another
attempt is decided by `regjobs.errors.classify` alone, both here and in that function.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import httpx
from prefect import Task, task
from prefect.artifacts import acreate_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import concurrency
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import Cancelled, Completed

from regjobs import catalogue, ledger
from regjobs.catalogue import StepKind
from regjobs.config import ExecutionConfig
from regjobs.errors import (
    AlreadyDone,
    Classified,
    ErrorClass,
    RetryableStepError,
    StepAttemptFailed,
    classify,
)
from regjobs.evidence import evidence_url
from regjobs.observe import one_line
from regjobs.secrets import Scrubber
from regjobs.settings import Settings, StepMode, get_settings
from tasks.browser import BrowserPool
from tasks.clients.systems import Clients
from tasks.handlers import HANDLERS, StepContext
from tasks.ledger_io import ledger_write
from tasks.report import emit_step


@dataclass(frozen=True)
class Resources:
    """What every step of one flow run shares."""

    job_id: str
    #: The fencing token this flow run holds; every ledger write carries it.
    epoch: int
    config: ExecutionConfig
    clients: Clients
    browser: BrowserPool
    #: Masks the job's secrets in whatever a step hands on (errors, results, warnings).
    scrubber: Scrubber
    #: The organisation the job belongs to (its evidence links name it).
    organisation_id: str
    #: Set when the flow run stops its steps (the job is no longer its own): each running
    #: step stops its handler and ends its task run Cancelled, as a stop, not a crash.
    stop: asyncio.Event = field(default_factory=asyncio.Event)


_resources: contextvars.ContextVar[Resources] = contextvars.ContextVar("regjobs_resources")


@asynccontextmanager
async def step_resources(
    job_id: str,
    epoch: int,
    run_id: str,
    config: ExecutionConfig,
    settings: Settings,
    organisation_id: str,
) -> AsyncIterator[Resources]:
    """One HTTP connection pool and (when a browser step needs it) one Chromium per flow
    run; the browser is closed when the run's steps are over, however they ended."""
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    browser = BrowserPool(settings, run_id)
    async with httpx.AsyncClient(timeout=timeout) as http:
        clients = Clients.build(http, settings)
        scrubber = Scrubber(config.secrets())
        resources = Resources(job_id, epoch, config, clients, browser, scrubber, organisation_id)
        token = _resources.set(resources)
        try:
            yield resources
        finally:
            await browser.close()
            _resources.reset(token)


def should_retry(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition: only the retryable error classes get another attempt."""
    error = state.data if isinstance(state.data, BaseException) else None
    return error is None or classify(error).retryable


async def run_step(job_id: str, step_id: str) -> dict[str, Any] | State[Any]:
    """One attempt of one step, recorded in the ledger; stopped (a Cancelled task run, not
    a crashed one) when the flow run stops its steps."""
    stop = _resources.get().stop
    work = asyncio.ensure_future(_run_step(job_id, step_id))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if not work.cancelled():
        return work.result()
    message = "stopped: the job is no longer this flow run's (cancelled, retried or taken over)"
    get_run_logger().info("%s %s", catalogue.step(step_id).label, message)
    return Cancelled(message=message)


async def _run_step(job_id: str, step_id: str) -> dict[str, Any]:
    settings = get_settings()
    step = catalogue.step(step_id)
    context = TaskRunContext.get()
    task_run = context.task_run if context else None
    in_portal = settings.step_mode is StepMode.DIRECT and step.kind is StepKind.BROWSER
    if not in_portal:
        return await _attempt(settings, step, task_run)
    # Browser steps share one limit across every worker; waiting for a slot is `pending`
    # (or `retrying`) with the reason and since when, not `running`; past
    # REGJOBS_SLOT_WAIT_LIMIT it is a failed attempt, retryable.
    resources = _resources.get()
    waiting = datetime.now(UTC)
    await ledger_write(
        ledger.set_progress,
        job_id=job_id,
        epoch=resources.epoch,
        step_id=step_id,
        progress=f"waiting for a browser slot since {waiting:%H:%M:%S} UTC "
        f"(at most {settings.browser_limit} at once)",
    )
    # The slot's lease outlives a killed process by at most this (Prefect's minimum: 60 s).
    lease = max(60.0, settings.worker_lost_seconds)
    async with contextlib.AsyncExitStack() as slot:
        # The ledger says the slot is given back only once Prefect has it (this runs last).
        slot.push_async_callback(_gave_back, job_id, step_id)
        try:
            await slot.enter_async_context(
                concurrency(
                    settings.browser_limit_name,
                    occupy=1,
                    strict=True,
                    lease_duration=lease,
                    timeout_seconds=settings.slot_wait_limit,
                )
            )
        except TimeoutError:
            minutes = (datetime.now(UTC) - waiting).total_seconds() / 60
            message = (
                f"no browser slot in {minutes:.0f} min (at most {settings.browser_limit} at "
                "once; REGJOBS_SLOT_WAIT_LIMIT); the step will wait again"
            )
            await _failed_before_running(settings, step, task_run, message)
            raise RetryableStepError(message) from None
        await ledger_write(
            ledger.hold_slot, job_id=job_id, epoch=resources.epoch, step_id=step_id, holding=True
        )
        await slot.enter_async_context(resources.browser.held())
        return await _attempt(settings, step, task_run)


async def _gave_back(job_id: str, step_id: str) -> None:
    with contextlib.suppress(Exception):  # the reconciler counts again anyway
        await ledger_write(ledger.hold_slot, job_id=job_id, epoch=0, step_id=step_id, holding=False)


async def _failed_before_running(
    settings: Settings, step: catalogue.Step, task_run: TaskRun | None, message: str
) -> None:
    """Record an attempt that failed (retryably) before its handler could run."""
    resources = _resources.get()
    attempt = await ledger_write(
        ledger.start_attempt,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step.id,
        flow_run_id=str(task_run.flow_run_id) if task_run and task_run.flow_run_id else None,
        task_run_id=str(task_run.id) if task_run else None,
    )
    error = Classified(ErrorClass.RETRYABLE, message)
    run_count = task_run.run_count if task_run else 1
    will_retry = run_count <= settings.step_retries
    _log_failure(step, attempt.number, error, will_retry)
    await ledger_write(
        ledger.fail_attempt,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step.id,
        attempt=attempt.number,
        error=error,
        will_retry=will_retry,
    )


async def _attempt(
    settings: Settings, step: catalogue.Step, task_run: TaskRun | None
) -> dict[str, Any]:
    resources = _resources.get()
    job_id, epoch, step_id = resources.job_id, resources.epoch, step.id
    flow_run_id = str(task_run.flow_run_id) if task_run and task_run.flow_run_id else None
    attempt = await ledger_write(
        ledger.start_attempt,
        job_id=job_id,
        epoch=epoch,
        step_id=step_id,
        flow_run_id=flow_run_id,
        task_run_id=str(task_run.id) if task_run else None,
    )
    logger = get_run_logger()
    emit_step(job_id, step_id, "running", attempt=attempt.number)
    if attempt.not_before is not None:
        # The outside system asked for a pause (Retry-After) longer than our backoff.
        wait = (attempt.not_before - datetime.now(UTC)).total_seconds()
        if wait > 0:
            logger.info("waiting %.1f s as the outside system asked (Retry-After)", wait)
            await asyncio.sleep(wait)

    scrub = resources.scrubber

    async def progress(text: str) -> None:
        await ledger_write(
            ledger.set_progress,
            job_id=job_id,
            epoch=epoch,
            step_id=step_id,
            progress=scrub.text(text),
        )

    ctx = StepContext(
        job_id=job_id,
        step_id=step_id,
        config=resources.config,
        inputs=attempt.inputs,
        idempotency_key=f"{job_id}:{step_id}:{attempt.generation}",
        repeat=attempt.repeat,
        clients=resources.clients,
        mode=settings.step_mode,
        progress=progress,
        browser=resources.browser,
        portal_url=settings.portal_url,
    )
    warning: str | None = None
    failure: StepAttemptFailed | None = None
    began = time.monotonic()
    try:
        async with asyncio.timeout(step.timeout_seconds * settings.step_timeout_scale):
            result = await HANDLERS[step_id](ctx)
    except AlreadyDone as done:
        result, warning = done.existing, scrub.text(done.warning)
        logger.warning("%s: %s", step.label, warning)
    except Exception as exc:
        # Whatever an outside system or the browser put in it, no secret goes further:
        # scrubbed (before it is cut short), classified, and only that is handed on.
        failure = StepAttemptFailed.of(classify(exc, scrub))
    if failure is not None:
        # Outside the `except`, so the new exception has no link to the original (not even
        # a suppressed `__context__`) and no traceback of the handler's frames.
        await _record_failure(settings, step, attempt.number, task_run, ctx.evidence, failure)
        raise failure from None
    result = scrub.scrub(result)
    await ledger_write(
        ledger.complete_attempt,
        job_id=job_id,
        epoch=epoch,
        step_id=step_id,
        attempt=attempt.number,
        result=result,
        warning=warning,
    )
    summary = one_line(result)
    logger.info(
        "%s completed in %.1f s%s",
        step.label,
        time.monotonic() - began,
        f": {summary}" if summary else "",
    )
    emit_step(job_id, step_id, "completed", attempt=attempt.number, result=summary)
    return result  # type: ignore[no-any-return]


async def _record_failure(
    settings: Settings,
    step: catalogue.Step,
    attempt: int,
    task_run: TaskRun | None,
    evidence: list[bytes],
    failure: StepAttemptFailed,
) -> None:
    """Log the failed attempt and record it in the ledger (with its screenshot, if any)."""
    resources = _resources.get()
    error = classify(failure)
    run_count = task_run.run_count if task_run else 1
    will_retry = error.retryable and run_count <= settings.step_retries
    _log_failure(step, attempt, error, will_retry)
    evidence_id = await ledger_write(
        ledger.fail_attempt,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step.id,
        attempt=attempt,
        error=error,
        will_retry=will_retry,
        evidence=evidence[-1] if evidence else None,
    )
    if evidence_id is not None:
        await _link_evidence(settings, resources, step, attempt, evidence_id)


def _log_failure(step: catalogue.Step, attempt: int, error: Classified, will_retry: bool) -> None:
    """A failed attempt: a WARNING while the step will be tried again, an ERROR when it
    fails the step; and the step's event."""
    level = logging.WARNING if will_retry else logging.ERROR
    get_run_logger().log(
        level,
        "%s attempt %d failed (%s): %s%s",
        step.label,
        attempt,
        error.error_class.value,
        error.message,
        "; will retry" if will_retry else "",
    )
    emit_step(
        _resources.get().job_id,
        step.id,
        "retrying" if will_retry else "failed",
        attempt=attempt,
        error_class=error.error_class.value,
        error=error.message,
    )


async def _link_evidence(
    settings: Settings, resources: Resources, step: catalogue.Step, attempt: int, evidence_id: int
) -> None:
    """A Prefect artifact linking to the screenshot of a failed attempt."""
    job_id = resources.job_id
    url = evidence_url(settings, job_id, evidence_id, resources.organisation_id)
    with contextlib.suppress(Exception):  # evidence must never fail the step's own handling
        await acreate_link_artifact(
            link=url,
            link_text=f"{step.label}, attempt {attempt}: screenshot",
            key=f"evidence-{step.id.replace('_', '-')}-{job_id[:8]}",
            description=f"What the portal showed when {step.label} attempt {attempt} failed "
            "(password fields masked).",
        )


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


async def _mark(job_id: str, step_id: str, outcome: str, reason: str) -> State[None]:
    """A step that does not run in this flow run (skipped, or reused from an earlier run)
    still shows in Prefect: a task run that ends at once in a state named for why."""
    return Completed(name=outcome, message=reason)


@cache
def marker_task(step_id: str) -> Task[Any, Any]:
    """The task run standing for a step that does not run here, named by its label."""
    label = catalogue.step(step_id).label
    return task(name=label, task_run_name=label, cache_policy=NO_CACHE, persist_result=False)(_mark)
