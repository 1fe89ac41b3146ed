"""Fairness between organisations against the real job database (SQLite; PostgreSQL in CI's
second pass): the dispatcher's round robin and the start times it gives Prefect, and the
per-organisation limit of active jobs answered by the real API app (in this process, on a
real socket). The end-to-end test: tests/e2e/test_fairness.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from regjobs import ledger
from regjobs.auth import add_key, ensure_organisation
from regjobs.catalogue import JobStatus
from regjobs.config import ExecutionConfig
from regjobs.db import read_session, transaction
from tests.helpers import api_in_thread, full_config

pytestmark = pytest.mark.database

LIMIT = 3


def new_organisation(tag: str) -> tuple[str, str]:
    """A new organisation and an API key of it."""

    def make(*, session: Any) -> tuple[str, str]:
        org = ensure_organisation(session, f"{tag}-{uuid.uuid4().hex[:8]}")
        return org.id, add_key(session, organisation=org, label="test")

    return transaction(make)


def new_jobs(organisation_id: str, count: int) -> list[str]:
    def make(*, session: Any) -> list[str]:
        return [
            ledger.create_job(
                session=session,
                organisation_id=organisation_id,
                restaurant_id=f"fair-{uuid.uuid4().hex[:8]}",
                config=ExecutionConfig.model_validate(full_config()),
            ).id
            for _ in range(count)
        ]

    return transaction(make)


def test_dispatch_is_round_robin_between_organisations(stack_env: dict[str, str]) -> None:
    a, _ = new_organisation("busy")
    b, _ = new_organisation("quiet")
    busy = new_jobs(a, 5)
    quiet = new_jobs(b, 1)  # requested after all of the busy organisation's
    with read_session() as session:
        waiting = ledger.runs_to_dispatch(session=session, limit=100_000, share=100)
    order = [r.job_id for r in waiting]
    ours = [job for job in order if job in {*busy, *quiet}]
    assert ours == [busy[0], quiet[0], *busy[1:]]


def test_an_organisations_first_run_goes_before_the_runs_waiting_in_prefect(
    stack_env: dict[str, str],
) -> None:
    """Three of the busy organisation's runs wait in Prefect's work pool: the quiet
    organisation's run is given a start time before theirs, the busy one's next run after
    theirs, so Prefect's workers (which take runs by start time) take the quiet one first."""
    a, _ = new_organisation("busy")
    b, _ = new_organisation("quiet")
    busy = new_jobs(a, 4)
    with read_session() as session:
        first = [
            r
            for r in ledger.runs_to_dispatch(session=session, limit=100_000, share=100)
            if r.job_id in busy
        ]
    handed = first[:3]
    for run in handed:
        assert run.start_at is not None
        transaction(
            ledger.record_dispatch, run_id=run.run_id, flow_run_id=str(uuid.uuid4()),
            scheduled_at=run.start_at,
        )  # fmt: skip
    quiet = new_jobs(b, 1)
    with read_session() as session:
        dispatches = ledger.runs_to_dispatch(session=session, limit=100_000, share=100)
    runs = {r.job_id: r for r in dispatches}
    waiting = [run.start_at for run in handed if run.start_at]
    quiet_start, busy_next = runs[quiet[0]].start_at, runs[busy[3]].start_at
    assert quiet_start is not None and busy_next is not None
    assert quiet_start < min(waiting), (quiet_start, waiting)
    assert busy_next > max(waiting), (busy_next, waiting)


