"""The API's reads: the materialised job view the ledger writes, and nothing else.

No read calls Prefect, takes a lock or writes. Each is one short query on a pooled
connection (`run` says where it runs), so a slow database makes reads queue in memory
rather than pile up on connections. The hot reads (a job and its progress) check the API
key in the same query that reads the job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, TypeVar
from uuid import UUID

from sqlalchemy import Engine, and_, bindparam, or_, select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from regjobs.auth import DEVELOPMENT_LABEL
from regjobs.catalogue import ACTIVE_JOB_STATUSES
from regjobs.crypto import hash_api_key
from regjobs.db import get_read_engine, open_connections
from regjobs.evidence import evidence_url
from regjobs.models import ApiKey, JobEvent, Organisation, RegistrationJob, StepEvidence
from regjobs.settings import Environment, Settings, get_settings

R = TypeVar("R")

View = Literal["job", "progress"]


class Unauthorized(Exception):
    pass


class NotFound(Exception):
    pass


class BadCursor(ValueError):
    pass


async def run(fn: Callable[..., R], *args: Any) -> R:
    """Run a read. On SQLite, right here: a read of a local file in WAL mode never waits
    for a writer and takes microseconds, less than handing it to a thread (measured:
    docs/figures.md). Elsewhere, in a worker thread, at most as many at once as the pool
    has connections: the rest wait in memory, not on the pool."""
    if _engine().dialect.name == "sqlite":
        return fn(*args)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(_again_if_dropped, fn, *args))


def _again_if_dropped(fn: Callable[..., R], *args: Any) -> R:
    """A read whose pooled connection the server had dropped (a restart, an idle timeout)
    is made once more, on a new connection (the pool drops every connection older than the
    failure): reads change nothing, so repeating one is safe, and no read pays a ping
    before it to find out."""
    try:
        return fn(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return fn(*args)


@lru_cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(get_settings().db_pool_size, thread_name_prefix="reads")


def _engine() -> Engine:
    return get_read_engine()


def warm() -> None:
    """Before the first request: the read pool's connections open and, where reads run in
    threads, every thread started (a burst right after start would otherwise make them one
    by one, on its own time)."""
    size = get_settings().db_pool_size
    open_connections(_engine(), size)
    if _engine().dialect.name == "sqlite":
        return
    started = threading.Barrier(size)
    for _ in range(size):
        _executor().submit(started.wait, 10)


@dataclass(frozen=True)
class Caller:
    id: str
    name: str


def _production() -> bool:
    return get_settings().environment is Environment.PRODUCTION


def _usable_key(production: bool) -> Any:
    """The condition an API key must meet: not revoked, and in production not a
    development key."""
    not_revoked = ApiKey.revoked_at.is_(None)
    if not production:
        return not_revoked
    return and_(not_revoked, or_(ApiKey.label.is_(None), ApiKey.label != DEVELOPMENT_LABEL))


@lru_cache
def _key_query(production: bool) -> Select[str, str]:
    return (
        select(Organisation.id, Organisation.name)
        .join(ApiKey, ApiKey.organisation_id == Organisation.id)
        .where(ApiKey.key_hash == bindparam("key_hash"), _usable_key(production))
    )


def organisation(key: str) -> Caller:
    """The organisation an API key belongs to; Unauthorized for an unknown or revoked key
    (and, in production, a development key)."""
    with _engine().connect() as connection:
        row = connection.execute(_key_query(_production()), {"key_hash": hash_api_key(key)}).first()
    if row is None:
        raise Unauthorized
    return Caller(row[0], row[1])


#: The organisation queries in flight, by key hash (this process's event loop only).
_asking: dict[str, asyncio.Future[Caller]] = {}


async def caller_of(key: str) -> Caller:
    """`organisation(key)`, run on the event loop's terms (`run`), with the requests of one
    key that arrive while its query runs sharing that query's answer: a burst of creates
    asks once per query's time, not once a request (on PostgreSQL each query is a thread
    hand-off and a round trip; measured: docs/figures.md). A request that joins gets an
    answer as fresh as its own query would have been, but for that query's milliseconds."""
    digest = hash_api_key(key)
    asking = _asking.get(digest)
    if asking is None:
        asking = asyncio.ensure_future(run(organisation, key))
        _asking[digest] = asking

        def answered(done: asyncio.Future[Caller]) -> None:
            _asking.pop(digest, None)
            if not done.cancelled():
                done.exception()  # (retrieved, if every request that asked went away)

        asking.add_done_callback(answered)
    # Shielded: a request that goes away does not cancel the others' answer.
    return await asyncio.shield(asking)


def _by_key(column: Any, production: bool) -> Select[Any]:
    return (
        select(RegistrationJob.version, column, RegistrationJob.organisation_id)
        .join(ApiKey, ApiKey.organisation_id == RegistrationJob.organisation_id)
        .where(
            RegistrationJob.id == bindparam("job_id"),
            ApiKey.key_hash == bindparam("key_hash"),
            _usable_key(production),
        )
    )


@lru_cache
def _view_query(kind: View, production: bool) -> Select[Any]:
    column = RegistrationJob.view if kind == "job" else RegistrationJob.progress_view
    return _by_key(column, production)


