"""The registration flow: walks the step graph and runs each step as soon as its needs are met.

No I/O of its own beyond the ledger: what a step does lives in `tasks`.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed
from sqlalchemy.exc import IntegrityError

from regjobs import catalogue, ledger
from regjobs.catalogue import JobStatus, StepStatus
from regjobs.settings import Settings, get_settings
from tasks.steps import ledger_read, ledger_write, step_resources, step_task


@flow(
    name="registration-job",
    persist_result=False,
    validate_parameters=True,
)
async def registration_job(job_id: str) -> State[Any] | dict[str, Any]:
    """Run (or resume) one registration job; its steps' results come from the ledger."""
    logger = get_run_logger()
    run = await _own_flow_run()
    state = run.state.type if run.state else None
    try:
        start = await ledger_write(
            ledger.begin_run,
            job_id=job_id,
            flow_run_id=str(run.id),
            generation=_generation(job_id, run.idempotency_key),
            run_count=max(run.run_count, 1),
            cancelling=state in (StateType.CANCELLING, StateType.CANCELLED),
        )
    except ledger.RunRefused as refused:
        logger.warning("not running the job: %s", refused)
        return Cancelled(message=str(refused))
    except IntegrityError:
        message = "the restaurant has another active registration job; not resuming this one"
        logger.error(message)
        return Failed(message=message)
    settings = get_settings()
    logger.info("job %s, step mode %s, epoch %d", job_id, settings.step_mode.value, start.epoch)
    reused = [s for s, st in start.steps.items() if st.status is StepStatus.COMPLETED]
    if reused:
        logger.info("reusing %d completed step(s): %s", len(reused), ", ".join(reused))

    owner = Ownership(job_id, start.epoch)
    lease = asyncio.ensure_future(owner.keep(settings))
    try:
        return await _run_steps(owner, str(run.id), start, settings)
    except ledger.OwnershipLost as lost:
        logger.info("%s", lost)
        return Cancelled(message=str(lost))
    finally:
        lease.cancel()


async def _own_flow_run() -> FlowRun:
    """This flow run as Prefect has it now (its state may have moved to Cancelling)."""
    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run.get_id()))


def _generation(job_id: str, idempotency_key: str | None) -> int | None:
    """The run request a flow run was made for: the dispatcher's idempotency key is
    `<job id>:<generation>`; an operator's run has none."""
    prefix, _, generation = (idempotency_key or "").rpartition(":")
    return int(generation) if prefix == job_id and generation.isdigit() else None


class Ownership:
    """The flow run's hold on its job: renews the lease, and notices at once when a cancel,
    a retry or another run has taken the job (a newer epoch)."""

    def __init__(self, job_id: str, epoch: int) -> None:
        self.job_id = job_id
        self.epoch = epoch
        self.lost = asyncio.Event()
        self.reason = ""

    async def check(self) -> None:
        """Raise OwnershipLost if the job is no longer this run's."""
        if not self.lost.is_set():
            reason = await ledger_read(ledger.holds, job_id=self.job_id, epoch=self.epoch)
            if reason:
                self._lose(reason)
        if self.lost.is_set():
            raise ledger.OwnershipLost(self.reason)

    def _lose(self, reason: str) -> None:
        self.reason = reason
        self.lost.set()

    async def keep(self, settings: Settings) -> None:
        """Check the epoch every `ownership_check_seconds` (a read) and renew the lease
        every `heartbeat_seconds` (a write); the reconciler fails a job whose lease runs
        out (its worker died with it, or it hangs)."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not self.lost.is_set():
            await asyncio.sleep(settings.ownership_check_seconds)
            try:
                if loop.time() - renewed >= settings.heartbeat_seconds:
                    held = await ledger_write(
                        ledger.heartbeat, job_id=self.job_id, epoch=self.epoch
                    )
                    renewed = loop.time()
                    if not held:
                        self._lose(await self._why())
                else:
                    await self.check()
            except ledger.OwnershipLost:
                return
            except Exception:  # a missed beat is not fatal; several are, by design
                get_run_logger().warning("could not renew the job's lease", exc_info=True)

    async def _why(self) -> str:
        return (
            await ledger_read(ledger.holds, job_id=self.job_id, epoch=self.epoch)
            or "the job was taken over"
        )


async def _run_steps(
    owner: Ownership, run_id: str, start: ledger.RunStart, settings: Settings
) -> State[Any] | dict[str, Any]:
    """Submit every step as soon as its needs are met, until none is left to run; stop the
    running ones at once if the job is taken from this run."""
    logger = get_run_logger()
    job_id, epoch = owner.job_id, owner.epoch
    disabled = ledger.disabled_steps(start.config)
    running: dict[asyncio.Task[State[Any]], str] = {}
    lost = asyncio.ensure_future(owner.lost.wait())
    async with step_resources(job_id, epoch, run_id, start.config, settings, start.organisation_id):
        try:
            while True:
                await owner.check()
                states = await ledger_read(ledger.step_states, job_id=job_id)
                statuses = {sid: st.status for sid, st in states.items()}
                # A submitted step may not have written its first ledger row yet.
                statuses.update({sid: StepStatus.RUNNING for sid in running.values()})
                plan = catalogue.walk(
                    statuses, disabled, {sid: st.reason for sid, st in states.items()}
                )
                await ledger_write(
                    ledger.skip_steps, job_id=job_id, epoch=epoch, reasons=plan.skipped
                )
                for sid in plan.ready:
                    call = step_task(sid)(job_id, sid, return_state=True)
                    running[asyncio.ensure_future(call)] = sid
                if not running:
                    break
                done, _ = await asyncio.wait([*running, lost], return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished is not lost:
                        running.pop(finished)  # type: ignore[arg-type]
        finally:
            lost.cancel()
            if running:
                # The job is no longer ours (or the flow is being stopped): stop the steps
                # now, closing their browsers and aborting their requests.
                logger.info("stopping %d running step(s)", len(running))
                for step in running:
                    step.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    final = await ledger_read(ledger.step_states, job_id=job_id)
    error = ledger.failure_summary(final)
    if error or not ledger.completed_ok(final.values()):
        message = error or "the job ended with steps not completed"
        await ledger_write(
            ledger.finish_run,
            job_id=job_id,
            epoch=epoch,
            status=JobStatus.FAILED,
            error_message=message,
        )
        return Failed(message=message)
    await ledger_write(
        ledger.finish_run,
        job_id=job_id,
        epoch=epoch,
        status=JobStatus.COMPLETED,
        error_message=None,
    )
    return {"job_id": job_id, "status": "completed"}
