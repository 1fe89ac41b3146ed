"""Job transitions behind the routes: each one transaction of the ledger, apart from HTTP.

None of them calls Prefect: a create, start or retry commits a run request to the outbox
and the reconciler's dispatcher hands it to Prefect; a cancel is in force from its commit
(the flow-run process loses the job) and Prefect is told by the dispatcher.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import reads
from api.schemas import JobCreate, JobCreated
from regjobs import ledger, refusals, viewtokens
from regjobs.catalogue import ACTIVE_JOB_STATUSES
from regjobs.config import ExecutionConfig
from regjobs.db import get_engine, open_connections, read_session, transaction
from regjobs.ledger import ActiveJobExists, NewJob, PreparedJob, TooManyActiveJobs
from regjobs.models import RegistrationJob
from regjobs.settings import get_settings

R = TypeVar("R")


@lru_cache
def _writer() -> ThreadPoolExecutor:
    """The thread transitions run in, one per process: on SQLite writes take the database's
    one write lock in turn anyway, and creates that queue meanwhile are written together
    (`CreateBatches`), which a second thread would only split up."""
    return ThreadPoolExecutor(1, thread_name_prefix="writes")


def warm() -> None:
    """Before the first request: the writer thread started and a write connection open."""
    _writer().submit(open_connections, get_engine(), 1).result()


async def run(fn: Callable[..., R], /, **kwargs: Any) -> R:
    """A transition off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_writer(), functools.partial(fn, **kwargs))


def _by_idempotency_key(session: Session, organisation_id: str, key: str) -> str | None:
    """The view of the job an earlier create with this `Idempotency-Key` made, if any."""
    return session.scalars(
        select(RegistrationJob.view).where(
            RegistrationJob.organisation_id == organisation_id,
            RegistrationJob.idempotency_key == key,
        )
    ).one_or_none()


def _active_id(session: Session, organisation_id: str, restaurant_id: str) -> str | None:
    return session.scalars(
        select(RegistrationJob.id).where(
            RegistrationJob.organisation_id == organisation_id,
            RegistrationJob.restaurant_id == restaurant_id,
            RegistrationJob.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
        )
    ).first()


class _Conflict:
    """A create the database refused (a unique index): answered after the commit."""


_CONFLICT = _Conflict()

#: How many times a create the database refused is made again when, read after the refusal,
#: neither the job of its `Idempotency-Key` nor an active job of the restaurant is there (the
#: active job ended in between: nothing stands in the way any more).
CREATE_TRIES = 3


class _OverLimit:
    """A create beyond its organisation's limit of active jobs: nothing was written."""


_OVER_LIMIT = _OverLimit()


