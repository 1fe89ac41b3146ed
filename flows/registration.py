"""The registration flow: walks the step graph and runs each step as soon as its needs are met.

No I/O of its own beyond the ledger: what a step does lives in `tasks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed
from prefect.utilities.annotations import allow_failure
from sqlalchemy.exc import IntegrityError

from regjobs import catalogue, ledger
from regjobs.catalogue import JobStatus, StepId, StepStatus
from regjobs.settings import Settings, get_settings
from tasks.ledger_io import ledger_read, ledger_write
from tasks.report import Report, emit_job, emit_step, label_run, quiet_cancel_logs
from tasks.steps import marker_task, step_resources, step_task

quiet_cancel_logs()

#: How long running steps have to stop by themselves once the job is no longer the run's.
STOP_GRACE_SECONDS = 10.0


@flow(
    name="registration-job",
    persist_result=False,
    validate_parameters=True,
)
async def registration_job(
    job_id: str, from_step: StepId | None = None
) -> State[Any] | dict[str, Any]:
    """Run (or resume) one registration job; its steps' results come from the ledger.

    Args:
        job_id: The registration job's id (as the API has it).
        from_step: For a job that has ended: run this step and every step that depends on
            it again, even if they completed (as the API's retry with `from_step`).
    """
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
            from_step=StepId(from_step).value if from_step else None,
        )
    except ledger.RunRefused as refused:
        logger.warning("not running the job: %s", refused)
        return Cancelled(message=str(refused))
    except IntegrityError:
        message = "the restaurant has another active registration job; not resuming this one"
        logger.error(message)
        return Failed(message=message)
    settings = get_settings()
    if start.labels is not None:
        await label_run(run, start.labels)
    logger.info(
        "job %s, step mode %s, epoch %d%s",
        job_id,
        settings.step_mode.value,
        start.epoch,
        f", again from {StepId(from_step).value}" if from_step else "",
    )

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
    graph = TaskGraph(job_id)
    report = Report(job_id, start.organisation_id, settings)
    lost = asyncio.ensure_future(owner.lost.wait())
    async with step_resources(
        job_id, epoch, run_id, start.config, settings, start.organisation_id
    ) as resources:
        try:
            reused = [
                s for s in catalogue.STEP_IDS if start.steps[s].status is StepStatus.COMPLETED
            ]
            if reused:
                logger.info("reusing %d completed step(s): %s", len(reused), ", ".join(reused))
            await graph.mark_all("Reused", dict.fromkeys(reused, "completed in an earlier run"))
            await report.update()
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
                for sid, reason in plan.skipped.items():
                    logger.info("%s skipped: %s", catalogue.step(sid).label, reason)
                    emit_step(job_id, sid, "skipped", reason=reason)
                await graph.mark_all("Skipped", plan.skipped)
                if plan.skipped:
                    await report.update()
                for sid in plan.ready:
                    call = step_task(sid)(
                        job_id, sid, wait_for=graph.upstream(sid), return_state=True
                    )
                    running[asyncio.ensure_future(call)] = sid
                if not running:
                    break
                done, _ = await asyncio.wait([*running, lost], return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished is not lost:
                        task = cast("asyncio.Task[State[Any]]", finished)
                        sid = running.pop(task)
                        if not task.cancelled() and task.exception() is None:
                            graph.ran(sid, task.result())
                await report.update()
        finally:
            lost.cancel()
            if running:
                # The job is no longer ours (or the flow is being stopped): stop the steps
                # now, closing their browsers and aborting their requests.
                # Each step ends its task run Cancelled; one that does not within the
                # grace period is cancelled from here (Prefect then calls it crashed).
                logger.info("stopping %d running step(s)", len(running))
                resources.stop.set()
                _, late = await asyncio.wait(running, timeout=STOP_GRACE_SECONDS)
                for step in late:
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
        await report.update()
        emit_job(job_id, JobStatus.FAILED.value, error=message)
        return Failed(message=message)
    await ledger_write(
        ledger.finish_run,
        job_id=job_id,
        epoch=epoch,
        status=JobStatus.COMPLETED,
        error_message=None,
    )
    await report.update()
    emit_job(job_id, JobStatus.COMPLETED.value)
    return {"job_id": job_id, "status": "completed"}


class TaskGraph:
    """Each step's task run in this flow run, so that every task run names its upstream
    steps' runs (`wait_for`) and Prefect draws the job's graph; a step that does not run
    here (skipped, or reused from an earlier run) is a task run that ends at once."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.states: dict[str, State[Any]] = {}

    def upstream(self, step_id: str) -> list[Any]:
        # `allow_failure`: a skipped step's upstream may have failed; it is an edge only.
        return [
            allow_failure(self.states[n]) for n in catalogue.step(step_id).needs if n in self.states
        ]

    def ran(self, step_id: str, state: State[Any]) -> None:
        self.states[step_id] = state

    async def mark_all(self, outcome: str, reasons: Mapping[str, str]) -> None:
        """Mark these steps, those whose upstream is marked first, the rest at once."""
        left = dict(reasons)
        while left:
            ready = [s for s in left if not set(catalogue.step(s).needs) & set(left)]
            await asyncio.gather(*(self.mark(s, outcome, left.pop(s)) for s in ready))

    async def mark(self, step_id: str, outcome: str, reason: str) -> None:
        marker = marker_task(step_id)
        self.states[step_id] = await marker(
            self.job_id,
            step_id,
            outcome,
            reason,
            wait_for=self.upstream(step_id),
            return_state=True,
        )
