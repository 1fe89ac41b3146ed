"""Create the work pool, the browser concurrency limit and the deployment; safe to run
again (idempotent). Reads the same settings as everything else.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.setup

Also the deployment's pull step (`project_directory`, named in prefect.yaml): where a flow
run finds the code on the worker's machine, decided there when the run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.events.actions import ActionTypes, DoNothing, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

from regjobs import release
from regjobs.observe import WAITING_EVENT
from regjobs.settings import PROJECT_DIR, Settings, get_settings

PREFECT = [sys.executable, "-m", "prefect"]
#: The worker's setting: the project's folder on its machine.
PROJECT_DIR_ENV = "REGJOBS_PROJECT_DIR"
#: The deployment's entrypoint file (prefect.yaml), relative to the project's folder.
ENTRYPOINT_FILE = Path("flows") / "registration.py"


def project_directory() -> dict[str, str]:
    """The deployment's pull step, run by each flow-run process before it loads the flow:
    enter the project's folder on this machine and answer it as `directory` (Prefect loads
    the entrypoint from there).

    The folder is `REGJOBS_PROJECT_DIR` from the flow-run process's environment (the
    worker's), else the folder this module was imported from (an editable install or a
    checkout: the code the worker already runs). The deployment records only this step's
    name, never a folder: whatever machine ran `prefect deploy`, each worker decides here.
    (A `{{ $VAR }}` template would not do: `prefect deploy` resolves environment templates
    in pull steps with its own environment whenever the variable is set there.)
    """
    given = os.environ.get(PROJECT_DIR_ENV, "").strip()
    directory = Path(given).expanduser() if given else PROJECT_DIR
    if not (directory / ENTRYPOINT_FILE).is_file():
        where = (
            f"{PROJECT_DIR_ENV}={given}"
            if given
            else f"{PROJECT_DIR} (where the project is installed; {PROJECT_DIR_ENV} is unset)"
        )
        raise RuntimeError(
            f"no registration-jobs project at {where}: {ENTRYPOINT_FILE} is not there. Set "
            f"{PROJECT_DIR_ENV} in the worker's environment to the project's folder on this "
            "machine (README, Production)"
        )
    # The flow's code (read from the folder) and the code this process already imported
    # (its environment: the ledger, the steps) must be one release, or a run could mix two.
    there, here = release.version_in(directory), release.current().version
    if there != here:
        raise RuntimeError(
            f"{PROJECT_DIR_ENV}={directory} holds release {there}, but this worker's "
            f"environment runs release {here}: start each release's worker from its own "
            "folder (python -m deployments.release worker; README, Production)"
        )
    resolved = str(directory.resolve())
    os.chdir(resolved)
    return {"directory": resolved}


def _run(args: list[str]) -> str:
    result = subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def set_up(settings: Settings) -> None:
    asyncio.run(_pool_and_limit(settings))
    _run([*PREFECT, "--no-prompt", "deploy", "--all"])
    alert_automation(settings)
    waiting_automation(settings)


async def _pool_and_limit(settings: Settings) -> None:
    """The work pool (a process pool with Prefect's default job template, as `prefect
    work-pool create --type process` makes it) and the browser limit, one for the browser
    steps of every worker on every machine: made, or the limit brought up to date, through
    Prefect's client (four CLI processes did this, each one importing Prefect, ~2 s). A
    set-up running at the same moment may make either first."""
    async with get_client() as client:
        try:
            await client.read_work_pool(settings.work_pool)
        except ObjectNotFound:
            pool = WorkPoolCreate(
                name=settings.work_pool,
                type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(work_pool=pool)
        name, limit = settings.browser_limit_name, settings.browser_limit
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
                return
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit)
        )


#: The example automation the set-up makes (README, "Operating it with Prefect").
ALERT_AUTOMATION = "regjobs: a job failed or stalled"


def alert_automation(settings: Settings) -> None:
    """An automation on the jobs' Prefect events: a failed job (`regjobs.job.failed`) or
    a stalled one or step (`regjobs.job.stalled`, `regjobs.step.stalled`) sends a
    notification through REGJOBS_ALERT_BLOCK_ID's block, or only records that it fired."""
    trigger = EventTrigger(
        expect={"regjobs.job.failed", "regjobs.job.stalled", "regjobs.step.stalled"},
        match={"prefect.resource.id": "regjobs.job.*"},
        posture=Posture.Reactive,
        threshold=1,
    )
    actions: list[ActionTypes] = [DoNothing()]
    if settings.alert_block_id is not None:
        actions = [
            SendNotification(
                block_document_id=settings.alert_block_id,
                subject="registration job: {{ event.event }}",
                body="{{ event.event }} for {{ event.resource.id }}: {{ event.payload }}",
            )
        ]
    asyncio.run(
        _apply(
            Automation(
                name=ALERT_AUTOMATION,
                description=alert_automation.__doc__ or "",
                trigger=trigger,
                actions=actions,
            )
        )
    )


#: The automation telling someone a job waits for a person (README, "Waiting for a person").
WAITING_AUTOMATION = "regjobs: a job waits for a person"


def waiting_automation(settings: Settings) -> None:
    """An automation on `regjobs.job.waiting-for-input` (a step needs a person's corrected
    input; its payload names the step, the fields, the deadline and how to answer): a
    notification through REGJOBS_ALERT_BLOCK_ID's block, or only a record that it fired."""
    actions: list[ActionTypes] = [DoNothing()]
    if settings.alert_block_id is not None:
        actions = [
            SendNotification(
                block_document_id=settings.alert_block_id,
                subject="registration job waits for a person",
                body="Job {{ event.payload.job_id }}: {{ event.payload.step_id }} needs "
                "{{ event.payload.fields | join(', ') }} by {{ event.payload.expires_at }}. "
                "{{ event.payload.how }}",
            )
        ]
    trigger = EventTrigger(
        expect={WAITING_EVENT},
        match={"prefect.resource.id": "regjobs.job.*"},
        posture=Posture.Reactive,
        threshold=1,
    )
    asyncio.run(
        _apply(
            Automation(
                name=WAITING_AUTOMATION,
                description=waiting_automation.__doc__ or "",
                trigger=trigger,
                actions=actions,
            )
        )
    )


async def _apply(wanted: Automation) -> None:
    """Create the automation, or bring the one of that name up to date."""
    try:
        automation = await Automation.aread(name=wanted.name)
    except ValueError:
        await wanted.acreate()
        return
    automation.description = wanted.description
    automation.trigger, automation.actions = wanted.trigger, wanted.actions
    await automation.aupdate()


if __name__ == "__main__":
    current = get_settings()
    set_up(current)
    sys.stdout.write(
        f"work pool {current.work_pool!r}, browser limit {current.browser_limit_name!r} "
        f"({current.browser_limit}), deployment 'registration-job' and automation "
        f"{ALERT_AUTOMATION!r} are ready\n"
    )
