"""The registration flow: walks the step graph and runs each step as soon as its needs are met.

No I/O of its own beyond the ledger: what a step does lives in `tasks`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Failed

from regjobs import catalogue, ledger
from regjobs.catalogue import StepStatus
from regjobs.settings import get_settings
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
    start = await asyncio.to_thread(ledger.begin_run, job_id=job_id, flow_run_id=run_id)
    settings = get_settings()
    logger.info("job %s, step mode %s", job_id, settings.step_mode.value)
    disabled = ledger.disabled_steps(start.config)
    reused = [s for s, st in start.steps.items() if st.status is StepStatus.COMPLETED]
    if reused:
        logger.info("reusing %d completed step(s): %s", len(reused), ", ".join(reused))

    running: dict[asyncio.Task[State[Any]], str] = {}
    async with step_resources(start.config, settings):
        while True:
            states = await asyncio.to_thread(ledger.step_states, job_id=job_id)
            statuses = {sid: st.status for sid, st in states.items()}
            # A submitted step may not have written its first ledger row yet.
            statuses.update({sid: StepStatus.RUNNING for sid in running.values()})
            plan = catalogue.walk(
                statuses, disabled, {sid: st.reason for sid, st in states.items()}
            )
            await asyncio.to_thread(ledger.skip_steps, job_id=job_id, reasons=plan.skipped)
            for sid in plan.ready:
                call = step_task(sid)(job_id, sid, return_state=True)
                running[asyncio.ensure_future(call)] = sid
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                running.pop(finished)

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
