"""The registration flow: walks the step graph and runs each step as soon as its needs are met.

No I/O of its own beyond the ledger: what a step does lives in `tasks`.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State, StateType
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed
from sqlalchemy.exc import IntegrityError

from regjobs import catalogue, ledger
from regjobs.catalogue import StepStatus
from regjobs.settings import Settings, get_settings
from tasks.steps import step_resources, step_task


@flow(
    name="registration-job",
    persist_result=False,
    validate_parameters=True,
)
async def registration_job(job_id: str) -> State[Any] | dict[str, Any]:
    """Run (or resume) one registration job; its steps' results come from the ledger."""
    logger = get_run_logger()
    run_id = flow_run.get_id()
    own_state, other_active = await _prefect_view(job_id, run_id)
    if other_active:
        message = f"flow run {other_active} is already running this job; not starting another"
        logger.error(message)
        return Failed(message=message)
    try:
        start = await asyncio.to_thread(
            ledger.begin_run,
            job_id=job_id,
            flow_run_id=run_id,
            cancelling=own_state in (StateType.CANCELLING, StateType.CANCELLED),
        )
    except ledger.RunRefused as refused:
        return Cancelled(message=str(refused))
    except IntegrityError:
        message = "the restaurant has another active registration job; not resuming this one"
        logger.error(message)
        return Failed(message=message)
    settings = get_settings()
    logger.info("job %s, step mode %s", job_id, settings.step_mode.value)
    disabled = ledger.disabled_steps(start.config)
    reused = [s for s, st in start.steps.items() if st.status is StepStatus.COMPLETED]
    if reused:
        logger.info("reusing %d completed step(s): %s", len(reused), ", ".join(reused))

    lease = asyncio.ensure_future(_keep_alive(job_id, settings.heartbeat_seconds))
    try:
        return await _run_steps(job_id, run_id, start, disabled, settings)
    finally:
        lease.cancel()


async def _keep_alive(job_id: str, every: float) -> None:
    """Renew the job's lease while this process works on it (the API fails a job whose
    lease runs out: its worker died with it, or it hangs)."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(ledger.heartbeat, job_id=job_id)
        except Exception:  # a missed beat is not fatal; several are, by design
            get_run_logger().warning("could not renew the job's lease", exc_info=True)


async def _run_steps(
    job_id: str,
    run_id: str | None,
    start: ledger.RunStart,
    disabled: frozenset[str],
    settings: Settings,
) -> State[Any] | dict[str, Any]:
    """Submit every step as soon as its needs are met, until none is left to run."""
    logger = get_run_logger()
    running: dict[asyncio.Task[State[Any]], str] = {}
    async with step_resources(job_id, run_id or job_id, start.config, settings):
        while True:
            states = await asyncio.to_thread(ledger.step_states, job_id=job_id)
            statuses = {sid: st.status for sid, st in states.items()}
            # A submitted step may not have written its first ledger row yet.
            statuses.update({sid: StepStatus.RUNNING for sid in running.values()})
            plan = catalogue.walk(
                statuses, disabled, {sid: st.reason for sid, st in states.items()}
            )
            if await asyncio.to_thread(ledger.cancel_requested, job_id=job_id):
                logger.info("the job was cancelled: no further step starts")
                plan = catalogue.Plan()
            await asyncio.to_thread(ledger.skip_steps, job_id=job_id, reasons=plan.skipped)
            for sid in plan.ready:
                call = step_task(sid)(job_id, sid, return_state=True)
                running[asyncio.ensure_future(call)] = sid
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                running.pop(finished)

    if await asyncio.to_thread(ledger.cancel_requested, job_id=job_id):
        return Cancelled(message="the job was cancelled")
    final = await asyncio.to_thread(ledger.step_states, job_id=job_id)
    error = ledger.failure_summary(final)
    if error or not ledger.completed_ok(final.values()):
        message = error or "the job ended with steps not completed"
        await asyncio.to_thread(
            ledger.finish_run, job_id=job_id, status="failed", error_message=message
        )
        return Failed(message=message)
    await asyncio.to_thread(
        ledger.finish_run, job_id=job_id, status="completed", error_message=None
    )
    return {"job_id": job_id, "status": "completed"}


#: A cancelling run starts no step (the job is flagged) and is being stopped: not in the way.
_ACTIVE = {StateType.RUNNING, StateType.PENDING, StateType.PAUSED}


async def _prefect_view(job_id: str, run_id: str | None) -> tuple[StateType | None, str | None]:
    """This flow run's own state, and another flow run of the job still active, if any.

    Two flow runs of one job at once (an operator's `prefect deployment run` while the
    API's run is going) would run steps twice: the later one declines.
    """
    other, _ = await asyncio.to_thread(ledger.current_flow_run, job_id=job_id)
    async with get_client() as client:
        own = await client.read_flow_run(UUID(run_id)) if run_id else None
        other_run = await client.read_flow_run(UUID(other)) if other and other != run_id else None
    own_state = own.state.type if own and own.state else None
    other_state = other_run.state.type if other_run and other_run.state else None
    return own_state, (other if other_state in _ACTIVE else None)
