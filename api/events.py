"""Server-Sent Events of a job, fed from the job database, so any API process serves any
job whichever process or machine changed it.

One watcher per API process looks every `sse_poll_seconds` at the versions of the jobs
someone here is subscribed to (one query, whatever the number of subscribers) and wakes the
subscribers of a job whose version moved; each subscriber then reads the events after the
last one it sent. A subscriber's position is the event id (the job's version at that
event), so a reconnect with `Last-Event-ID` resumes exactly there: nothing missed, nothing
repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from api import reads
from regjobs.catalogue import FINAL_JOB_STATUSES
from regjobs.settings import Settings

logger = logging.getLogger("regjobs.events")

FINAL = frozenset(s.value for s in FINAL_JOB_STATUSES)

#: What the stream yields besides events: time for a keep-alive comment.
KEEP_ALIVE = None


class EventHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self._versions: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _subscribe(self, job_id: str) -> asyncio.Event:
        signal = asyncio.Event()
        self._subscribers.setdefault(job_id, set()).add(signal)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="sse-watcher")
        self._wake.set()
        return signal

    def _unsubscribe(self, job_id: str, signal: asyncio.Event) -> None:
        subscribers = self._subscribers.get(job_id)
        if subscribers is None:
            return
        subscribers.discard(signal)
        if not subscribers:
            del self._subscribers[job_id]
            self._versions.pop(job_id, None)

    async def _watch(self) -> None:
        """Wake the subscribers of every job whose version moved."""
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
            try:
                now = await reads.run(reads.versions, list(self._subscribers))
            except Exception:
                logger.warning("reading job versions for the event streams failed", exc_info=True)
                now = {}
            for job_id, version in now.items():
                if self._versions.get(job_id) != version:
                    self._versions[job_id] = version
                    for signal in self._subscribers.get(job_id, ()):
                        signal.set()
            await asyncio.sleep(self.settings.sse_poll_seconds)

    async def stream(self, job_id: str, after: int) -> AsyncIterator[reads.Event | None]:
        """The job's events after `after`, as they happen, until its final event; None when
        a keep-alive comment is due."""
        signal = self._subscribe(job_id)
        try:
            while True:
                signal.clear()
                events, status = await reads.run(reads.events_after, job_id, after)
                for event in events:
                    yield event
                    after = event.seq
                if not events or len(events) < 500:
                    last = events[-1] if events else None
                    ended = status in FINAL and (last is None or _ends(last))
                    if ended:
                        return
                else:
                    continue  # a long backlog: read on at once
                try:
                    await asyncio.wait_for(
                        signal.wait(), timeout=self.settings.sse_keepalive_seconds
                    )
                except TimeoutError:
                    yield KEEP_ALIVE
        finally:
            self._unsubscribe(job_id, signal)


def _ends(event: reads.Event) -> bool:
    """The job's final event: a job event whose status is final."""
    return event.kind == "job" and json.loads(event.data).get("status") in FINAL
