"""`regjobs releases` and `regjobs jobs upgrade` (registered by `regjobs.cli`): releases,
the jobs and workers of each, and moving a job to another release; through the job database
(and Prefect for the workers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from regjobs.catalogue import StepStatus
from regjobs.settings import get_settings

console = Console(highlight=False)


def jobs_upgrade(
    job_id: str,
    to: Annotated[
        str | None, typer.Option("--to", help="a release's version (default: the newest)")
    ] = None,
) -> None:
    """Move a job to another release on purpose: its completed steps are reused by step id,
    the rest run on the new release's code; says which steps' code changed. (Through the
    job database, as `db` and `keys`: DATABASE_URL.)"""
    from regjobs import commands, ledger

    try:
        moved = commands.upgrade_job(job_id, to)
    except (ledger.JobNotFound, ledger.Conflict, ledger.UnknownRelease) as exc:
        console.print(f"[red]not moved:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"job {moved.job_id}: release {moved.from_version or '(none yet)'} -> {moved.to_version}"
    )
    if moved.changed:
        console.print(f"steps whose code changed in {moved.to_version}:")
        for step_id, status in moved.changed:
            fate = (
                "completed: its result is reused, not run again"
                if status == StepStatus.COMPLETED
                else f"{status}: will run on {moved.to_version}'s code"
            )
            console.print(f"  {step_id} ({fate})")
    else:
        console.print("no step's code changed between the two releases")
    console.print(f"{len(moved.reused)} completed step(s) reused")
    if moved.requeued:
        console.print(
            f"its waiting run was replaced by one on release {moved.to_version}'s work queue"
        )


def releases_ls() -> None:
    """Releases, with the active jobs on each (running, or waiting for a worker of it) and
    the workers polling its work queue: a release with neither running nor waiting jobs
    can have its workers stopped (drained)."""
    from regjobs import commands

    overview = commands.releases_overview()
    polls, workers = _release_workers()
    table = Table(
        Column("release", no_wrap=True),
        "queue",
        "active",
        "waiting",
        "workers",
        "queue polled",
        "drained",
        box=box.SIMPLE_HEAD,
    )
    now = datetime.now(UTC)
    for group in overview:
        polled = polls.get(group.queue)
        age = f"{(now - polled).total_seconds():.0f} s ago" if polled else "never"
        names = workers.get(group.version, [])
        table.add_row(
            group.version,
            group.queue,
            str(len(group.running)),
            str(len(group.waiting)),
            ", ".join(names) or "-",
            age if polls else "?",
            "yes" if not (group.running or group.waiting) else "no",
        )
    out = console if console.is_terminal else Console(highlight=False, width=240)
    out.print(table)
    for group in overview:  # the jobs themselves, below: the table stays narrow
        for what, ids in (("active", group.running), ("waiting", group.waiting)):
            if ids:
                out.print(f"{group.version} {what}: {' '.join(ids)}", soft_wrap=True)


def _release_workers() -> tuple[dict[str, datetime | None], dict[str, list[str]]]:
    """When each work queue of the pool was last polled, and the live workers of each
    release (named `...@<version>` by `python -m deployments.release worker`); empty
    where Prefect does not answer."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    if get_current_settings().api.url is None:
        return {}, {}
    pool = get_settings().work_pool
    try:
        with get_client(sync_client=True) as client:
            queues = client.read_work_queues(work_pool_name=pool)
            found = client.read_workers_for_work_pool(pool)
    except Exception as exc:
        console.print(f"[yellow]Prefect did not answer ({type(exc).__name__}); no workers[/]")
        return {}, {}
    workers: dict[str, list[str]] = {}
    for worker in found:
        if str(worker.status).upper().endswith("ONLINE") and "@" in worker.name:
            workers.setdefault(worker.name.rpartition("@")[2], []).append(worker.name)
    return {q.name: q.last_polled for q in queues}, workers
