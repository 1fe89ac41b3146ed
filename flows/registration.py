"""The registration flow: walks the step graph and runs each step as soon as its needs are met.

No I/O of its own beyond the ledger: what a step does lives in `tasks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NoReturn, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.flow_runs import asuspend_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed
from prefect.utilities.annotations import allow_failure
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from regjobs import catalogue, ledger, observe, release, translate
from regjobs.catalogue import JobStatus, StepId, StepStatus
from regjobs.doorbell import Doorbell
from regjobs.secrets import Scrubber
from regjobs.settings import Settings, get_settings
from tasks.ledger_io import ledger_read, ledger_write
from tasks.report import Report, emit_job, emit_step, label_run, quiet_cancel_logs
from tasks.steps import marker_task, step_resources, step_task

quiet_cancel_logs()

#: How long running steps have to stop by themselves once the job is no longer the run's.
STOP_GRACE_SECONDS = 10.0


@flow(
    name="registration-job",
    # The release this code is (`regjobs.release`): each flow run shows it in the Prefect
    # UI as its flow version (the deployment's version says what was deployed when the run
    # was made; a retry of an older release's job runs that release's code).
    version=release.current().version,
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
            cancelling=translate.is_cancelling(state),
            from_step=StepId(from_step).value if from_step else None,
            code_version=release.current().version,
        )
    except ledger.RunRefused as refused:
        logger.warning("not running the job: %s", refused)
        return Cancelled(message=str(refused))
    except IntegrityError:
        message = "the restaurant has another active registration job; not resuming this one"
        logger.error(message)
        return Failed(message=message)
    except ledger.ConfigInvalid as invalid:
        # Names each field and what is wrong, never a value (the config holds passwords).
        message = str(invalid)
        logger.error("%s", message)
        await ledger_write(
            ledger.refuse_start,
            job_id=job_id,
            flow_run_id=str(run.id),
            generation=_generation(job_id, run.idempotency_key),
            message=message,
        )
        return Failed(message=message)
    settings = get_settings()
    if start.labels is not None:
        await label_run(run, start.labels)
    logger.info(
        "job %s, release %s, step mode %s, epoch %d%s",
        job_id,
        release.current().version,
        settings.step_mode.value,
        start.epoch,
        f", again from {StepId(from_step).value}" if from_step else "",
    )

    if start.resumed:
        _log_resume(job_id, start)

    owner = Ownership(job_id, start.epoch)
    lease = asyncio.ensure_future(owner.keep(settings))
    try:
        outcome = await _run_steps(owner, str(run.id), start, settings)
    except ledger.OwnershipLost as lost:
        logger.info("%s", lost)
        return Cancelled(message=str(lost))
    finally:
        lease.cancel()
    if isinstance(outcome, ledger.Waiting):
        # Every step ended and the browser is closed: nothing is held from here on.
        await _wait_for_person(job_id, start.epoch, outcome, settings)
    return outcome


class ConfigVersion(RunInput):
    """What a suspended run is resumed with: the number of the config version a person's
    input stored (encrypted, in the job database). Never a value: Prefect keeps run
    inputs in plain text (its `flow_run_input` table)."""

    config_version: int = Field(
        ge=1,
        description="The job's config version to go on with; the API sets it. A resume "
        "with the version the run already had changes nothing: it waits again.",
    )


def _input_description(job_id: str, waiting: ledger.Waiting) -> str:
    steps = ", ".join(catalogue.step(s).label for s in waiting.step_ids)
    fields = ", ".join(f"`{f}`" for f in waiting.fields)
    return (
        f"**{steps}** needs a person to correct {fields}.\n\n"
        f"{observe.INPUT_HOW.format(job_id=job_id)} Do not resume from here: the value "
        "is not typed into Prefect (a run input is stored in plain text)."
    )


async def _wait_for_person(
    job_id: str, epoch: int, waiting: ledger.Waiting, settings: Settings
) -> NoReturn:
    """Suspend the flow run until a person's input resumes it (Prefect ends this process;
    a worker starts the run again from the top, and `begin_run` knows it for a resume).
    Raises Prefect's Pause: it does not return."""
    logger = get_run_logger()
    if waiting.resume_now:
        logger.info(
            "a person's input came while steps were running: suspending so that the run "
            "goes on with the new config (resumed at once)"
        )
    else:
        logger.warning(
            "waiting for a person: %s needs %s corrected (%s); until %s. %s",
            ", ".join(catalogue.step(s).label for s in waiting.step_ids),
            ", ".join(waiting.fields),
            waiting.reason,
            f"{waiting.expires_at:%Y-%m-%d %H:%M} UTC" if waiting.expires_at else "-",
            observe.INPUT_HOW.format(job_id=job_id),
        )
        emit_job(
            job_id,
            observe.WAITING_EVENT.removeprefix("regjobs.job."),
            step_id=waiting.step_ids[0] if waiting.step_ids else None,
            fields=list(waiting.fields),
            expires_at=waiting.expires_at.isoformat() if waiting.expires_at else None,
            how=observe.INPUT_HOW.format(job_id=job_id),
        )
    wait_for = ConfigVersion.with_initial_data(
        description=_input_description(job_id, waiting), config_version=waiting.config_version
    )
    await asuspend_flow_run(
        wait_for_input=wait_for,
        timeout=max(1, int(settings.input_timeout)),
        # One suspension per epoch (each begin takes a new one): a key Prefect saw before
        # would make it answer with the earlier input instead of suspending.
        key=f"input-{epoch}",
    )
    raise RuntimeError("Prefect did not suspend the flow run (the suspension key was used)")


