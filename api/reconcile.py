"""What only Prefect saw, brought into the job database by the leader's cycle:
- every active job's flow run, read at once, with the lease rules applied
  (`translate.lease_expired`: a Running run whose process stopped renewing the job's lease,
  a run Pending too long): a run crashed, cancelled in the Prefect UI, or gone is recorded
  (`ledger.outcomes`), and a run that ended before it began its job is replaced;
- browser slots: the leases of holders found ended are freed, each by its id;
- stalls: what runs or waits past its own limit is marked and told to Prefect (an event).

Which Prefect state means what is `regjobs.translate`'s alone; this asks it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select

from api.orchestrator import Orchestrator, OrchestratorUnavailable
from regjobs import catalogue, observe, release, translate
from regjobs.catalogue import JobStatus
from regjobs.db import read_session, transaction
from regjobs.ledger import ACTIVE, QUEUED, outcomes, releases, slots
from regjobs.models import RegistrationJob
from regjobs.settings import Settings
from regjobs.translate import FlowRunSnapshot

logger = logging.getLogger("regjobs.reconciler")

#: A step running this long past its own timeout is stalled (its timeout did not end it).
STALL_GRACE_SECONDS = 60.0


class Reconciliation:
    """The leader's reading of Prefect. `now`: the clock."""

    def __init__(
        self, settings: Settings, orchestrator: Orchestrator, now: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self.now = now
        #: Since when Prefect has counted more browser slots taken than live holders hold.
        self._excess_since: datetime | None = None

    def reconcile(self) -> None:
        """Read every active job's flow run at once and record what only Prefect saw."""
        with read_session() as session:
            jobs = list(
                session.scalars(
                    select(RegistrationJob).where(
                        RegistrationJob.status.in_(ACTIVE),
                        RegistrationJob.flow_run_id.is_not(None),
                    )
                )
            )
        if not jobs:
            return
        seen = self.orchestrator.read_flow_runs([j.flow_run_id for j in jobs if j.flow_run_id])
        now = self.now()
        unserved = self._unserved(jobs, seen, now)
        for job in jobs:
            flow_run_id = job.flow_run_id or ""
            snapshot = seen.get(flow_run_id) or translate.missing_run(flow_run_id, now)
            self._reconcile_job(job, snapshot, now, unserved.get(job.id))

    def _unserved(
        self, jobs: list[RegistrationJob], seen: dict[str, FlowRunSnapshot], now: datetime
    ) -> dict[str, str]:
        """Why each job queued in Prefect on a release no live worker serves waits (its
        run's work queue not polled for `release_worker_gone_seconds`): one read of the
        pool's queues, only while some run is queued."""
        queued = [
            j.id
            for j in jobs
            if j.flow_run_id in seen and translate.is_queued(seen[j.flow_run_id].state)
        ]
        if not queued:
            return {}
        with read_session() as session:
            queues = releases.waiting_queues(session=session, job_ids=queued)
        polls = self.orchestrator.queue_polls()
        limit = self.settings.release_worker_gone_seconds
        found: dict[str, str] = {}
        for job_id, queue in queues.items():
            polled = polls.get(queue)
            age = (now - polled).total_seconds() if polled is not None else None
            if age is None or age > limit:
                found[job_id] = release.no_live_worker(job_id, queue, limit, age is not None)
        return found

    def _reconcile_job(
        self,
        job: RegistrationJob,
        snapshot: FlowRunSnapshot,
        now: datetime,
        unserved: str | None = None,
    ) -> None:
        lease = self.settings.worker_lost_seconds
        effective = translate.lease_expired(job, snapshot, now, lease) or snapshot
        if translate.is_live(effective.state):
            queued = translate.is_queued(effective.state)
            reason = (unserved or QUEUED) if queued else None
            if (job.flow_run_state, job.pending_reason) != (effective.state.name, reason):
                transaction(
                    outcomes.note_flow_run,
                    job_id=job.id,
                    flow_run_id=snapshot.id,
                    state_name=effective.state.name,
                    queued=queued,
                    queued_reason=unserved,
                )
            return
        with read_session() as session:
            fresh, rows = outcomes.job_and_steps(session=session, job_id=job.id)
        if fresh.epoch != job.epoch or not JobStatus(fresh.status).is_active:
            return  # the flow (or a person) moved on since the list was read
        public = translate.job_public(fresh, rows, effective)
        if not JobStatus(public.status).is_final:
            return
        # Prefect still thinks the run alive (the lease ran out): tell it, so the UI agrees
        # and `prefect flow-run retry` accepts the run.
        alive_in_prefect = effective is not snapshot
        if translate.is_crash(effective.state):
            replaced = transaction(
                outcomes.replace_unbegun_run,
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
            outcomes.record_outcome,
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

    def heal_slots(self) -> None:
        """Free, each by its id, the browser slots' leases of holders whose run the
        reconciler found ended (`record_outcome`: the process died, was lost or its run
        deleted), rather than wait for them to run out; never slots by count, which
        could free a live holder's. Prefect frees an expired lease itself too; freeing one
        twice frees nothing. Slots Prefect counts beyond what live holders hold for longer
        than a lease (a slot with no lease at all) are only reported: an operator frees
        them (README, "Browser slots")."""
        with read_session() as session:
            expired = slots.leases_to_free(session=session)
        for lease in expired:
            self.orchestrator.free_lease(lease.lease)
            transaction(
                slots.forget_lease, job_id=lease.job_id, step_id=lease.step_id, lease=lease.lease
            )
            logger.info(
                "browser slot of job %s, step %s: freed the lease %s of its ended run",
                lease.job_id, lease.step_id, lease.lease,
            )  # fmt: skip
        taken, _ = self.orchestrator.browser_slots()
        with read_session() as session:
            held = slots.slots_held(session=session)
        now = self.now()
        if taken <= held:
            self._excess_since = None
            return
        self._excess_since = self._excess_since or now
        if (now - self._excess_since).total_seconds() < self.settings.slot_leak_seconds:
            return
        logger.warning(
            "browser slots: Prefect counts %d taken, live holders hold %d, for over %.0f s; "
            "none is freed by count (it could be a live holder's)",
            taken,
            held,
            self.settings.slot_leak_seconds,
        )
        self._excess_since = None

    def expire_waits(self) -> None:
        """Fail the jobs that waited for a person's input past their limit
        (REGJOBS_INPUT_TIMEOUT): `fix_config`; their suspended runs are told by the outbox."""
        now = self.now()
        with read_session() as session:
            found = outcomes.expired_waits(session=session, now=now)
        for job_id, epoch in found:
            if transaction(outcomes.expire_wait, job_id=job_id, epoch=epoch, now=now):
                logger.warning("job %s waited for a person's input too long: failed", job_id)
                with contextlib.suppress(OrchestratorUnavailable):
                    self.orchestrator.emit(
                        observe.job_event(JobStatus.FAILED.value),
                        resource=observe.job_resource(job_id),
                        payload={"job_id": job_id, "error": "waited for input too long"},
                    )

    def find_stalls(self) -> None:
        """Mark what runs or waits past its own limit, and tell Prefect (an event an
        automation can page someone on)."""
        now = self.now()
        with read_session() as session:
            found = outcomes.stalls(
                session=session,
                now=now,
                step_grace=STALL_GRACE_SECONDS,
                timeout_scale=self.settings.step_timeout_scale,
                queue_limit=self.settings.queue_stall_seconds,
            )
        for stall in found:
            marked = transaction(
                outcomes.mark_stalled,
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
