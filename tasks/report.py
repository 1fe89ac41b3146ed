"""What a flow run tells Prefect about its job beyond task and flow states: the run's own
name and tags, an event per step and job transition, and the job's summary and progress
artifacts. The shapes are `regjobs.observe`'s; this module only hands them to Prefect, and
never lets a failure to report fail the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.events import emit_event
from prefect.logging import get_run_logger

from regjobs import catalogue, ledger, observe
from regjobs.evidence import evidence_url
from regjobs.secrets import Scrubber
from regjobs.settings import Settings
from tasks.ledger_io import ledger_read


class _CancelIsNoError(logging.Filter):
    """Prefect logs every final state but Completed at ERROR, and a task run stopped by a
    flow-run cancel as a crash (PrefectHQ/prefect#9801). A cancel is someone's decision:
    a Cancelled run or task run, and while Prefect's runner is cancelling this process
    (its control intent is "cancel") its engine's stop lines, are logged at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO and self._about_a_cancel(str(record.msg)):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True

    @staticmethod
    def _about_a_cancel(message: str) -> bool:
        if message.startswith("Finished in state Cancelled"):
            return True
        engine_line = message.startswith(
            ("Finished in state", "Crash detected! Execution was cancelled")
        )
        return engine_line and _cancel_intent()


def _cancel_intent() -> bool:
    """Whether Prefect's runner has told this process it is cancelling it."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:  # pragma: no cover - a Prefect without the control channel
        return False
    return get_intent() == "cancel"


def quiet_cancel_logs() -> None:
    """Install the filter on Prefect's flow-run and task-run loggers (once)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _CancelIsNoError) for f in logger.filters):
            logger.addFilter(_CancelIsNoError())


def emit_step(job_id: str, step_id: str, status: str, **payload: Any) -> None:
    """`regjobs.step.<status>` about the step, related to its job."""
    with contextlib.suppress(Exception):
        emit_event(
            event=observe.step_event(status),
            resource=observe.step_resource(job_id, step_id, catalogue.step(step_id).label),
            related=[observe.job_resource(job_id)],
            payload={"job_id": job_id, "step_id": step_id, **payload},
        )


def emit_job(job_id: str, status: str, **payload: Any) -> None:
    """`regjobs.job.<status>` about the job."""
    with contextlib.suppress(Exception):
        emit_event(
            event=observe.job_event(status),
            resource=observe.job_resource(job_id),
            payload={"job_id": job_id, **payload},
        )


async def label_run(run: FlowRun, labels: observe.RunLabels) -> None:
    """Name and tag the flow run from its job, as the dispatcher would have, when an
    operator started it (the Prefect UI, `prefect deployment run`)."""
    tags = sorted({*run.tags, *labels.tags})
    if run.name == labels.name and set(labels.tags) <= set(run.tags):
        return
    try:
        async with get_client() as client:
            await client.update_flow_run(run.id, name=labels.name, tags=tags)
    except Exception:
        get_run_logger().warning("could not name the flow run after its job", exc_info=True)


class Report:
    """The job's summary artifact (markdown, key `job-<id>`: one collection per job, a new
    version as each step ends) and its progress artifact (percent)."""

    def __init__(
        self,
        job_id: str,
        organisation_id: str,
        settings: Settings,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.job_id = job_id
        self.organisation_id = organisation_id
        self.settings = settings
        #: The artifacts are text for people: the job's secrets are masked in them (the
        #: steps' results they quote are data, never masked where they are stored).
        self.scrubber = Scrubber([]) if scrubber is None else scrubber
        self.progress_id: UUID | None = None
        self.shown: tuple[int, str] | None = None
        #: When the artifacts were last written, or first asked for (the loop's clock), and
        #: the write put off until `artifact_seconds` after it.
        self._written: float | None = None
        self._later: asyncio.Task[None] | None = None
        self._writing = False

    @property
    def key(self) -> str:
        return f"job-{self.job_id}".lower()

    def job_url(self) -> str:
        return f"{self.settings.public_api_url.rstrip('/')}/api/registration-jobs/{self.job_id}"

    def _evidence(self, evidence_id: int) -> str:
        return evidence_url(self.settings, self.job_id, evidence_id, self.organisation_id)

    async def update(self, *, final: bool = False) -> None:
        """Write both artifacts again from the job's view, if it changed since. The last
        (`final`) is written before this returns, after any write under way; the others in
        the background, never holding up the steps, at most every `artifact_seconds`
        counted from the first ask (a write asked for sooner is made when that much time
        has passed): a job that ends within it writes its artifacts once, at its end."""
        if final:
            later, self._later = self._later, None
            if later is not None and self._writing:
                with contextlib.suppress(Exception):
                    await later  # (a write cut off half-way could land after the last)
            elif later is not None:
                later.cancel()
            self._written = asyncio.get_running_loop().time()
            await self._write()
            return
        if self._later is None:
            now = asyncio.get_running_loop().time()
            if self._written is None:
                self._written = now
            wait = self._written + self.settings.artifact_seconds - now
            self._later = asyncio.ensure_future(self._write_after(max(0.0, wait)))

    async def _write_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._written = asyncio.get_running_loop().time()
        self._writing = True
        try:
            await self._write()
        finally:
            self._writing = False
            if self._later is asyncio.current_task():
                self._later = None

    def close(self) -> None:
        """Drop a write put off for later (the run ends without a last write)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None

    async def _write(self) -> None:
        try:
            job = await ledger_read(ledger.public_view, job_id=self.job_id)
            markdown = self.scrubber.text(
                observe.summary_markdown(job, self.job_url(), self._evidence)
            )
            if self.shown == (job.progress_percent, markdown):
                return
            await acreate_markdown_artifact(
                markdown=markdown,
                key=self.key,
                description=(
                    f"{observe.markdown_text(job.restaurant_name)}: the job's steps "
                    f"({job.status.value})"
                ),
            )
            if self.progress_id is None:
                self.progress_id = await acreate_progress_artifact(
                    progress=float(job.progress_percent),
                    key=f"{self.key}-progress",
                    description=(
                        f"{observe.markdown_text(job.restaurant_name)}: percent of the job's "
                        "steps done"
                    ),
                )
            elif self.shown is None or self.shown[0] != job.progress_percent:
                await aupdate_progress_artifact(self.progress_id, float(job.progress_percent))
            self.shown = (job.progress_percent, markdown)
        except Exception:
            get_run_logger().warning("could not update the job's summary artifact", exc_info=True)
