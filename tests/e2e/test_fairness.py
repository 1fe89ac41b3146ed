"""Fairness between organisations on the real system: one organisation's backlog does not
queue another's single job behind it (docs/design.md, "Fair between organisations").

The system under test is the embedded one (`Stack`) with Prefect's database on PostgreSQL,
as in the production shape, the shape several organisations share. With Prefect's server on
SQLite, the busy organisation's runs write so much that the worker's own calls to Prefect
(labelling a run before proposing Submitting) are answered `503` (SQLite busy; Prefect's
client then backs off 2, 4, 8... s: PrefectHQ/prefect#8950, #9938): the single job then
waited 9.6 s, 19 s, or over 60 s in 3 of 7 runs, 0 `503`s and 3.7-4.4 s in 6 of 6 runs on
PostgreSQL (docs/figures.md, "The fairness test on Prefect's PostgreSQL").
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from deployments.stack import Stack, free_port
from deployments.stack_config import StackConfig
from regjobs.db import read_session, scratch_postgres_database
from regjobs.models import JobRun, RegistrationJob
from regjobs.settings import Settings
from tests.helpers import (
    end_leftover_jobs,
    environment,
    full_config,
    new_key,
    scratch_job_database,
    wait_for,
)

# Serial: its 5-s bound is about this system's own queue, so it runs before the other test
# files, alone, not beside them on the same two cores (`make test`, `.ci/run`).
pytestmark = [pytest.mark.e2e, pytest.mark.serial]

BACKLOG = 300


def client(stack: Stack, organisation: str) -> httpx.Client:
    key = new_key(stack, organisation)
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def shared_system(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], pg_admin_url: str
) -> Iterator[Stack]:
    """A test system of this module's own (state folder, ports, job database), its Prefect
    server on a scratch PostgreSQL database."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    folder = tmp_path_factory.mktemp("fairness")
    state = folder / "state"
    with contextlib.ExitStack() as resources:
        jobs_db = resources.enter_context(scratch_job_database(folder, pg_admin_url))
        prefect_db = resources.enter_context(
            scratch_postgres_database(pg_admin_url, "rj_fair_prefect")
        )
        env = {
            **stack_env,
            "DATABASE_URL": jobs_db,
            "REGJOBS_STATE_DIR": str(state),
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db.replace("+psycopg2", "+asyncpg"),
        }
        resources.enter_context(environment(env))
        config = StackConfig(
            state_dir=Path(state),
            api_port=free_port(),
            prefect_port=free_port(),
            standin_port=free_port(),
            env=env,
            prefect_ui=False,
            # What a start takes in production: the default poll, not the test systems' 1 s.
            poll_seconds=Settings.model_fields["worker_poll_seconds"].default,
        )
        system = Stack(config)
        resources.callback(system.stop)
        system.start_all()
        resources.enter_context(
            temporary_settings(updates={PREFECT_API_URL: config.prefect_api_url})
        )
        yield system


@pytest.fixture
def organisations(shared_system: Stack) -> Iterator[tuple[httpx.Client, ...]]:
    tag = uuid.uuid4().hex[:8]
    busy, quiet = client(shared_system, f"busy-{tag}"), client(shared_system, f"quiet-{tag}")
    try:
        yield busy, quiet
    finally:
        busy.close()
        quiet.close()
        # Every job this test made ends here, and their flow-run processes with them.
        ended = end_leftover_jobs(timeout=120)
        print(f"ended {len(ended)} jobs")


def not_handed_over(job_ids: list[str]) -> int:
    """Of these jobs, how many run requests wait to be handed to Prefect."""
    with read_session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(JobRun)
                .where(
                    JobRun.job_id.in_(job_ids),
                    JobRun.flow_run_id.is_(None),
                    JobRun.stopped_at.is_(None),
                )
            )
            or 0
        )


def story_of(job_id: str) -> str:
    """Where the single job's run is: in the job database, and in Prefect (its state's
    history), so a failure says what it waited for."""
    from prefect.client.orchestration import get_client

    with read_session() as session:
        run = session.scalars(select(JobRun).where(JobRun.job_id == job_id)).first()
    if run is None or run.flow_run_id is None:
        return f"run request {run and run.id}: not handed to Prefect"
    lines = [
        f"run request {run.id}: dispatched {run.dispatched_at}, start at {run.scheduled_at}, "
        f"began {run.began_at}, flow run {run.flow_run_id}"
    ]
    with get_client(sync_client=True) as client:
        for state in client.read_flow_run_states(uuid.UUID(run.flow_run_id)):
            lines.append(f"  {state.timestamp} {state.type.value} {state.name}")
    return "\n".join(lines)


def test_a_single_job_starts_within_5_s_while_another_organisation_has_300_queued(
    organisations: tuple[httpx.Client, httpx.Client],
) -> None:
    busy, quiet = organisations

    def create(n: int) -> str:
        body = {
            "restaurant_id": f"busy-{n}-{uuid.uuid4().hex[:6]}",
            "execution_config": full_config(),
        }
        response = busy.post("/api/registration-jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["job_id"])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        backlog = list(pool.map(create, range(BACKLOG)))
    print(f"{BACKLOG} creates of one organisation in {time.monotonic() - started:.1f} s")

    def states() -> dict[str, int]:
        with read_session() as session:
            rows = session.execute(
                select(RegistrationJob.status, func.count())
                .where(RegistrationJob.id.in_(backlog))
                .group_by(RegistrationJob.status)
            )
            return {str(status): int(count) for status, count in rows.tuples()}

    # The system is working through the backlog (past the burst's own start): some of its
    # jobs have run to the end, and the workers are busy with more.
    wait_for(
        lambda: states().get("completed", 0) >= 4 and states().get("in_progress", 0) >= 1,
        timeout=120,
        interval=0.2,
        what="the busy organisation's jobs to run",
    )
    before = states()
    print(f"the busy organisation's jobs when the other creates: {before}")
    assert before.get("pending", 0) >= BACKLOG - 20, before  # still queued, nearly all

    body = {"restaurant_id": f"quiet-{uuid.uuid4().hex[:6]}", "execution_config": full_config()}
    created = quiet.post("/api/registration-jobs", json=body)
    created_at = time.time()
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]

    def first_step_started() -> datetime | None:
        steps = quiet.get(f"/api/registration-jobs/{job_id}").json()["steps"]
        times = [datetime.fromisoformat(s["started_at"]) for s in steps if s["started_at"]]
        return min(times) if times else None

    try:
        first = wait_for(first_step_started, timeout=60, interval=0.05, what="its first step")
    finally:
        print(story_of(job_id))
    waited = first.timestamp() - created_at
    after = states()
    print(
        f"the single job's first step ran {waited:.2f} s after its 201; the busy "
        f"organisation's jobs then: {after}"
    )
    assert after.get("pending", 0) >= BACKLOG - 40, after  # the backlog was still there
    assert waited < 5, f"the single job waited {waited:.1f} s behind the other's backlog"
