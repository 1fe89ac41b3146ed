"""PostgreSQL drops a session's connection midway (a restart, a failover, an operator's
`pg_terminate_backend`): a flow run's ledger read or write asks again on a new connection
instead of failing the flow run (a CI run saw a flow run crash on a read between its steps,
the one kind of call that was not asked again)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from regjobs import db
from tests.helpers import environment, postgresql_only

pytestmark = [pytest.mark.database, postgresql_only("SQLite has no connections to drop")]


@pytest.mark.parametrize("run", [db.read, db.transaction], ids=["read", "write"])
def test_a_connection_dropped_midway_is_asked_again(
    run: Callable[..., Any], database_url: str, pg_admin_url: str
) -> None:
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    backends: list[int] = []

    def backend_then_one(*, session: Session) -> int:
        backends.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if len(backends) == 1:
            # The server ends this very connection between two statements of `fn`.
            with admin.connect() as connection:
                ended = connection.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": backends[0]}
                ).scalar_one()
            assert ended
        return int(session.execute(text("SELECT 1")).scalar_one())

    try:
        with environment({"DATABASE_URL": database_url}):
            assert run(backend_then_one) == 1
    finally:
        admin.dispose()
    assert len(backends) == 2 and backends[0] != backends[1], backends
