"""Engine, sessions and schema migrations of the job database."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from regjobs.models import utcnow
from regjobs.settings import get_settings

R = TypeVar("R")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def engine_for(url: str, *, read_only: bool = False) -> Engine:
    """The engine for a database URL (one per URL and kind in a process: `lru_cache` alone
    would key `engine_for(url)` and `engine_for(url, read_only=False)` apart, and a process
    would hold two pools of the same database)."""
    return _engine(url, read_only)


@lru_cache
def _engine(url: str, read_only: bool) -> Engine:
    """The engine for a database URL. On SQLite a write transaction starts with
    `BEGIN IMMEDIATE`: it takes the write lock before its first read, so what it reads
    cannot change under it (a check and the write that depends on it are one step), and it
    never fails half-way with "database is locked" when upgrading a read. Reads use their
    own engine, each statement on its own (no BEGIN), and never wait for writers (WAL)."""
    settings = get_settings()
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        # A request never waits long for a connection: better a clear error than a pile-up.
        "pool_timeout": settings.db_pool_timeout_seconds,
    }
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Several processes (API, flow runs) share the file: wait for locks, don't fail.
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **pool
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy, not the driver, says when a transaction begins (below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a commit survives the process dying; only a power cut can
            # lose the last commits. The production shape is PostgreSQL.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        if not read_only:

            @event.listens_for(engine, "begin")
            def _sqlite_begin(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if read_only:
        # Reads run each statement on its own, as on SQLite: no BEGIN before a read, no
        # ROLLBACK when its connection goes back to the pool, no ping before it (a read on
        # a connection the server dropped is made again: `api.reads.run`). One round trip
        # a read, not four.
        return create_engine(url, isolation_level="AUTOCOMMIT", **pool)
    # pool_pre_ping: a connection dropped by the server is replaced, not handed out.
    return create_engine(url, pool_pre_ping=True, **pool)


def get_engine() -> Engine:
    return engine_for(get_settings().sqlalchemy_url)


def get_read_engine() -> Engine:
    return engine_for(get_settings().sqlalchemy_url, read_only=True)


def open_connections(engine: Engine, count: int) -> None:
    """Fill the engine's pool with `count` connections now, so that a burst of requests
    right after start does not wait for connections being made one by one (a PostgreSQL
    connection is a new server process)."""
    with contextlib.ExitStack() as held:
        for _ in range(count):
            held.enter_context(engine.connect())


@lru_cache
def _session_factory(url: str, read_only: bool = False) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url, read_only=read_only), expire_on_commit=False)


#: One write transaction at a time per process on SQLite. Threads that all ask SQLite for
#: its write lock at once wait in its busy handler, which sleeps in growing steps (up to
#: 100 ms) and wakes late; waiting here instead, a thread starts the moment the previous
#: one commits. Other processes still wait in SQLite's busy handler.
_SQLITE_WRITER = threading.RLock()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A write session: commits on success, rolls back on error."""
    url = get_settings().sqlalchemy_url
    with _SQLITE_WRITER if url.startswith("sqlite") else contextlib.nullcontext():
        session = _session_factory(url)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


@contextmanager
def read_session() -> Iterator[Session]:
    """A session for reading only: never writes, never takes the write lock."""
    url = get_settings().sqlalchemy_url
    session = _session_factory(url, url.startswith("sqlite"))()
    try:
        yield session
    finally:
        # Closing detaches what was read without expiring it (a rollback would), so the
        # objects stay readable after the session.
        session.close()


def database_now(session: Session | None = None) -> datetime:
    """The time by the database's clock on PostgreSQL, this host's on SQLite (embedded: one
    host). Leases written on one host and judged on another (a flow run's heartbeat, read
    by the reconciler on an API host) are stamped and judged by this one clock, so hosts'
    clocks apart do not shorten them."""
    if (session.get_bind() if session else get_engine()).dialect.name != "postgresql":
        return utcnow()
    if session is None:
        with read_session() as reading:
            return database_now(reading)
    stamp: datetime = session.execute(select(func.clock_timestamp())).scalar_one()
    return stamp.astimezone(UTC)


def transaction(fn: Callable[..., R], /, **kwargs: Any) -> R:
    """`fn(session=..., **kwargs)` in one write transaction, committed; run again when the
    database dropped its connection midway (a restart, a failover, an idle timeout, an
    operator's `pg_terminate_backend`) or refused a new one (PostgreSQL's "too many clients
    already" while a burst holds its connections), so a flow-run process carries on rather
    than fails. Only for transactions that are safe to repeat: a lost connection rolls back
    what was not committed, and a refused one ran nothing."""
    return _on_a_live_connection(session_scope, fn, kwargs)


def read(fn: Callable[..., R], /, **kwargs: Any) -> R:
    """`fn(session=..., **kwargs)` in a read session, run again as `transaction` runs a
    write: a flow run's reads between its steps outlive a dropped connection too."""
    return _on_a_live_connection(read_session, fn, kwargs)


def _on_a_live_connection(
    scope: Callable[[], contextlib.AbstractContextManager[Session]],
    fn: Callable[..., R],
    kwargs: dict[str, Any],
) -> R:
    for attempt in range(DISCONNECT_RETRIES):
        connected = False
        try:
            with scope() as session:
                session.connection()  # (a refusal raises here, before `fn` ran)
                connected = True
                return fn(session=session, **kwargs)
        except DBAPIError as exc:
            again = exc.connection_invalidated or not connected
            if not again or attempt == DISCONNECT_RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


DISCONNECT_RETRIES = 6


def migrate(url: str | None = None) -> None:
    """Create or upgrade the schema to the newest migration (the schema alone: the
    operator's command, `regjobs.commands.upgrade`, also backfills what lives above it)."""
    from alembic import command
    from alembic.config import Config

    url = url or get_settings().sqlalchemy_url
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    command.upgrade(config, "head")


#: The PostgreSQL server of this kind of machine (trust auth), where the test fixtures and
#: the soak make their scratch databases unless told otherwise.
LOCAL_POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside `admin_url`'s, dropped at the end (even with
    sessions still open); its URL, with `admin_url`'s driver."""
    import uuid

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def bulk_insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows of one table: one executemany, which SQLAlchemy sends as multi-row
    INSERTs on PostgreSQL (its "insertmanyvalues"). Columns the rows leave out take their
    Python-side default."""
    if rows:
        session.execute(insert(table), rows)
