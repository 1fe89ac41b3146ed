"""Which API process leads the reconciler, and how the others wake it.

Every API process runs a reconciler; a leader lease in the database lets exactly one of them
act (an advisory lock on PostgreSQL, a lease row on SQLite), the others stand by and take
over when it dies. The doorbell (`regjobs.doorbell`) lets any process wake it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, text

from regjobs.db import get_engine, read_session, transaction
from regjobs.models import ControlLease, utcnow
from regjobs.settings import Settings

logger = logging.getLogger("regjobs.reconciler")

ROLE = "reconciler"
#: The PostgreSQL advisory lock key of the role (any constant; "regjobs" in ASCII).
ADVISORY_KEY = 0x7265676A6F6273


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaderLease:
    """Holds the reconciler role for this process, or learns that another does.

    SQLite: a lease row, renewed every cycle, taken over once it has expired. PostgreSQL:
    an advisory lock on a connection this process keeps open, which the server releases
    the moment the process dies; the row is then only its report.
    """

    def __init__(self, settings: Settings, holder: str) -> None:
        self.settings = settings
        self.holder = holder
        self._lock_connection: Connection | None = None
        self.postgres = get_engine().dialect.name == "postgresql"

    def acquire(self) -> bool:
        """Take or renew the role; whether this process holds it now."""
        if self.postgres and not self._advisory():
            return False
        return transaction(self._claim, force=self.postgres)

    def _advisory(self) -> bool:
        try:
            if self._lock_connection is None:
                connection = get_engine().connect()
                got = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}
                ).scalar()
                connection.commit()
                if not got:
                    connection.close()
                    return False
                self._lock_connection = connection
            else:
                self._lock_connection.execute(text("SELECT 1"))
                self._lock_connection.commit()
            return True
        except Exception:
            logger.warning("lost the reconciler's advisory lock connection", exc_info=True)
            self._drop_lock()
            return False

    def _drop_lock(self) -> None:
        if self._lock_connection is not None:
            try:
                self._lock_connection.close()
            except Exception:  # already broken
                logger.debug("closing the lock connection failed", exc_info=True)
            self._lock_connection = None

    def _claim(self, *, session: Any, force: bool) -> bool:
        now = utcnow()
        ttl = timedelta(seconds=self.settings.reconciler_lease_seconds)
        lease = session.get(ControlLease, ROLE, with_for_update=True)
        if lease is None:
            session.add(
                ControlLease(
                    name=ROLE,
                    holder=self.holder,
                    term=1,
                    expires_at=now + ttl,
                    renewed_at=now,
                    status={},
                )
            )
            return True
        expired = lease.expires_at is None or lease.expires_at < now
        if lease.holder != self.holder and not (expired or force):
            return False
        if lease.holder != self.holder:
            lease.term += 1
            lease.holder = self.holder
            logger.info("reconciler: this process leads now (term %d)", lease.term)
        lease.expires_at = now + ttl
        lease.renewed_at = now
        return True

    def report(self, status: dict[str, Any]) -> None:
        def write(*, session: Any) -> None:
            lease = session.get(ControlLease, ROLE, with_for_update=True)
            if lease is not None and lease.holder == self.holder:
                lease.status = status

        transaction(write)

    def release(self) -> None:
        def give_up(*, session: Any) -> None:
            lease = session.get(ControlLease, ROLE, with_for_update=True)
            if lease is not None and lease.holder == self.holder:
                lease.expires_at = utcnow()

        try:
            transaction(give_up)
        finally:
            self._drop_lock()


def lease_report(settings: Settings) -> dict[str, Any] | None:
    """What the current leader last reported, if it is alive (for /healthz)."""
    with read_session() as session:
        lease = session.get(ControlLease, ROLE)
        if lease is None or lease.renewed_at is None:
            return None
        age = (utcnow() - lease.renewed_at).total_seconds()
        if age > 2 * settings.reconciler_lease_seconds + settings.reconcile_seconds:
            return None
        return {"holder": lease.holder, "term": lease.term, **(lease.status or {})}
