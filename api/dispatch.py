"""The dispatcher: hands the outbox to Prefect.

Run requests become flow runs (Prefect's idempotency key `<job>:<generation>`, so a dispatch
repeated after a timeout makes no second run), round robin between organisations
(`ledger.runs_to_dispatch`), once creates have stopped arriving for a moment; cancels made
while Prefect was down and runs found dead are told to it. Prefect down or slow: every job
waiting for its flow run says so, and stays `pending`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from api.orchestrator import Orchestrator, OrchestratorUnavailable
from regjobs.db import read_session, transaction
from regjobs.ledger import outbox
from regjobs.settings import Settings

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


class Dispatcher:
    """The leader's hand-over to Prefect. `stop`: set when the reconciler stops (a wait
    ends at once); `now`: the clock."""

    def __init__(
        self,
        settings: Settings,
        orchestrator: Orchestrator,
        stop: threading.Event,
        now: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.orchestrator = orchestrator
        self._stop = stop
        self.now = now

    def waiting(self, up_to: int | None = None) -> list[outbox.Dispatch]:
        with read_session() as session:
            return outbox.runs_to_dispatch(
                session=session, limit=self.settings.dispatch_batch, up_to=up_to
            )

    def hold(self, exc: OrchestratorUnavailable) -> None:
        """Every job waiting for its flow run says why it waits."""
        reason = f"{exc}; the job starts when Prefect answers"
        for run in self.waiting():
            transaction(outbox.record_dispatch_failure, run_id=run.run_id, reason=reason)

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
                count, newest, last = outbox.run_requests_waiting(session=session)
            left = settle_wait(count, newest, self.now(), quiet)
            if left <= 0 or time.monotonic() + left > deadline or self._stop.wait(left):
                return last

    def dispatch(self) -> None:
        """Create the flow run of every waiting run request, round robin between
        organisations (`outbox.runs_to_dispatch`), once requests have stopped arriving for a
        moment (`_settle`)."""
        last = self._settle()
        for run in self.waiting(up_to=last) if last is not None else ():
            try:
                made = self.orchestrator.create_flow_run(run)
            except OrchestratorUnavailable as exc:
                self.hold(exc)
                raise
            transaction(
                outbox.record_dispatch, run_id=run.run_id, flow_run_id=made.id,
                scheduled_at=run.start_at, work_queue=made.work_queue,
            )  # fmt: skip

    def deliver(self) -> None:
        """Tell Prefect the cancels, deaths and resumes it has not heard of yet."""
        with read_session() as session:
            pending = outbox.deliveries(session=session)
        for item in pending:
            if item.kind == "cancel":
                self.orchestrator.cancel(item.flow_run_id, suspended=item.suspended)
            elif item.kind == "resume":
                if not self.orchestrator.resume(item.flow_run_id, item.version or 0):
                    continue  # not suspended yet: asked again at the next cycle
            elif item.kind == "fail":
                self.orchestrator.mark_failed(item.flow_run_id, item.message or "waited too long")
            else:
                self.orchestrator.mark_crashed(item.flow_run_id, item.message or "worker lost")
            transaction(outbox.record_delivered, run_id=item.run_id, kind=item.kind)
