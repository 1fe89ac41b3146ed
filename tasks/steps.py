"""One Prefect task per step: the ledger around each handler.

Each step's retries, retry delays and timeout are the catalogue's (settings may override or
scale them), declared on its `@task`: Prefect decides and shows them. Whether an error is
worth another attempt is `regjobs.errors.classify`'s answer, given to Prefect as the
task's `retry_condition_fn`.

Every attempt is written to the ledger when it starts, and when it completes or fails. A
failure is recorded where Prefect decides what follows it: in the retry condition when
Prefect retries (the attempt is `retrying`), in the task's `on_failure` hook when it does not
(`failed`): so a timeout Prefect imposes is recorded like any other retryable failure, and
nothing here predicts Prefect's decision.

The run's resources (clients, browser, scrubber, the job's config and fencing epoch) reach
a step one way: the `Resources` of `step_resources`, in a ContextVar set for the flow run's
steps (`current()`). A task's one parameter is its step id.
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
from uuid import UUID

import httpx
from prefect import Task, task
from prefect.artifacts import acreate_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, State, TaskRun
from prefect.concurrency._asyncio import (
    aacquire_concurrency_slots_with_lease,
    arelease_concurrency_slots_with_lease,
)
from prefect.concurrency._leases import amaintain_concurrency_lease
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.states import Cancelled, Completed

from regjobs import catalogue, ledger, refusals
from regjobs.catalogue import StepKind, StepStatus
from regjobs.config import ExecutionConfig
from regjobs.errors import (
    AlreadyDone,
    Classified,
    ErrorClass,
    LoginRefused,
    NonRetryableStepError,
    RetryableStepError,
    StepAttemptFailed,
    classify,
)
from regjobs.evidence import evidence_url
from regjobs.observe import one_line
from regjobs.secrets import Scrubber
from regjobs.settings import Settings, get_settings
from tasks.browser import BrowserPool
from tasks.clients.choice import build_clients
from tasks.clients.http import TLS
from tasks.clients.interfaces import Clients
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
    #: Masks the job's secrets in text for people (errors, warnings, progress, log lines,
    #: events); finds one in a result, which is never changed (`regjobs.secrets`).
    scrubber: Scrubber
    #: The organisation the job belongs to (its evidence links name it).
    organisation_id: str
    #: Set when the flow run stops its steps (the job is no longer its own): each running
    #: step stops its handler and ends its task run Cancelled, as a stop, not a crash.
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: The attempt each running task run has begun, by task run id: what its failure is
    #: recorded against once Prefect has decided whether it is retried.
    attempts: dict[UUID, Started] = field(default_factory=dict)

    def waits_for_slot(self, step: catalogue.Step) -> bool:
        """Whether the step drives a browser, and so waits for one of the browser slots."""
        return step.kind is StepKind.BROWSER and self.clients.portal.uses_browser


@dataclass(frozen=True)
class Started:
    """An attempt that began: its step, its number, and the screenshots it has taken."""

    step: catalogue.Step
    number: int
    evidence: list[bytes]


def current() -> Resources:
    """The resources of the flow run whose step is running."""
    return _resources.get()


_resources: contextvars.ContextVar[Resources] = contextvars.ContextVar("regjobs_resources")


@asynccontextmanager
async def step_resources(
    job_id: str,
    epoch: int,
    run_id: str,
    config: ExecutionConfig,
    settings: Settings,
    organisation_id: str,
    scrubber: Scrubber | None = None,
) -> AsyncIterator[Resources]:
    """One HTTP connection pool and (when a browser step needs it) one Chromium per flow
    run; the browser is closed when the run's steps are over, however they ended. Without
    `scrubber`, the config's own (secrets, and its strings as public values)."""
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    browser = BrowserPool(settings, run_id)
    async with httpx.AsyncClient(timeout=timeout, verify=TLS) as http:
        clients = build_clients(settings, http, browser)
        scrubber = Scrubber.for_job(config) if scrubber is None else scrubber
        resources = Resources(job_id, epoch, config, clients, browser, scrubber, organisation_id)
        token = _resources.set(resources)
        try:
            yield resources
        finally:
            await browser.close()
            _resources.reset(token)


