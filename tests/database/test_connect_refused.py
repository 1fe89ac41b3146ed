"""PostgreSQL refuses a new connection (its connection limit reached, as 200 jobs at once on
the production shape once did: "too many clients already"): a ledger transaction asks
again and goes through once a connection is free, instead of failing the flow run."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from regjobs.db import engine_for, transaction
from regjobs.settings import get_settings
from tests.helpers import postgresql_only

pytestmark = [pytest.mark.database, postgresql_only("SQLite has no connection limit")]


@pytest.fixture
def one_connection_url(database_url: str, pg_admin_url: str) -> Iterator[str]:
    """The test database as a role allowed one connection at a time (a superuser, as the
    tests' own, is never refused)."""
    role = f"regjobs_one_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    database = make_url(database_url).database
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1'))
        connection.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            connection.execute(text(f'REVOKE CONNECT ON DATABASE "{database}" FROM "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def _select_one(*, session: Session) -> int:
    return int(session.execute(text("SELECT 1")).scalar_one())


def test_a_refused_connection_is_asked_again(
    one_connection_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", one_connection_url)
    get_settings.cache_clear()
    try:
        holder = create_engine(one_connection_url, poolclass=NullPool)  # (close: closed)
        held: Connection = holder.connect()
        held.execute(text("SELECT 1"))
        # With the role's one connection taken, a connection is refused...
        with pytest.raises(OperationalError, match="too many connections"):
            create_engine(one_connection_url).connect()
        # ...and a transaction begun now is refused, then asks again: the connection is
        # freed as soon as the first refusal is seen.
        refused = threading.Event()
        refusals: list[str] = []

        def seen(context: Any) -> None:
            refusals.append(str(context.original_exception).splitlines()[0])
            refused.set()

        event.listen(engine_for(one_connection_url), "handle_error", seen)

        def release() -> None:
            refused.wait(30)
            held.close()

        releaser = threading.Thread(target=release)
        releaser.start()
        try:
            assert transaction(_select_one) == 1
        finally:
            refused.set()
            releaser.join()
            holder.dispose()
        assert refusals and "too many connections" in refusals[0], refusals
    finally:
        get_settings.cache_clear()