def _log_resume(job_id: str, start: ledger.RunStart) -> None:
    logger = get_run_logger()
    waiting = [s for s, st in start.steps.items() if st.status is StepStatus.ACTION_REQUIRED]
    if waiting:
        logger.warning(
            "resumed without a new config version (still version %d): %s still waits for a "
            "person, so the run suspends again. %s",
            start.config_version,
            ", ".join(catalogue.step(s).label for s in waiting),
            observe.INPUT_HOW.format(job_id=job_id),
        )
    else:
        logger.info("resumed with config version %d", start.config_version)


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
        reason = None
        if not self.lost.is_set():
            reason = await ledger_read(ledger.holds, job_id=self.job_id, epoch=self.epoch)
        self.judge(reason)

    def judge(self, reason: str | None) -> None:
        """Raise OwnershipLost if the job is no longer this run's: `reason` is what a read
        of the ledger said (`ledger.holds`), or what was seen before."""
        if reason and not self.lost.is_set():
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
) -> State[Any] | dict[str, Any] | ledger.Waiting:
    """Submit every step as soon as its needs are met, until none is left to run; stop the
    running ones at once if the job is taken from this run. When what is left waits for a
    person, the run's resources are given back and it says so (`ledger.Waiting`)."""
    logger = get_run_logger()
    job_id, epoch = owner.job_id, owner.epoch
    disabled = ledger.disabled_steps(start.config)
    running: dict[asyncio.Task[State[Any]], str] = {}
    graph = TaskGraph(job_id)
    # The job's secrets, and what it shows anyway (its config's strings, its restaurant id).
    scrubber = Scrubber.for_job(start.config, start.labels.restaurant_id if start.labels else "")
    report = Report(job_id, start.organisation_id, settings, scrubber)
    lost = asyncio.ensure_future(owner.lost.wait())
    waiting: ledger.Waiting | None = None
    async with step_resources(
        job_id, epoch, run_id, start.config, settings, start.organisation_id, scrubber
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
                # One read: the steps' states, then the job's epoch and config version (a
                # person's input that queued a step again is seen, and its step is not
                # started with this run's older config).
                seen = await ledger_read(ledger.walk_state, job_id=job_id, epoch=epoch)
                owner.judge(seen.lost)
                states = seen.states
                stale = seen.config_version != start.config_version
                statuses = {sid: st.status for sid, st in states.items()}
                # A submitted step may not have written its first ledger row yet.
                statuses.update({sid: StepStatus.RUNNING for sid in running.values()})
                plan = catalogue.walk(
                    statuses, disabled, {sid: st.reason for sid, st in states.items()}
                )
                if plan.skipped:
                    await ledger_write(
                        ledger.skip_steps, job_id=job_id, epoch=epoch, reasons=plan.skipped
                    )
                for sid, reason in plan.skipped.items():
                    logger.info("%s skipped: %s", catalogue.step(sid).label, reason)
                    emit_step(job_id, sid, StepStatus.SKIPPED, reason=reason)
                await graph.mark_all("Skipped", plan.skipped)
                if plan.skipped:
                    await report.update()
                for sid in [] if stale else plan.ready:
                    prefect_task = step_task(
                        sid, waits_for_slot=resources.waits_for_slot(catalogue.step(sid))
                    )
                    call = prefect_task(sid, wait_for=graph.upstream(sid), return_state=True)
                    running[asyncio.ensure_future(call)] = sid
                if not running:
                    asks = any(st is StepStatus.ACTION_REQUIRED for st in statuses.values())
                    if not (asks or stale):
                        break
                    waiting = await ledger_write(
                        ledger.suspend_run,
                        job_id=job_id,
                        epoch=epoch,
                        flow_run_id=run_id,
                        config_version=start.config_version,
                    )
                    if waiting is not None:
                        # Written now: the run suspends, and its process ends, next.
                        await report.update(final=True)
                        break
                    continue  # a person's input came in between: go on
                done, _ = await asyncio.wait([*running, lost], return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished is not lost:
                        task = cast("asyncio.Task[State[Any]]", finished)
                        sid = running.pop(task)
                        if not task.cancelled() and task.exception() is None:
                            graph.ran(sid, task.result())
                await report.update()
        except BaseException:
            report.close()  # no last write comes: drop the one put off
            raise
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

    if waiting is not None:
        return waiting
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
        await wake_dispatcher()
        await report.update(final=True)
        emit_job(job_id, JobStatus.FAILED.value, error=message)
        return Failed(message=message)
    await ledger_write(
        ledger.finish_run,
        job_id=job_id,
        epoch=epoch,
        status=JobStatus.COMPLETED,
        error_message=None,
    )
    await wake_dispatcher()
    await report.update(final=True)
    emit_job(job_id, JobStatus.COMPLETED.value)
    return {"job_id": job_id, "status": JobStatus.COMPLETED.value}


async def wake_dispatcher() -> None:
    """The job ended: its organisation's next run request may be handed to Prefect now
    (`Settings.org_flow_run_share`), not at the reconciler's next cycle."""
    doorbell = Doorbell(get_settings().sqlalchemy_url)
    await asyncio.to_thread(doorbell.ring, wait=True)


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