async def should_retry(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition, asked only while the step has retries left: only the
    retryable error classes get another attempt. Its answer is what the ledger records: a
    retried attempt here (`retrying`), any other failure by `failed_for_good`."""
    error = await _error_of(state)
    if not error.retryable:
        return False
    await _record_failure(task_run, error, will_retry=True)
    if error.retry_after:
        # The outside system asked for a pause (Retry-After): waited here, outside the
        # attempt's timeout, before Prefect's own delay.
        get_run_logger().info(
            "waiting %.1f s as the outside system asked (Retry-After)", error.retry_after
        )
        await asyncio.sleep(error.retry_after)
    return True


async def failed_for_good(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> None:
    """The task's `on_failure` hook: Prefect will not retry this attempt (its error is not
    retryable, or the step's retries are spent), so it fails the step."""
    await _record_failure(task_run, await _error_of(state), will_retry=False)


async def _error_of(state: State[Any]) -> Classified:
    """The classified error a failed state holds: a step's StepAttemptFailed, or what
    Prefect raised itself (its timeout, TaskRunTimeoutError, is a retryable failure)."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        with contextlib.suppress(Exception):
            found = await state.aresult(raise_on_failure=False)
            error = found if isinstance(found, BaseException) else None
    if error is None:
        return Classified(ErrorClass.RETRYABLE, state.message or "the attempt failed")
    resources = _resources.get(None)
    return classify(error, resources.scrubber if resources else ())


async def run_step(step_id: str) -> State[Any] | None:
    """One attempt of one step, recorded in the ledger; stopped (a Cancelled task run, not
    a crashed one) when the flow run stops its steps. Its result is the ledger's, not the
    task run's: a task run that returned it would have Prefect link every value of it, by
    identity, to later task runs that are handed this one's state (`wait_for`), and a value
    two results share, or an identity reused, drew edges the catalogue does not have."""
    stop = current().stop
    work = asyncio.ensure_future(_run_step(step_id))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if not work.cancelled():
        work.result()  # raises the attempt's failure
        return None
    message = "stopped: the job is no longer this flow run's (cancelled, retried or taken over)"
    get_run_logger().info("%s %s", catalogue.step(step_id).label, message)
    return Cancelled(message=message)


async def _run_step(step_id: str) -> dict[str, Any]:
    settings = get_settings()
    resources = current()
    step = catalogue.step(step_id)
    context = TaskRunContext.get()
    task_run = context.task_run if context else None
    if not resources.waits_for_slot(step):
        return await _attempt(step, task_run)
    # Browser steps share one limit across every worker; waiting for a slot is `pending`
    # (or `retrying`) with the reason and since when, not `running`; past
    # REGJOBS_SLOT_WAIT_LIMIT it is a failed attempt, retryable.
    waiting = datetime.now(UTC)
    await ledger_write(
        ledger.set_progress,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step_id,
        progress=f"waiting for a browser slot since {waiting:%H:%M:%S} UTC "
        f"(at most {settings.browser_limit} at once)",
    )
    holder = ConcurrencyLeaseHolder(type="task_run", id=task_run.id) if task_run else None
    leases: list[str] = []
    async with contextlib.AsyncExitStack() as slot:
        # The ledger says the slot is given back only once Prefect has it (this runs last,
        # after the browser closed and the lease was released), and only if the step still
        # names this lease: a run that lost the job cannot clear another run's record.
        slot.push_async_callback(_gave_back, resources.job_id, step_id, leases)
        try:
            lease = str(await slot.enter_async_context(browser_slot(settings, holder)))
        except TimeoutError:
            minutes = (datetime.now(UTC) - waiting).total_seconds() / 60
            # An attempt that failed before its handler could run: begun, then failed.
            await _begin(step, task_run, [])
            raise RetryableStepError(
                f"no browser slot in {minutes:.0f} min (at most {settings.browser_limit} at "
                "once; REGJOBS_SLOT_WAIT_LIMIT); the step will wait again"
            ) from None
        leases.append(lease)
        await ledger_write(
            ledger.hold_slot,
            job_id=resources.job_id,
            epoch=resources.epoch,
            step_id=step_id,
            lease=lease,
        )
        await slot.enter_async_context(resources.browser.held())
        return await _attempt(step, task_run)


@asynccontextmanager
async def browser_slot(
    settings: Settings, holder: ConcurrencyLeaseHolder | None
) -> AsyncIterator[UUID]:
    """A slot of the browser limit, under a lease of Prefect's, whose id it yields: what
    Prefect's `concurrency()` does (wait, renew the lease while held, release it by its id),
    with the lease id kept, so the ledger can say which holder holds the slot. A lease that
    cannot be renewed ends the holder (Prefect cancels the body), so nobody keeps a browser
    on a slot Prefect has given to another."""
    # The lease outlives a killed process by at most this (Prefect's minimum: 60 s).
    duration = max(60.0, settings.worker_lost_seconds)
    granted = await aacquire_concurrency_slots_with_lease(
        names=[settings.browser_limit_name],
        slots=1,
        timeout_seconds=settings.slot_wait_limit,
        lease_duration=duration,
        strict=True,
        holder=holder,
    )
    try:
        async with amaintain_concurrency_lease(
            granted.lease_id, duration, raise_on_lease_renewal_failure=True
        ):
            yield granted.lease_id
    finally:
        # A release that fails leaves the lease to run out (Prefect frees it then) or to
        # the reconciler, which frees the leases of runs it found ended.
        with contextlib.suppress(Exception):
            await arelease_concurrency_slots_with_lease(granted.lease_id)


async def _gave_back(job_id: str, step_id: str, leases: list[str]) -> None:
    for lease in leases:
        with contextlib.suppress(Exception):  # a record left behind frees nothing but itself
            await ledger_write(ledger.give_back_slot, job_id=job_id, step_id=step_id, lease=lease)


async def _begin(
    step: catalogue.Step, task_run: TaskRun | None, evidence: list[bytes]
) -> ledger.Attempt:
    """Record that an attempt starts, and remember it for its failure, if it fails."""
    resources = current()
    attempt = await ledger_write(
        ledger.start_attempt,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step.id,
        flow_run_id=str(task_run.flow_run_id) if task_run and task_run.flow_run_id else None,
        task_run_id=str(task_run.id) if task_run else None,
    )
    if task_run is not None:
        resources.attempts[task_run.id] = Started(step, attempt.number, evidence)
    return attempt


async def _attempt(step: catalogue.Step, task_run: TaskRun | None) -> dict[str, Any]:
    resources = current()
    job_id, epoch, step_id = resources.job_id, resources.epoch, step.id
    evidence: list[bytes] = []
    attempt = await _begin(step, task_run, evidence)
    logger = get_run_logger()
    if attempt.not_before is not None:
        # A pause an outside system asked for that this process has not waited out (an
        # earlier flow run recorded it).
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
        progress=progress,
        evidence=evidence,
    )
    warning: str | None = None
    failure: StepAttemptFailed | None = None
    refused_email: str | None = None
    began = time.monotonic()
    try:
        answer = await HANDLERS[step_id](ctx)
    except AlreadyDone as done:
        answer, warning = done.existing, scrub.text(done.warning)
        logger.warning("%s: %s", step.label, warning)
    except Exception as exc:
        # Whatever an outside system or the browser put in it, no secret goes further:
        # scrubbed (before it is cut short), classified, and only that is handed on.
        failure = StepAttemptFailed.of(classify(exc, scrub))
        if isinstance(exc, LoginRefused):
            refused_email = exc.email
    if refused_email is not None:
        # Counted for the per-email limit on refused logins (regjobs.refusals).
        await ledger_write(refusals.record, email=refused_email)
    result: dict[str, Any] = {}
    if failure is None:
        # An answer (an "already exists" one too) that holds a secret is a bug, and fails
        # the attempt rather than being changed; the result is the fields the step gives,
        # as the outside system answered them, whichever client answered.
        failure = _secret_in_result(step, answer, scrub)
        result = catalogue.shaped(step_id, answer)
    if failure is not None:
        # Outside the `except`, so the new exception has no link to the original (not even
        # a suppressed `__context__`) and no traceback of the handler's frames. Prefect
        # decides what follows; the ledger records it then (`should_retry`).
        raise failure from None
    if task_run is not None:
        resources.attempts.pop(task_run.id, None)
    await ledger_write(
        ledger.complete_attempt,
        job_id=job_id,
        epoch=epoch,
        step_id=step_id,
        attempt=attempt.number,
        result=result,
        warning=warning,
    )
    summary = scrub.text(one_line(result))
    logger.info(
        "%s completed in %.1f s%s",
        step.label,
        time.monotonic() - began,
        f": {summary}" if summary else "",
    )
    return result


def _secret_in_result(
    step: catalogue.Step, result: Any, scrub: Scrubber
) -> StepAttemptFailed | None:
    """The failure of an attempt whose result holds a secret of the job (in any of its exact
    forms, outside the job's public values); None for a clean result."""
    where = scrub.secret_in(result, "result")
    if where is None:
        return None
    error = NonRetryableStepError(
        f"bug: the {step.label} step's result contains a secret of the job (at {where}); "
        "nothing was stored"
    )
    return StepAttemptFailed.of(classify(error, scrub))


async def _record_failure(task_run: TaskRun, error: Classified, will_retry: bool) -> None:
    """Log the failed attempt and record it in the ledger (with its screenshot, if any)."""
    resources = current()
    started = resources.attempts.pop(task_run.id, None)
    if started is None:
        # The attempt failed before the ledger had it (a refused write): nothing to record.
        get_run_logger().warning("%s failed before it began: %s", task_run.name, error.message)
        return
    step = started.step
    _log_failure(step, started.number, error, will_retry)
    evidence_id = await ledger_write(
        ledger.fail_attempt,
        job_id=resources.job_id,
        epoch=resources.epoch,
        step_id=step.id,
        attempt=started.number,
        error=error,
        will_retry=will_retry,
        evidence=started.evidence[-1] if started.evidence else None,
    )
    if evidence_id is not None:
        await _link_evidence(get_settings(), resources, step, started.number, evidence_id)


def _log_failure(step: catalogue.Step, attempt: int, error: Classified, will_retry: bool) -> None:
    """A failed attempt: a WARNING while the step will be tried again, an ERROR when it
    fails the step; and the step's event."""
    asks = not will_retry and error.error_class is ErrorClass.NEEDS_PERSON and error.fields
    if asks:
        # Not a failure of the job: it waits for a person's corrected input (no retry).
        get_run_logger().warning(
            "%s attempt %d needs a person: %s", step.label, attempt, error.message
        )
    else:
        get_run_logger().log(
            logging.WARNING if will_retry else logging.ERROR,
            "%s attempt %d failed (%s): %s%s",
            step.label,
            attempt,
            error.error_class.value,
            error.message,
            "; will retry" if will_retry else "",
        )
    status = StepStatus.RETRYING if will_retry else StepStatus.FAILED
    emit_step(
        current().job_id,
        step.id,
        StepStatus.ACTION_REQUIRED if asks else status,
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


@dataclass(frozen=True)
class Policy:
    """A step's retries, retry delays and timeout, as Prefect is given them."""

    retries: int
    retry_delay_seconds: list[float]
    timeout_seconds: float


def policy(step: catalogue.Step, settings: Settings, *, waits_for_slot: bool) -> Policy:
    """The catalogue's values for the step; REGJOBS_STEP_RETRIES and
    REGJOBS_RETRY_BASE_SECONDS replace them for every step when set, and
    REGJOBS_STEP_TIMEOUT_SCALE scales the timeout. A step that waits for a browser slot
    has that wait (at most REGJOBS_SLOT_WAIT_LIMIT) on top of its own time."""
    retries = step.retries if settings.step_retries is None else settings.step_retries
    base = (
        step.retry_delay_seconds
        if settings.retry_base_seconds is None
        else settings.retry_base_seconds
    )
    timeout = step.timeout_seconds * settings.step_timeout_scale
    if waits_for_slot:
        timeout += settings.slot_wait_limit
    return Policy(retries, [base * 2**n for n in range(max(retries, 1))], timeout)


@cache
def step_task(step_id: str, *, waits_for_slot: bool = False) -> Task[Any, Any]:
    """The Prefect task of a step, named by its label so the Prefect UI reads like the
    product, with the step's own retries and timeout."""
    settings = get_settings()
    step = catalogue.step(step_id)
    chosen = policy(step, settings, waits_for_slot=waits_for_slot)
    decorate = task(
        name=step.label,
        task_run_name=step.label,
        retries=chosen.retries,
        retry_delay_seconds=chosen.retry_delay_seconds,
        retry_jitter_factor=settings.retry_jitter_factor or None,
        retry_condition_fn=should_retry,
        on_failure=[failed_for_good],
        timeout_seconds=chosen.timeout_seconds,
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
