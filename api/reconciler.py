"""The reconciler: the one process that brings Prefect's view into the job database.

Every API process runs one; a leader lease in the database lets exactly one of them act
(`api.leader`), the others stand by and take over when it dies. Each cycle (about a second)
the leader:
1. dispatches (`api.dispatch`): creates the flow run of every run request in the outbox and
   records its id; Prefect down or slow: the job stays `pending` saying so;
2. delivers what Prefect must still be told: cancels made while it was down, runs found dead;
3. reconciles (`api.reconcile`): reads the flow runs of all active jobs in one call and
   records what only Prefect saw; frees the slots of holders found ended; marks stalls.
While Prefect is down it waits; reads never wait on it. A nudge (a create, start, retry or
cancel committed; a job ended) is handed over at once by a thread of its own, never behind a
cycle's Prefect calls, which take seconds on a busy machine. This module is the loop alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from api.dispatch import Dispatcher
from api.leader import LeaderLease, holder_name
from api.orchestrator import DeploymentMissing, Orchestrator, OrchestratorUnavailable, PrefectBusy
from api.reconcile import Reconciliation
from regjobs.db import database_now
from regjobs.doorbell import Doorbell
from regjobs.settings import Settings

logger = logging.getLogger("regjobs.reconciler")


@dataclass
class Reconciler:
    settings: Settings
    orchestrator: Orchestrator
    holder: str = field(default_factory=holder_name)
    #: The clock (wall time): the database's, which stamps heartbeats too
    #: (`regjobs.db.database_now`); tests pass one they move on themselves.
    now: Callable[[], datetime] = database_now
    #: "leader" or "standby", for /healthz and the tests.
    role: str = "standby"
    #: Cycles this process ran as the leader.
    cycles: int = 0
    prefect_ok: bool = False
    deployment_ok: bool = False
    last_error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    #: Set by a nudge: the hand-over thread dispatches and delivers at once.
    _wake: threading.Event = field(default_factory=threading.Event)
    #: One hand-over at a time, the cycle's or a nudge's.
    _handing_over: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lease = LeaderLease(self.settings, self.holder)
        self.doorbell = Doorbell(self.settings.sqlalchemy_url)
        self.dispatcher = Dispatcher(self.settings, self.orchestrator, self._stop, self.now)
        self.reconciliation = Reconciliation(self.settings, self.orchestrator, self.now)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self.run, name="reconciler", daemon=True),
            threading.Thread(target=self.run_hand_overs, name="dispatcher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def nudge(self) -> None:
        """Hand over now: this process just committed something to dispatch or deliver
        (here if this process leads, else the leader's doorbell rings)."""
        if self.role == "leader":
            self._wake.set()
        else:
            self.doorbell.ring()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.doorbell.stop_listening()
        try:
            if self.role == "leader":
                self.lease.release()
        except Exception:
            logger.warning("could not release the reconciler lease", exc_info=True)
        self.orchestrator.close()

    def run(self) -> None:
        with self.orchestrator.single_tries():
            self._loop()

    def run_hand_overs(self) -> None:
        """While this process leads and Prefect answers: every nudge's hand-over, at once."""
        with self.orchestrator.single_tries():
            while not self._stop.is_set():
                if not self._wake.wait(self.settings.reconcile_seconds):
                    continue
                self._wake.clear()
                if self._stop.is_set():
                    break
                if self.role == "leader" and self.prefect_ok:
                    self._guarded(self.hand_over, "dispatch")

    def _loop(self) -> None:
        backoff = self.settings.reconcile_seconds
        while not self._stop.is_set():
            backoff = self.settings.reconcile_seconds
            try:
                leading = self.lease.acquire()
            except Exception:
                logger.warning("the reconciler lease could not be read", exc_info=True)
                leading = False
            if not leading:
                if self.role == "leader":
                    logger.info("reconciler: another process leads now; standing by")
                    self.doorbell.stop_listening()
                self.role = "standby"
                self._stop.wait(backoff)
                continue
            if self.role != "leader":
                logger.info("reconciler: leading (%s)", self.holder)
            self.role = "leader"
            self.doorbell.listen(self._wake)
            if not self._guarded(self.cycle, "cycle"):
                # Prefect is down: wait longer before the next try, not for ever.
                backoff = min(5.0, 2 * self.settings.reconcile_seconds)
            self._report()
            self._stop.wait(backoff)

    def _guarded(self, work: Callable[[], None], what: str) -> bool:
        """`work()`, its failure recorded (the next pass tries again); False if Prefect is
        down. Busy (503) is not down."""
        try:
            work()
        except PrefectBusy as exc:
            self.last_error = str(exc)
        except OrchestratorUnavailable as exc:
            self._prefect_down(exc)
            return False
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("reconciler %s failed; trying again", what)
        return True

    def _prefect_down(self, exc: OrchestratorUnavailable) -> None:
        if self.prefect_ok or self.last_error != str(exc):
            logger.warning("reconciler: %s; waiting for it", exc)
        self.prefect_ok = isinstance(exc, DeploymentMissing)
        self.deployment_ok = False
        self.last_error = str(exc)

    def _report(self) -> None:
        if self.role != "leader":
            return
        try:
            self.lease.report(
                {
                    "prefect": self.prefect_ok,
                    "deployment": self.deployment_ok,
                    "error": self.last_error,
                    "cycles": self.cycles,
                }
            )
        except Exception:
            logger.warning("could not write the reconciler's report", exc_info=True)

    # ------------------------------------------------------------------ one cycle

    def cycle(self) -> None:
        self.cycles += 1
        try:
            self.orchestrator.ping()
            self.deployment_ok = self.orchestrator.deployment_id() is not None
        except OrchestratorUnavailable as exc:
            self.dispatcher.hold(exc)
            raise
        self.hand_over()
        # Expired waits first: Prefect fails a suspended run at its own pause timeout, which
        # is never before the step's `action_expires_at` (the flow computes that first), so
        # a job whose wait ran out fails as `fix_config` here before `reconcile` could read
        # Prefect's Failed run as a plain failure.
        for phase in (self.expire_waits, self.reconcile, self.heal_slots, self.find_stalls):
            phase()
        self.prefect_ok = True
        self.last_error = None

    def hand_over(self) -> None:
        """Dispatch and deliver, one hand-over at a time (the cycle's or a nudge's)."""
        with self._handing_over:
            self.dispatch()
            self.deliver()

    # --------------------------------------------------------------- the phases

    def dispatch(self) -> None:
        self.dispatcher.dispatch()

    def deliver(self) -> None:
        self.dispatcher.deliver()

    def reconcile(self) -> None:
        self.reconciliation.reconcile()

    def heal_slots(self) -> None:
        self.reconciliation.heal_slots()

    def find_stalls(self) -> None:
        self.reconciliation.find_stalls()

    def expire_waits(self) -> None:
        self.reconciliation.expire_waits()
