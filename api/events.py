"""Server-Sent Events of a job, fed from the job database, so any API process serves any
job whichever process or machine changed it.

One watcher per API process looks every `sse_poll_seconds` at the versions of the jobs
someone here is subscribed to (one query, whatever the number of subscribers), reads the
new events of each job that moved once, and hands them to that job's subscribers. A
subscriber reads its own backlog from the database when it connects (after its
`Last-Event-ID`), and again whenever it sees a gap, so it sends every event once and in
order: an event's id is the job's version at that event.

A key holds at most `sse_streams_per_key` streams at once in a process (`claim`): one more
is refused (429), so one caller cannot take every connection the process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator

from api import reads
from regjobs.catalogue import FINAL_JOB_STATUSES
from regjobs.settings import Settings

logger = logging.getLogger("regjobs.events")

#: Events a subscriber may fall behind by before it reads them from the database instead.
QUEUE_LIMIT = 1000


class EventHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._subscribers: dict[str, set[asyncio.Queue[reads.Event | None]]] = {}
        #: The last event of each watched job this process has handed out.
        self._seen: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Open streams by API key (its SHA-256: no key is kept longer than its request).
        self._streams: Counter[bytes] = Counter()

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """A stream of `key`'s for as long as the block runs: True, or False when the key
        holds `sse_streams_per_key` already (and then nothing is held)."""
        digest = hashlib.sha256(key.encode()).digest()
        if self._streams[digest] >= self.settings.sse_streams_per_key:
            yield False
            return
        self._streams[digest] += 1
        try:
            yield True
        finally:
            self._streams[digest] -= 1
            if not self._streams[digest]:
                del self._streams[digest]

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _subscribe(self, job_id: str) -> asyncio.Queue[reads.Event | None]:
        queue: asyncio.Queue[reads.Event | None] = asyncio.Queue()
        self._subscribers.setdefault(job_id, set()).add(queue)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="sse-watcher")
        self._wake.set()
        return queue

    def _unsubscribe(self, job_id: str, queue: asyncio.Queue[reads.Event | None]) -> None:
        subscribers = self._subscribers.get(job_id)
        if subscribers is None:
            return
        subscribers.discard(queue)
        if not subscribers:
            del self._subscribers[job_id]
            self._seen.pop(job_id, None)

    async def _watch(self) -> None:
        failing = False
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
            try:
                await self._deliver()
                failing = False
            except Exception:
                if not failing:  # once per outage, not ten times a second
                    logger.warning("reading events for the event streams failed", exc_info=True)
                failing = True
            await asyncio.sleep(self.settings.sse_poll_seconds)

    async def _deliver(self) -> None:
        """Hand the new events of every job that moved to its subscribers."""
        versions = await reads.run(reads.versions, list(self._subscribers))
        for job_id, version in versions.items():
            seen = self._seen.setdefault(job_id, version)
            if version <= seen or job_id not in self._subscribers:
                continue
            events, _ = await reads.run(reads.events_after, job_id, seen)
            for event in events:
                self._seen[job_id] = event.seq
                for queue in self._subscribers.get(job_id, ()):
                    if queue.qsize() < QUEUE_LIMIT:
                        queue.put_nowait(event)
                    else:
                        queue.put_nowait(None)  # too far behind: read from the database

    async def stream(self, job_id: str, after: int) -> AsyncIterator[reads.Event | None]:
        """The job's events after `after`, as they happen, until its final event; None when
        a keep-alive comment is due."""
        queue = self._subscribe(job_id)
        last, ended, catch_up = after, False, True
        try:
            while True:
                if catch_up:
                    events, status = await reads.run(reads.events_after, job_id, last)
                    for event in events:
                        yield event
                        last, ended = event.seq, _ends(event)
                    if len(events) == reads.EVENTS_PAGE:
                        continue  # a long backlog: read on
                    if not events and status in FINAL_JOB_STATUSES:
                        ended = True  # the subscriber has the final event already
                    catch_up = False
                if ended and queue.empty():
                    return
                try:
                    item = await asyncio.wait_for(
                        queue.get(), timeout=self.settings.sse_keepalive_seconds
                    )
                except TimeoutError:
                    yield None
                    continue
                if item is None or item.seq > last + 1:
                    catch_up = True  # fell behind, or joined between two reads: re-read
                elif item.seq > last:
                    yield item
                    last, ended = item.seq, _ends(item)
        finally:
            self._unsubscribe(job_id, queue)


def _ends(event: reads.Event) -> bool:
    """The job's final event: a job event whose status is final."""
    return event.kind == "job" and json.loads(event.data).get("status") in FINAL_JOB_STATUSES
