"""How any process wakes the reconciler's leader at once: an API process that committed
something to dispatch or deliver, a flow run whose job ended (its organisation's next run
may go)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
from typing import Any

from sqlalchemy import text

from regjobs.db import get_engine

logger = logging.getLogger("regjobs.reconciler")


class Doorbell:
    """How any API process wakes the leader at once when it committed something to
    dispatch or deliver, instead of the leader finding it at its next cycle (up to
    `reconcile_seconds` later; with two API processes, half the creates land on the one
    that does not lead).

    PostgreSQL (any number of machines): `NOTIFY regjobs_dispatch`, which the leader
    LISTENs to on a connection of its own. SQLite (one machine by nature): a datagram to an
    abstract Unix socket named after the database file, which only the leader binds (the
    kernel frees the name when it dies). A lost ring costs only the wait for the next cycle.
    """

    CHANNEL = "regjobs_dispatch"

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        self.address = f"\0regjobs-dispatch-{digest}"
        self._listening: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._ringing = threading.Lock()
        self._sender: socket.socket | None = None

    def ring(self, wait: bool = False) -> None:
        """Wake the leader, wherever it runs (never blocks the caller for long; `wait`: on
        PostgreSQL, until the notice is sent, for a process about to exit)."""
        if self.postgres:
            if self._ringing.acquire(blocking=False):  # one ring at a time is enough
                if wait:
                    self._notify()
                else:
                    threading.Thread(target=self._notify, daemon=True).start()
            return
        try:
            if self._sender is None:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sender.setblocking(False)
            self._sender.sendto(b"1", self.address)
        except OSError:
            pass  # no leader bound (yet), or its queue is full: it is awake anyway

    def _notify(self) -> None:
        try:
            with get_engine().connect() as connection:
                connection.execute(text(f"NOTIFY {self.CHANNEL}"))
                connection.commit()
        except Exception:
            logger.debug("could not ring the reconciler's doorbell", exc_info=True)
        finally:
            self._ringing.release()

    def listen(self, wake: threading.Event) -> None:
        """While this process leads: set `wake` on every ring."""
        if self._thread is not None and self._thread.is_alive():
            return
        stop = threading.Event()
        self._listening = stop
        target = self._listen_postgres if self.postgres else self._listen_socket
        self._thread = threading.Thread(
            target=target, args=(wake, stop), name="doorbell", daemon=True
        )
        self._thread.start()

    def stop_listening(self) -> None:
        if self._listening is not None:
            self._listening.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = self._listening = None

    def _listen_socket(self, wake: threading.Event, stop: threading.Event) -> None:
        bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            bell.bind(self.address)
        except OSError:  # an old leader still holds it: the cycles find the work
            bell.close()
            return
        bell.settimeout(0.5)
        with bell:
            while not stop.is_set():
                try:
                    bell.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    return
                wake.set()

    def _listen_postgres(self, wake: threading.Event, stop: threading.Event) -> None:
        import select as select_module

        while not stop.is_set():
            try:
                raw = get_engine().raw_connection()
            except Exception:
                stop.wait(1)
                continue
            try:
                driver: Any = raw.driver_connection
                driver.autocommit = True
                driver.cursor().execute(f"LISTEN {self.CHANNEL}")
                while not stop.is_set():
                    if select_module.select([driver], [], [], 0.5)[0]:
                        driver.poll()
                        if driver.notifies:
                            driver.notifies.clear()
                            wake.set()
            except Exception:
                logger.debug("the doorbell's connection broke; listening again", exc_info=True)
                stop.wait(1)
            finally:
                with contextlib.suppress(Exception):
                    raw.invalidate()  # not back to the pool: it LISTENs
                    raw.close()
