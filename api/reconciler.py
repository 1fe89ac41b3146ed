"""The reconciler: the one process that brings Prefect's view into the job database.

Every API process runs one; a leader lease in the database lets exactly one of them act
(an advisory lock on PostgreSQL, a lease row on SQLite), the others stand by and take over
when it dies. Each cycle (about a second) the leader:
1. dispatches: creates the flow run of every run request in the outbox (Prefect's
   idempotency key `<job>:<generation>`, so a dispatch repeated after a timeout makes no
   second run), and records its id; Prefect down or slow: the job stays `pending` saying so;
2. delivers what Prefect must still be told: cancels made while it was down, runs found dead;
3. reads the flow runs of all active jobs in one call, applies the lease rules (a Running
   run whose process stopped renewing the job's lease, a run Pending too long) and records
   what only Prefect saw: a run crashed, cancelled in the Prefect UI, or gone.
While Prefect is down it waits; reads never wait on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import StateType
from sqlalchemy import Connection, select, text

from api.orchestrator import (
    DeploymentMissing,
    Orchestrator,
    OrchestratorUnavailable,
    PrefectBusy,
)
from regjobs import catalogue, ledger, observe, translate
from regjobs.catalogue import JobStatus
from regjobs.db import get_engine, read_session, transaction
from regjobs.models import ControlLease, RegistrationJob, utcnow
from regjobs.settings import Settings
from regjobs.translate import DISAPPEARED, DISAPPEARED_MESSAGE, FlowRunSnapshot, RunState

logger = logging.getLogger("regjobs.reconciler")

ROLE = "reconciler"
#: A step running this long past its own timeout is stalled (its timeout did not end it).
STALL_GRACE_SECONDS = 60.0
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


#: A lone run request waits this long for company before it is dispatched: the first create
#: of a burst would otherwise start its flow run while the rest are still being answered.
LONE_SETTLE = 0.05


def settle_wait(count: int, newest: datetime | None, now: datetime, quiet: float) -> float:
    """Seconds the dispatcher waits for run requests to stop arriving: until a lone
    request is `LONE_SETTLE` old (at most `quiet`), else until the newest is `quiet`
    seconds old."""
    if newest is None or count == 0:
        return 0.0
    wait = min(LONE_SETTLE, quiet) if count < 2 else quiet
    return max(0.0, wait - (now - newest).total_seconds())


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

    def ring(self) -> None:
        """Wake the leader, wherever it runs (never blocks the caller for long)."""
        if self.postgres:
            if self._ringing.acquire(blocking=False):  # one ring at a time is enough
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


@dataclass
class Reconciler:
    settings: Settings
    orchestrator: Orchestrator
    holder: str = field(default_factory=holder_name)
    #: "leader" or "standby", for /healthz and the tests.
    role: str = "standby"
    #: Cycles this process ran as the leader.
    cycles: int = 0
    prefect_ok: bool = False
    deployment_ok: bool = False
    last_error: str | None = None
    #: Since when Prefect has counted more browser slots taken than live holders hold.
    _excess_since: datetime | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.lease = LeaderLease(self.settings, self.holder)
        self.doorbell = Doorbell(self.settings.sqlalchemy_url)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="reconciler", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Run the next cycle now: this process just committed something to dispatch or
        deliver (here if this process leads, else the leader's doorbell rings)."""
        if self.role == "leader":
            self._wake.set()
        else:
            self.doorbell.ring()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
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

    def _loop(self) -> None:
        backoff = self.settings.reconcile_seconds
        next_cycle = 0.0  # when the next full cycle is due (monotonic)
        while not self._stop.is_set():
            nudged = self._wake.wait(max(0.0, next_cycle - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            if nudged and self.role == "leader" and time.monotonic() < next_cycle:
                self._between_cycles()
                continue
            next_cycle = time.monotonic() + backoff
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
                continue
            if self.role != "leader":
                logger.info("reconciler: leading (%s)", self.holder)
            self.role = "leader"
            self.doorbell.listen(self._wake)
            if not self._guarded(self.cycle, "cycle"):
                # Prefect is down: wait longer before the next try, not for ever.
                backoff = min(5.0, 2 * self.settings.reconcile_seconds)
            self._report()
            next_cycle = time.monotonic() + backoff

    def _between_cycles(self) -> None:
        """A nudge between two cycles (the lease was renewed less than a cycle ago): hand
        new run requests and cancels to Prefect now; the rest waits for the cycle."""
        if not self.prefect_ok:
            return  # the next cycle finds out whether Prefect is back

        def hand_over() -> None:
            self.dispatch()
            self.deliver()

        self._guarded(hand_over, "dispatch")

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
            self._hold_dispatches(exc)
            raise
        self.dispatch()
        self.deliver()
        self.reconcile()
        self.heal_slots()
        self.find_stalls()
        self.prefect_ok = True
        self.last_error = None

    def _waiting(self, up_to: int | None = None) -> list[ledger.Dispatch]:
        with read_session() as session:
            return ledger.runs_to_dispatch(
                session=session, limit=self.settings.dispatch_batch, up_to=up_to
            )

    def _hold_dispatches(self, exc: OrchestratorUnavailable) -> None:
        """Every job waiting for its flow run says why it waits."""
        reason = f"{exc}; the job starts when Prefect answers"
        for run in self._waiting():
            transaction(ledger.record_dispatch_failure, run_id=run.run_id, reason=reason)

    def _settle(self) -> int | None:
        """While run requests are still arriving (more than one waits and the newest is
        younger than `dispatch_settle_seconds`), wait, at most a cycle: a burst of creates
        is answered before its flow runs are dispatched, since the dispatch's work, here and
        in Prefect, would otherwise share the cores with the requests still being answered.
        A lone request waits only `LONE_SETTLE`. Read from the database, so it sees the
        creates of every API process. The last request this saw: later ones wait for the
        next cycle (which a create's nudge starts at once), to settle in their turn."""
        quiet = self.settings.dispatch_settle_seconds
        deadline = time.monotonic() + self.settings.reconcile_seconds
        while True:
            with read_session() as session:
                count, newest, last = ledger.run_requests_waiting(session=session)
            left = settle_wait(count, newest, utcnow(), quiet)
            if left <= 0 or time.monotonic() + left > deadline or self._stop.wait(left):
                return last

    def dispatch(self) -> None:
        """Create the flow run of every waiting run request, oldest first, once requests
        have stopped arriving for a moment (`_settle`)."""
        last = self._settle()
        until = time.monotonic() + self.settings.reconcile_seconds
        for run in self._waiting(up_to=last) if last is not None else ():
            self._yield_to_creates(last, until)
            try:
                flow_run_id = self.orchestrator.create_flow_run(run)
            except OrchestratorUnavailable as exc:
                self._hold_dispatches(exc)
                raise
            transaction(ledger.record_dispatch, run_id=run.run_id, flow_run_id=flow_run_id)

    def _yield_to_creates(self, last: int | None, until: float) -> None:
        """While a new burst of creates arrives (a run request after `last`, the newest
        younger than `dispatch_settle_seconds`), wait until it settles, but not past
        `until`: its requests are answered first, as the burst before it was (`_settle`),
        and a steady stream of creates delays the dispatch by at most a cycle."""
        quiet = self.settings.dispatch_settle_seconds
        while (left := until - time.monotonic()) > 0:
            with read_session() as session:
                _, newest, latest = ledger.run_requests_waiting(session=session)
            if newest is None or latest == last:
                return
            wait = quiet - (utcnow() - newest).total_seconds()
            if wait <= 0 or self._stop.wait(min(wait, left)):
                return

    def deliver(self) -> None:
        """Tell Prefect the cancels and deaths it has not heard of yet."""
        with read_session() as session:
            pending = ledger.deliveries(session=session)
        for item in pending:
            if item.kind == "cancel":
                self.orchestrator.cancel(item.flow_run_id)
            else:
                self.orchestrator.mark_crashed(item.flow_run_id, item.message or "worker lost")
            transaction(ledger.record_delivered, run_id=item.run_id, kind=item.kind)

    def reconcile(self) -> None:
        """Read every active job's flow run at once and record what only Prefect saw."""
        with read_session() as session:
            jobs = list(
                session.scalars(
                    select(RegistrationJob).where(
                        RegistrationJob.status.in_(ledger.ACTIVE),
                        RegistrationJob.flow_run_id.is_not(None),
                    )
                )
            )
        if not jobs:
            return
        seen = self.orchestrator.read_flow_runs([j.flow_run_id for j in jobs if j.flow_run_id])
        now = utcnow()
        for job in jobs:
            flow_run_id = job.flow_run_id or ""
            snapshot = seen.get(flow_run_id) or FlowRunSnapshot(
                flow_run_id, RunState(StateType.CRASHED, DISAPPEARED, DISAPPEARED_MESSAGE, now), {}
            )
            self._reconcile_job(job, snapshot, now)

    def heal_slots(self) -> None:
        """Give back browser slots Prefect counts as taken but no live holder holds (their
        lease was lost with a Prefect server's memory, say), once that has lasted longer
        than a lease: a kept lease of a dead holder is freed by Prefect itself by then, so
        nothing is given back twice."""
        taken, _ = self.orchestrator.browser_slots()
        with read_session() as session:
            held = ledger.slots_held(session=session)
        now = utcnow()
        if taken <= held:
            self._excess_since = None
            return
        self._excess_since = self._excess_since or now
        if (now - self._excess_since).total_seconds() < self.settings.slot_leak_seconds:
            return
        logger.warning(
            "browser slots: Prefect counts %d taken, live holders hold %d; giving back %d",
            taken,
            held,
            taken - held,
        )
        self.orchestrator.give_back_slots(taken - held)
        self._excess_since = None

    def find_stalls(self) -> None:
        """Mark what runs or waits past its own limit, and tell Prefect (an event an
        automation can page someone on)."""
        now = utcnow()
        with read_session() as session:
            found = ledger.stalls(
                session=session,
                now=now,
                step_grace=STALL_GRACE_SECONDS,
                timeout_scale=self.settings.step_timeout_scale,
                queue_limit=self.settings.queue_stall_seconds,
            )
        for stall in found:
            marked = transaction(
                ledger.mark_stalled,
                job_id=stall.job_id,
                epoch=stall.epoch,
                step_ids=stall.step_ids,
                job_stalled=stall.job_waiting,
                since=now,
            )
            if not marked:
                continue
            what = ", ".join(stall.step_ids) or "its flow run to start"
            logger.warning("job %s is stalled: %s", stall.job_id, what)
            since = now.isoformat()
            for step_id in stall.step_ids:
                self.orchestrator.emit(
                    observe.step_event("stalled"),
                    resource=observe.step_resource(
                        stall.job_id, step_id, catalogue.step(step_id).label
                    ),
                    payload={"job_id": stall.job_id, "step_id": step_id, "since": since},
                )
            if not stall.step_ids:
                self.orchestrator.emit(
                    observe.job_event("stalled"),
                    resource=observe.job_resource(stall.job_id),
                    payload={"job_id": stall.job_id, "step_id": None, "since": since},
                )

    def _reconcile_job(self, job: RegistrationJob, snapshot: FlowRunSnapshot, now: Any) -> None:
        lease = self.settings.worker_lost_seconds
        effective = translate.lease_expired(job, snapshot, now, lease) or snapshot
        state = effective.state.type
        if state in (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED):
            queued = state in (StateType.SCHEDULED, StateType.PENDING)
            reason = ledger.QUEUED if queued else None
            if (job.flow_run_state, job.pending_reason) != (effective.state.name, reason):
                transaction(
                    ledger.note_flow_run,
                    job_id=job.id,
                    flow_run_id=snapshot.id,
                    state_name=effective.state.name,
                    queued=queued,
                )
            return
        with read_session() as session:
            fresh, rows = ledger.job_and_steps(session=session, job_id=job.id)
        if fresh.epoch != job.epoch or not JobStatus(fresh.status).is_active:
            return  # the flow (or a person) moved on since the list was read
        public = translate.job_public(fresh, rows, effective)
        if not JobStatus(public.status).is_final:
            return
        # Prefect still thinks the run alive (the lease ran out): tell it, so the UI agrees
        # and `prefect flow-run retry` accepts the run.
        alive_in_prefect = effective is not snapshot
        if effective.state.type is StateType.CRASHED and effective.state.name != DISAPPEARED:
            replaced = transaction(
                ledger.replace_unbegun_run,
                job_id=job.id,
                epoch=job.epoch,
                flow_run_id=snapshot.id,
                reason=public.error_message or "crashed",
                tell_prefect=public.error_message if alive_in_prefect else None,
            )
            if replaced:
                logger.info("job %s: flow run %s ended before it began; a new one was requested",
                            job.id, snapshot.id)  # fmt: skip
                return
        written = transaction(
            ledger.record_outcome,
            job_id=job.id,
            epoch=job.epoch,
            flow_run_id=snapshot.id,
            observed_at=snapshot.state.timestamp if not alive_in_prefect else None,
            public=public,
            tell_prefect=public.error_message if alive_in_prefect else None,
        )
        if written:
            logger.info(
                "job %s: recorded %s (%s)", job.id, public.status, public.error_message or ""
            )
            # The flow run could not say it (it crashed, was lost or deleted): say it here.
            with contextlib.suppress(OrchestratorUnavailable):
                self.orchestrator.emit(
                    observe.job_event(JobStatus(public.status).value),
                    resource=observe.job_resource(job.id),
                    payload={"job_id": job.id, "error": public.error_message},
                )
