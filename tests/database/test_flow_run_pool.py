"""A flow-run process's job-database pool (`deployments.stack_config.FLOW_RUN_POOL`): the
steps of a job that start at once share its two write connections, waiting for one rather
than opening more (each new connection costs PostgreSQL a backend) or failing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from deployments.stack_config import FLOW_RUN_POOL
from regjobs import catalogue, db, ledger
from regjobs.catalogue import StepStatus
from tests.helpers import environment, ledger_job, postgresql_only

pytestmark = [
    pytest.mark.database,
    postgresql_only(
        "SQLite writes one at a time in a process (regjobs.db._SQLITE_WRITER): one "
        "connection whatever the pool"
    ),
]


@pytest.fixture
def flow_run_pool(database_url: str) -> Iterator[list[object]]:
    """This process's job database as a flow-run process has it (a URL of its own, so its
    engine is made here with the flow run's pool); the connections its write engine opens."""
    url = make_url(database_url).update_query_dict({"application_name": "regjobs-flow-run"})
    rendered = url.render_as_string(hide_password=False)
    with environment({**FLOW_RUN_POOL, "DATABASE_URL": rendered}):
        engine = db.get_engine()
        opened: list[object] = []
        event.listen(engine, "connect", lambda connection, _record: opened.append(connection))
        try:
            yield opened
        finally:
            engine.dispose()
            db.get_read_engine().dispose()


def test_steps_starting_at_once_share_two_connections(flow_run_pool: list[object]) -> None:
    job_id = ledger_job(restaurant_id="Café «Ünïcode» <b>pool</b>")
    run = db.transaction(ledger.begin_run, job_id=job_id, flow_run_id="flow-run-pool", generation=1)
    steps = catalogue.STEP_IDS[:8]
    together = threading.Barrier(len(steps))

    def start_and_hold(*, session: Session, **kwargs: Any) -> ledger.Attempt:
        attempt = ledger.start_attempt(session=session, **kwargs)
        # Holds its connection a while, as a write under load does: the others ask meanwhile.
        time.sleep(0.05)
        return attempt

    def start(step_id: str) -> ledger.Attempt:
        together.wait(timeout=30)
        return db.transaction(
            start_and_hold,
            job_id=job_id,
            epoch=run.epoch,
            step_id=step_id,
            flow_run_id="flow-run-pool",
            task_run_id=None,
        )

    with ThreadPoolExecutor(len(steps)) as threads:
        attempts = list(threads.map(start, steps))

    assert [a.number for a in attempts] == [1] * len(steps)
    states = db.read(ledger.step_states, job_id=job_id)
    assert {s for s in steps if states[s].status is StepStatus.RUNNING} == set(steps)
    assert 1 <= len(flow_run_pool) <= int(FLOW_RUN_POOL["REGJOBS_DB_POOL_SIZE"]), flow_run_pool