class CreateBatches:
    """Creates that arrive together are written in one transaction, one savepoint each
    (group commit). A burst of creates is bound by the database's commits, one at a time
    on SQLite, and most of a create's cost is its commit: one commit for many cuts it
    (measured: docs/figures.md). A create the unique indexes refuse rolls back its own
    savepoint only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[tuple[NewJob, Future[tuple[str, bool] | None]]] = []

    def submit(self, new: NewJob) -> Future[tuple[str, bool] | None]:
        """The new job's view and True; an earlier job's view and False (same key); None
        when the create should be made again (see `_refused`); or ActiveJobExists."""
        answer: Future[tuple[str, bool] | None] = Future()
        with self._lock:
            self._waiting.append((new, answer))
        _writer().submit(self._write)
        return answer

    def _write(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return  # an earlier call wrote these
        try:
            prepared = [ledger.prepare_job(new) for new, _ in batch]  # before the write lock
            views = transaction(_create_all, batch=prepared)
        except BaseException as exc:
            for _, answer in batch:
                answer.set_exception(exc)
            return
        for (new, answer), view in zip(batch, views, strict=True):
            if isinstance(view, _OverLimit):
                answer.set_exception(TooManyActiveJobs(get_settings().org_active_job_limit))
                continue
            try:
                answer.set_result((view, True) if isinstance(view, str) else _refused(new))
            except ActiveJobExists as exists:
                answer.set_exception(exists)


def _create_all(
    *, session: Session, batch: list[PreparedJob]
) -> list[str | _Conflict | _OverLimit]:
    """All of the batch in one go if its organisations have room for it
    (`ledger.room_for_active_jobs`) and the unique indexes take it; else one at a time,
    each in a savepoint of its own, so only the refused ones are left out (a create the
    indexes refuse takes no room)."""
    organisations = [p.job.organisation_id for p in batch]
    room = ledger.room_for_active_jobs(session=session, organisation_ids=organisations)
    if all(room[org] >= organisations.count(org) for org in room):
        try:
            with session.begin_nested():
                return [j.view or "" for j in ledger.insert_jobs(session=session, prepared=batch)]
        except IntegrityError:
            pass
    views: list[str | _Conflict | _OverLimit] = []
    for one in batch:
        organisation = one.job.organisation_id
        if room[organisation] < 1:
            views.append(_OVER_LIMIT)
            continue
        try:
            with session.begin_nested():
                job = ledger.insert_jobs(session=session, prepared=[one])[0]
        except IntegrityError:
            views.append(_CONFLICT)
            continue
        room[organisation] -= 1
        views.append(job.view or "")
    return views


def _refused(new: NewJob) -> tuple[str, bool] | None:
    """The answer to a create the unique indexes refused: the job an earlier create with
    the same `Idempotency-Key` made, else the restaurant's active job (ActiveJobExists).
    None when neither is there now: the active job that refused it ended since, and the
    create is to be made again."""
    with read_session() as session:
        if new.idempotency_key is not None:
            earlier = _by_idempotency_key(session, new.organisation_id, new.idempotency_key)
            if earlier is not None:
                return earlier, False
        active = _active_id(session, new.organisation_id, new.restaurant_id)
    if active is None:
        return None
    raise ActiveJobExists(active)


_batches = CreateBatches()


async def create_job(
    *, organisation_id: str, job_in: JobCreate, idempotency_key: str | None
) -> tuple[str, bool]:
    """Commit the job, its steps and its run request; its view, and whether it is new. A
    repeated `Idempotency-Key` gives the job the first create made, even when both arrive at
    once; a second active job for the restaurant is refused. The database's unique indexes
    decide both races, not a check before the insert. A new job whose config carries an
    email with too many refused logins is refused (refusals.TooManyRefusedLogins)."""
    new = NewJob(
        organisation_id,
        job_in.restaurant_id,
        job_in.execution_config,
        idempotency_key,
        job_in.auto_start,
    )
    if idempotency_key is not None:
        earlier = await run(_earlier, organisation_id=organisation_id, key=idempotency_key)
        if earlier is not None:
            return earlier, False
    await reads.run(_refused_logins, login_emails(job_in.execution_config))
    for _ in range(CREATE_TRIES):
        made = await asyncio.wrap_future(_batches.submit(new))
        if made is not None:
            return made
    raise ledger.Conflict(
        "the restaurant's active registration job changed while this one was created; "
        "send the create again"
    )


def login_emails(config: ExecutionConfig) -> dict[str, str]:
    """The emails a job logs in with, by config field."""
    emails = {
        "account.email": config.account.email,
        "onboarding.user_email": config.onboarding.user_email,
    }
    return {field: str(email) for field, email in emails.items() if email}


def _refused_logins(emails: dict[str, str]) -> None:
    with read_session() as session:
        refusals.check(session=session, emails=emails)


#: JobCreated's fields the job's view has under the same name.
_CREATED_FIELDS = [name for name in JobCreated.model_fields if name not in ("job_id", "view_url")]


async def create_answer(
    *,
    organisation_id: str,
    job_in: JobCreate,
    idempotency_key: str | None,
    nudge: Callable[[], None],
) -> tuple[int, bytes]:
    """A create as the API answers it: 201 and the new
    job (`nudge` then tells the dispatcher), or 200 and the job an earlier create with the
    same `Idempotency-Key` made; ActiveJobExists when the restaurant has an active job,
    refusals.TooManyRefusedLogins when its config carries an email past that limit,
    TooManyActiveJobs when the organisation has as many as it may."""
    view, new = await create_job(
        organisation_id=organisation_id, job_in=job_in, idempotency_key=idempotency_key
    )
    if new:
        nudge()
    job = json.loads(view)
    created = {"job_id": job["id"]} | {k: job[k] for k in _CREATED_FIELDS}
    settings = get_settings()
    token = viewtokens.issue(settings, job["id"], organisation_id).token
    created["view_url"] = viewtokens.page_url(settings, job["id"], token)
    return (201 if new else 200), json.dumps(created).encode()


def _earlier(*, organisation_id: str, key: str) -> str | None:
    with read_session() as session:
        return _by_idempotency_key(session, organisation_id, key)


def start_job(*, job_id: str) -> RegistrationJob:
    return transaction(ledger.start_job, job_id=job_id)


def cancel_job(*, job_id: str) -> RegistrationJob:
    return transaction(ledger.cancel_job, job_id=job_id)


def retry_job(*, organisation_id: str, job_id: str, from_step: str | None) -> RegistrationJob:
    """The retry's transaction; ActiveJobExists naming the restaurant's other active job.
    Refused by the one-active-job index with no active job there when read after, the
    other job ended in between: the retry is made again (as a create is)."""
    for _ in range(CREATE_TRIES):
        try:
            return transaction(ledger.retry_job, job_id=job_id, from_step=from_step)
        except IntegrityError:
            with read_session() as session:
                job = session.get(RegistrationJob, job_id)
                other = _active_id(session, organisation_id, job.restaurant_id) if job else None
            if other is not None:
                raise ActiveJobExists(other) from None
    raise ledger.Conflict(
        "the restaurant's active registration job changed while this job was retried; "
        "send the retry again"
    )