def test_no_organisation_has_more_than_its_share_in_prefect(
    stack_env: dict[str, str],
) -> None:
    """With three of the busy organisation's runs in Prefect and a share of three, the rest
    of its backlog stays here, beginning to run or not; the quiet organisation's run is
    handed over. One of the busy organisation's jobs ends: one more of its backlog goes."""
    a, _ = new_organisation("busy")
    b, _ = new_organisation("quiet")
    busy = new_jobs(a, 5)
    with read_session() as session:
        for run in ledger.runs_to_dispatch(session=session, limit=100_000, share=3):
            if run.job_id in busy:
                transaction(
                    ledger.record_dispatch, run_id=run.run_id, flow_run_id=str(uuid.uuid4()),
                    scheduled_at=run.start_at,
                )  # fmt: skip
    quiet = new_jobs(b, 1)
    with read_session() as session:
        now = {r.job_id for r in ledger.runs_to_dispatch(session=session, limit=100_000, share=3)}
    assert now & {*busy, *quiet} == {quiet[0]}
    # One of the busy organisation's runs begins: it still holds its place in Prefect.
    begun = busy[0]
    start = transaction(ledger.begin_run, job_id=begun, flow_run_id=_flow_run(begun), generation=1)
    with read_session() as session:
        now = {r.job_id for r in ledger.runs_to_dispatch(session=session, limit=100_000, share=3)}
    assert now & set(busy) == set()
    # Its job ends: one more of its backlog may go.
    transaction(
        ledger.finish_run, job_id=begun, epoch=start.epoch, status=JobStatus.COMPLETED,
        error_message=None,
    )  # fmt: skip
    with read_session() as session:
        now = {r.job_id for r in ledger.runs_to_dispatch(session=session, limit=100_000, share=3)}
    assert now & set(busy) == {busy[3]}


def _flow_run(job_id: str) -> str:
    from sqlalchemy import select

    from regjobs.models import JobRun

    with read_session() as session:
        flow_run = session.scalars(select(JobRun.flow_run_id).where(JobRun.job_id == job_id)).one()
    assert flow_run is not None
    return flow_run


@pytest.fixture(scope="module")
def api_base(stack_env: dict[str, str]) -> Iterator[str]:
    """The API app with a limit of 3 active jobs per organisation, its reconciler off (no
    Prefect here)."""
    with api_in_thread(REGJOBS_ORG_ACTIVE_JOB_LIMIT=str(LIMIT)) as base:
        yield base


def create(base: str, key: str, restaurant_id: str, **headers: str) -> httpx.Response:
    body = {"restaurant_id": restaurant_id, "execution_config": full_config()}
    return httpx.post(
        f"{base}/api/registration-jobs",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=30,
    )


def test_an_organisation_at_its_limit_of_active_jobs_gets_429_and_another_does_not(
    api_base: str,
) -> None:
    a, key_a = new_organisation("limited")
    _, key_b = new_organisation("other")
    made = [create(api_base, key_a, f"lim-{n}-{uuid.uuid4().hex[:6]}") for n in range(LIMIT)]
    assert [r.status_code for r in made] == [201] * LIMIT
    # 429, Retry-After, the limit named; nothing written.
    over = create(api_base, key_a, "lim-over", **{"Idempotency-Key": "over-1"})
    assert over.status_code == 429, over.text
    assert int(over.headers["Retry-After"]) > 0
    detail = over.json()["detail"]
    assert detail["limit"] == LIMIT
    assert "REGJOBS_ORG_ACTIVE_JOB_LIMIT" in detail["message"] and str(LIMIT) in detail["message"]
    listed = httpx.get(
        f"{api_base}/api/registration-jobs",
        headers={"Authorization": f"Bearer {key_a}"},
        params={"limit": 100},
    ).json()
    assert "lim-over" not in {j["restaurant_id"] for j in listed["jobs"]}
    # Another organisation is unaffected.
    assert create(api_base, key_b, f"other-{uuid.uuid4().hex[:6]}").status_code == 201
    # Once one of the organisation's jobs has ended, it may create again.
    job_id = made[0].json()["job_id"]
    transaction(ledger.cancel_job, job_id=job_id)
    again = create(api_base, key_a, "lim-over", **{"Idempotency-Key": "over-1"})
    assert again.status_code == 201, again.text
    # A retry that would make an ended job active again counts too.
    retried = httpx.post(
        f"{api_base}/api/registration-jobs/{job_id}/retry",
        headers={"Authorization": f"Bearer {key_a}"},
    )
    assert retried.status_code == 429 and retried.headers["Retry-After"], retried.text
    assert transaction(ledger.room_for_active_jobs, organisation_ids=[a]) == {a: 0}


def test_creates_at_once_never_pass_the_limit(api_base: str) -> None:
    """Ten creates of one organisation at once, with room for three: three 201s, seven
    429s (the creates are written together, in one transaction)."""
    a, key = new_organisation("burst")
    answers: list[int] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        status = create(api_base, key, f"burst-{n}-{uuid.uuid4().hex[:6]}").status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] * LIMIT + [429] * (10 - LIMIT)
    assert transaction(ledger.room_for_active_jobs, organisation_ids=[a]) == {a: 0}