@dataclass(frozen=True)
class Found:
    version: int
    body: str
    organisation_id: str = ""

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def view(key: str, job_id: str, kind: View) -> Found:
    """A job's view (`job`: as GET answers it; `progress`) and version, for a key of its
    organisation; NotFound for a job that does not exist or is another organisation's."""
    with _engine().connect() as connection:
        row = connection.execute(
            _view_query(kind, _production()), {"job_id": job_id, "key_hash": hash_api_key(key)}
        ).first()
    if row is None or row[1] is None:
        organisation(key)  # Unauthorized, unless the key is fine and the job is not
        raise NotFound
    return Found(row[0], row[1], row[2])


@lru_cache
def _org_view_query(kind: View) -> Select[Any, Any, Any]:
    column = RegistrationJob.view if kind == "job" else RegistrationJob.progress_view
    return select(RegistrationJob.version, column, RegistrationJob.organisation_id).where(
        RegistrationJob.id == bindparam("job_id"),
        RegistrationJob.organisation_id == bindparam("organisation_id"),
    )


def view_of(organisation_id: str, job_id: str, kind: View) -> Found:
    """`view` for a caller whose organisation is known already (a job view token's);
    NotFound for a job that does not exist or is another organisation's."""
    with _engine().connect() as connection:
        row = connection.execute(
            _org_view_query(kind), {"job_id": job_id, "organisation_id": organisation_id}
        ).first()
    if row is None or row[1] is None:
        raise NotFound
    return Found(row[0], row[1], row[2])


def with_links(
    settings: Settings, job_id: str, organisation_id: str, steps: Sequence[dict[str, Any]]
) -> None:
    """Fill in the signed link of every screenshot (links are made when read, and expire)."""
    for step in steps:
        for shot in step.get("evidence") or ():
            shot["url"] = evidence_url(settings, job_id, int(shot["evidence_id"]), organisation_id)


def job_body(settings: Settings, job_id: str, organisation_id: str, body: str) -> str:
    """GET's answer from the stored view: as stored, with screenshot links added."""
    if '"evidence_id"' not in body:
        return body
    job = json.loads(body)
    with_links(settings, job_id, organisation_id, job["steps"])
    return json.dumps(job)


def active_job(organisation_id: str, restaurant_id: str) -> str | None:
    """The view of the restaurant's active job in the organisation, if it has one."""
    with _engine().connect() as connection:
        return connection.execute(
            select(RegistrationJob.view)
            .where(
                RegistrationJob.organisation_id == organisation_id,
                RegistrationJob.restaurant_id == restaurant_id,
                RegistrationJob.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
            )
            .limit(1)
        ).scalar()


# ----------------------------------------------------------------------------- the list


def encode_cursor(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        # A job id is a UUID: anything else (a NUL, say) never reaches the database.
        return datetime.fromisoformat(created_at), str(UUID(str(job_id)))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadCursor("not a cursor this API gave (use next_cursor as it came)") from exc


def list_jobs(
    organisation_id: str,
    *,
    restaurant_id: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[str], str | None]:
    """Summaries of the organisation's jobs, newest first, and the cursor of the next page."""
    query = select(
        RegistrationJob.summary_view, RegistrationJob.created_at, RegistrationJob.id
    ).where(
        RegistrationJob.organisation_id == organisation_id,
        RegistrationJob.summary_view.is_not(None),
    )
    if restaurant_id is not None:
        query = query.where(RegistrationJob.restaurant_id == restaurant_id)
    if status is not None:
        query = query.where(RegistrationJob.status == status)
    if cursor is not None:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            tuple_(RegistrationJob.created_at, RegistrationJob.id) < tuple_(created_at, job_id)
        )
    query = query.order_by(RegistrationJob.created_at.desc(), RegistrationJob.id.desc())
    with _engine().connect() as connection:
        rows = connection.execute(query.limit(limit + 1)).all()
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = encode_cursor(page[-1][1], page[-1][2]) if more and page else None
    return [row[0] for row in page if row[0]], next_cursor


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    data: str


#: Events read at once.
EVENTS_PAGE = 500


def events_after(job_id: str, after: int) -> tuple[list[Event], str | None]:
    """The job's events after `after`, in order, and the job's status now."""
    with _engine().connect() as connection:
        status = connection.execute(
            select(RegistrationJob.status).where(RegistrationJob.id == job_id)
        ).scalar()
        rows = connection.execute(
            select(JobEvent.seq, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(EVENTS_PAGE)
        ).all()
    return [Event(seq, kind, data) for seq, kind, data in rows], status


def versions(job_ids: Sequence[str]) -> dict[str, int]:
    """The version of each job (a job changed when its version did)."""
    found: dict[str, int] = {}
    ids = list(job_ids)
    with _engine().connect() as connection:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = connection.execute(
                select(RegistrationJob.id, RegistrationJob.version).where(
                    RegistrationJob.id.in_(chunk)
                )
            )
            found.update((job_id, version) for job_id, version in rows)
    return found


def job_exists(organisation_id: str, job_id: str) -> bool:
    with _engine().connect() as connection:
        return (
            connection.execute(
                select(RegistrationJob.id).where(
                    RegistrationJob.id == job_id,
                    RegistrationJob.organisation_id == organisation_id,
                )
            ).first()
            is not None
        )


def evidence(job_id: str, evidence_id: int) -> tuple[bytes, str] | None:
    with _engine().connect() as connection:
        row = connection.execute(
            select(StepEvidence.data, StepEvidence.content_type).where(
                StepEvidence.id == evidence_id, StepEvidence.job_id == job_id
            )
        ).first()
    return (row[0], row[1]) if row else None
